"""In-process cost per span of the plain logic on the hot path (one core).

    python -m tests.bench.logic

Codec (Avro and JSON, both ways), PII masking, cost, the whole ingest
``process`` call (with cohort tagging against a profile per user and one
running experiment, as in production), and the metrics processor's
``process`` (decode + windowed aggregation), on generated realistic spans. Results go to
``docs/benchmarks/logic.json``.
"""
from __future__ import annotations

import json
import time
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processors.cohorts import CohortConfig, CohortTagger
from processors.enrich import Enricher
from processors.experiments import prompt_ab

from processors.deadletter import SourceMessage
from processors.generator import TrafficModel
from processors.ingest import IngestProcessor
from processors.metrics_processor import MetricsProcessor
from processors.pii import PiiMasker
from processors.pricing import PriceTable
from schemas.codec import decode, encode, encode_json

OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "logic.json"


def per_second(fn, items: list, repeat: int = 3) -> float:
    """Best-of-``repeat`` items per second of ``fn`` over ``items``."""
    best = min(timeit.repeat(lambda: [fn(x) for x in items], number=1, repeat=repeat))
    return len(items) / best


def main() -> dict:
    # An hour ago, so no span is "from the future" for the metrics processor.
    start = datetime.now(UTC) - timedelta(hours=1)
    spans = [s for trace in TrafficModel(seed=7, start=start).traces(2000) for s in trace][:20_000]
    avro = [encode("span", s) for s in spans]
    js = [encode_json("span", s) for s in spans]
    masker, prices = PiiMasker(), PriceTable.load()
    profiles = {s["user_id"]: {"user_id": s["user_id"], "plan": "pro", "country": "DE", "updated_at": start}
                for s in spans if s.get("user_id")}
    enricher = Enricher(CohortTagger(CohortConfig.load()), profiles.get)
    enricher.set_experiment("bench", prompt_ab("bench", "ml@example.com", "v1", "v2", status="running"))
    ingest = IngestProcessor(prices, masker, enricher=enricher)
    messages = [SourceMessage("llm.spans", 0, i, None, v) for i, v in enumerate(avro)]
    # In end-time order, as spans reach the metrics processor.
    by_end = sorted(spans, key=lambda s: s["end_time"])
    enriched = [SourceMessage("llm.spans.enriched", i % 3, i, None, encode("span", s)) for i, s in enumerate(by_end)]
    result = {
        "spans": len(spans),
        "decode_avro_per_s": per_second(lambda b: decode(b, "span"), avro),
        "decode_json_per_s": per_second(lambda b: decode(b, "span"), js),
        "encode_avro_per_s": per_second(lambda s: encode("span", s), spans),
        "mask_pii_per_s": per_second(masker.mask_span, spans),
        "cost_per_s": per_second(prices.cost_of, spans),
        "ingest_process_per_s": per_second(ingest.process, messages),
        "metrics_process_per_s": per_second(MetricsProcessor().process, enriched),
        "date": time.strftime("%Y-%m-%d"),
    }
    result = {k: (round(v) if isinstance(v, float) else v) for k, v in result.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
