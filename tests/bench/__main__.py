"""``make bench``: every benchmark, results in docs/benchmarks/*.json."""
from __future__ import annotations

from tests.bench import anomaly_cost, freshness, logic, nab, pipeline, retrieval


def main() -> None:
    print("== plain logic, in process ==", flush=True)
    logic.main()
    print("== workers through Kafka and PostgreSQL ==", flush=True)
    pipeline.main([])
    print("== end-to-end freshness at 5,000 spans/s ==", flush=True)
    freshness.main([])
    print("== trace retrieval with >= 1,000,000 spans stored ==", flush=True)
    retrieval.main([])
    print("== anomaly detection: NAB corpus and the LLM incident suite ==", flush=True)
    nab.main([])
    print("== anomaly processor: cost per metric point ==", flush=True)
    anomaly_cost.main([])


if __name__ == "__main__":
    main()
