"""Reading traces back with >= 1,000,000 spans stored: ``fetch_trace`` and ``list_traces``.

    python -m tests.bench.retrieval [--spans 1000000] [--samples 300] [--reload]

In the database ``llmpulse_bench`` on the ``DATABASE_URL`` server (created
and migrated if missing) it bulk-loads seeded, realistic traces with COPY:
30 % are 50-span agent runs, the rest 2-12 spans; six projects of very
different sizes, thousands of users (some anonymous), payloads of 200-500
characters, ~1.5 % failed spans. Each COPY batch of whole traces is followed,
in the same transaction, by ``llmpulse_refresh_traces`` for its traces, as
the trace-store worker does. Then ``VACUUM ANALYZE`` and, warm:

- ``fetch_trace`` of random 50-span traces (the target: p95 <= 20 ms);
- ``llmpulse_trace_spans`` (the Grafana panel's query) of the same traces;
- ``list_traces`` of the largest project: the first page, and 200 following
  pages by cursor.

The data is reused when the database already holds the requested size (the
generator is seeded, so the same size means the same rows). Results go to
``docs/benchmarks/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sinks.dburl import DEFAULT_DATABASE_URL, mask_password
from sinks.migrate import migrate
from sinks.trace_query import fetch_trace, list_traces
from sinks.waterfall import render_waterfall

OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "retrieval.json"
DATABASE = "llmpulse_bench"
TARGET_P95_MS = 20.0
SEED = 20240501
#: The newest trace starts just before this; the data covers the 30 days before.
END = datetime(2024, 6, 1, tzinfo=UTC)
DAYS = 30
#: Traces per COPY batch (~20,000 spans, ~15 MB): big enough that per-batch
#: overhead vanishes, small enough to show progress and keep transactions short.
BATCH_TRACES = 1000

PROJECTS = (("support-bot", 45), ("code-assistant", 25), ("search", 12), ("sales-agent", 10),
            ("docs-qa", 5), ("internal-eval", 3))
MODELS = (("openai", "gpt-4o-mini", 0.15, 0.60), ("openai", "gpt-4o", 2.50, 10.0),
          ("anthropic", "claude-3-5-sonnet", 3.0, 15.0), ("anthropic", "claude-3-5-haiku", 0.8, 4.0))
TOOLS = ("web.search", "crm.lookup", "sql.query", "calendar.book", "python.run", "jira.create")
KINDS = (("llm", 40), ("tool", 30), ("retrieval", 15), ("chain", 10), ("embedding", 5))
WORDS = (
    "the customer asked about refund policy annual plan invoice billing cycle upgrade downgrade "
    "account settings password reset integration api key webhook latency error timeout retry "
    "document section summary answer context question please explain detail example order "
    "shipping delivery status tracking number warranty return window support ticket escalate "
    "agent tool call result json field value list table query database index performance"
).split()

COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "status",
    "status_message", "error_type", "project", "user_id", "session_id", "operation", "provider",
    "request_model", "response_model", "tool_name", "agent_name", "input_tokens", "output_tokens",
    "cost_usd", "input", "output",
)
NULL = "\\N"


# ------------------------------------------------------------------ helpers


def copy_text(value: str) -> str:
    r"""Escape a value for COPY's text format.

    >>> copy_text("a\tb\\c\nd")
    'a\\tb\\\\c\\nd'
    """
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99, mean and max of millisecond samples, rounded to 0.001 ms.

    >>> percentiles([float(x) for x in range(1, 101)])
    {'samples': 100, 'p50': 50.5, 'p95': 95.05, 'p99': 99.01, 'mean': 50.5, 'max': 100.0}
    """
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "samples": len(samples),
        "p50": round(q[49], 3),
        "p95": round(q[94], 3),
        "p99": round(q[98], 3),
        "mean": round(statistics.fmean(samples), 3),
        "max": round(max(samples), 3),
    }


def trace_sizes(total_spans: int, seed: int = SEED) -> list[int]:
    """Span counts of the traces that make up exactly ``total_spans`` spans.

    30 % agent runs of 50 spans, the rest 2-12 spans; the last trace is cut
    to hit the total.

    >>> sizes = trace_sizes(10_000)
    >>> sum(sizes), sizes.count(50) > 50, min(sizes) >= 1
    (10000, True, True)
    """
    rng = random.Random(seed)
    sizes: list[int] = []
    left = total_spans
    while left > 0:
        size = 50 if rng.random() < 0.3 else rng.randint(2, 12)
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes


def bench_conninfo(server_url: str, dbname: str = DATABASE) -> str:
    """The same server, another database.

    >>> bench_conninfo("postgresql://u@h:5432/app")
    'user=u dbname=llmpulse_bench host=h port=5432'
    """
    params = conninfo_to_dict(server_url)
    params["dbname"] = dbname
    return make_conninfo(**params)


# ------------------------------------------------------------------ data


class Generator:
    """Seeded span rows in COPY text format, one trace at a time."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        # Payload pool: generating fresh text per span would make Python, not
        # PostgreSQL, the bottleneck; 4,000 distinct texts defeat compression
        # tricks well enough for TOAST and page sizes to be realistic.
        self.texts = [copy_text(self._text(rng.randint(200, 500))) for _ in range(4000)]
        self.users = [f"user-{i:05d}" for i in range(5000)]
        self.projects = [p for p, _ in PROJECTS]
        self.project_weights = [w for _, w in PROJECTS]
        self.kinds = [k for k, _ in KINDS]
        self.kind_weights = [w for _, w in KINDS]

    def _text(self, length: int) -> str:
        rng = self.rng
        words: list[str] = []
        size = 0
        while size < length:
            word = rng.choice(WORDS)
            if rng.random() < 0.04:
                word += ".\n"
            words.append(word)
            size += len(word) + 1
        return " ".join(words)[:length]

    def _payload(self) -> str:
        return self.texts[self.rng.randrange(len(self.texts))]

    def trace(self, size: int, start: datetime) -> Iterator[str]:
        """COPY lines of one trace of ``size`` spans starting at ``start``."""
        rng = self.rng
        trace_id = f"{rng.getrandbits(128):032x}"
        project = rng.choices(self.projects, self.project_weights)[0]
        user = None if rng.random() < 0.15 else self.users[int(rng.paretovariate(1.2) * 7) % 5000]
        session = None if user is None else f"sess-{rng.getrandbits(40):010x}"
        model = MODELS[rng.randrange(len(MODELS))]

        # Tree: each new span hangs off a recent container (the root, or a
        # chain step), which gives agent-like depth of 2-6.
        kinds = ["agent" if size >= 20 else "chain" if size > 1 else "llm"]
        parents: list[int | None] = [None]
        containers = [0]
        for i in range(1, size):
            parent = containers[-1] if rng.random() < 0.7 else rng.choice(containers)
            kind = rng.choices(self.kinds, self.kind_weights)[0]
            kinds.append(kind)
            parents.append(parent)
            if kind == "chain":
                containers.append(i)
        children: list[list[int]] = [[] for _ in range(size)]
        for i in range(1, size):
            children[parents[i]].append(i)  # type: ignore[index]

        # Timing: leaves get a latency by kind; a container runs its children
        # one after the other. Post-order without recursion.
        dur = [0.0] * size
        for i in reversed(range(size)):
            if children[i]:
                dur[i] = sum(dur[c] for c in children[i]) + 2.0 * (len(children[i]) + 1)
            else:
                k = kinds[i]
                if k == "llm":
                    dur[i] = rng.lognormvariate(6.8, 0.6)  # ~900 ms median
                elif k == "tool":
                    dur[i] = rng.lognormvariate(4.5, 1.0)
                elif k == "retrieval":
                    dur[i] = rng.lognormvariate(4.0, 0.5)
                else:
                    dur[i] = rng.lognormvariate(3.0, 0.5)
        offset = [0.0] * size
        for i in range(size):
            t = offset[i] + 2.0
            for c in children[i]:
                offset[c] = t
                t += dur[c] + 2.0

        span_ids = [f"{rng.getrandbits(64):016x}" for _ in range(size)]
        base = start.timestamp()
        for i in range(size):
            kind = kinds[i]
            begin = datetime.fromtimestamp(base + offset[i] / 1000, UTC)
            end = datetime.fromtimestamp(base + (offset[i] + dur[i]) / 1000, UTC)
            failed = kind in ("llm", "tool") and rng.random() < 0.015
            provider = request_model = response_model = tool = agent = NULL
            in_tok = out_tok = cost = NULL
            operation = NULL
            if kind == "llm":
                provider, request_model, price_in, price_out = model
                response_model = request_model
                operation = "chat"
                n_in, n_out = rng.randint(200, 4000), 0 if failed else rng.randint(20, 800)
                in_tok, out_tok = str(n_in), str(n_out)
                cost = f"{(n_in * price_in + n_out * price_out) / 1e6:.9f}"
                name = "chat " + request_model
            elif kind == "embedding":
                provider, request_model, operation = "openai", "text-embedding-3-small", "embeddings"
                n_in = rng.randint(50, 600)
                in_tok, cost = str(n_in), f"{n_in * 0.02 / 1e6:.9f}"
                name = "embed query"
            elif kind == "tool":
                tool = TOOLS[rng.randrange(len(TOOLS))]
                operation, name = "execute_tool", tool
            elif kind == "retrieval":
                tool, name = "pgvector", "retrieve documents"
            elif kind == "agent":
                agent, operation, name = project, "invoke_agent", f"{project} agent"
            else:
                name = f"step {i}"
            yield "\t".join((
                trace_id,
                span_ids[i],
                NULL if parents[i] is None else span_ids[parents[i]],  # type: ignore[index]
                name,
                kind,
                begin.isoformat(),
                end.isoformat(),
                "error" if failed else "ok",
                "429 Too Many Requests: rate limit reached" if failed and kind == "llm"
                else "timeout after 30 s" if failed else NULL,
                ("RateLimitError" if kind == "llm" else "TimeoutError") if failed else NULL,
                project,
                user or NULL,
                session or NULL,
                operation,
                provider,
                request_model,
                response_model,
                tool,
                agent,
                in_tok,
                out_tok,
                cost,
                self._payload(),
                NULL if failed else self._payload(),
            )) + "\n"


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(f"\r  loaded {done:>10,} / {total:,} spans  ({rate:,.0f} spans/s)", end="", flush=True)


def _batches(total_spans: int) -> Iterator[tuple[list[str], list[str]]]:
    """(COPY lines, trace ids) per batch of BATCH_TRACES whole traces."""
    sizes = trace_sizes(total_spans)
    gen = Generator()
    # Newest trace at END, evenly spread over DAYS with jitter, in time order
    # as a stream would write them.
    step = DAYS * 86400 / len(sizes)
    t0 = END - timedelta(days=DAYS)
    for first in range(0, len(sizes), BATCH_TRACES):
        lines: list[str] = []
        for n, size in enumerate(sizes[first:first + BATCH_TRACES], start=first):
            lines.extend(gen.trace(size, t0 + timedelta(seconds=(n + gen.rng.random()) * step)))
        yield lines, sorted({line[:32] for line in lines})


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run a generator in a thread, ``depth`` items ahead.

    The generator is pure Python and the consumer mostly waits on the
    socket (which releases the GIL), so on two cores building the next
    batch overlaps PostgreSQL inserting the current one.
    """
    done = object()
    buffer: queue.Queue = queue.Queue(maxsize=depth)

    def run() -> None:
        try:
            for item in items:
                buffer.put(item)
        except BaseException as e:  # re-raised in the consumer
            buffer.put(e)
        buffer.put(done)

    threading.Thread(target=run, daemon=True).start()
    while (item := buffer.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def load(conn: psycopg.Connection, total_spans: int) -> dict[str, float]:
    """Empty the tables and load ``total_spans`` spans with their summaries."""
    conn.execute("TRUNCATE spans, traces")
    copy_sql = f"COPY spans ({', '.join(COLUMNS)}) FROM STDIN"
    started = time.perf_counter()
    refresh_s = 0.0
    done = 0
    for lines, trace_ids in _prefetch(_batches(total_spans)):
        # One transaction per batch, COPY then summaries, as the trace-store
        # worker writes: a batch is never visible without its summaries.
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(copy_sql) as copy:
                copy.write("".join(lines))
            r0 = time.perf_counter()
            cur.execute("SELECT llmpulse_refresh_traces(%s)", (trace_ids,))
            refresh_s += time.perf_counter() - r0
        done += len(lines)
        _progress(done, total_spans, started)
    load_s = time.perf_counter() - started
    print()
    v0 = time.perf_counter()
    conn.execute("VACUUM ANALYZE spans")
    conn.execute("VACUUM ANALYZE traces")
    vacuum_s = time.perf_counter() - v0
    return {
        "seconds": round(load_s, 1),
        "spans_per_second": round(total_spans / load_s),
        "of_which_refresh_traces_seconds": round(refresh_s, 1),
        "vacuum_analyze_seconds": round(vacuum_s, 1),
        "batch_traces": BATCH_TRACES,
    }


# ------------------------------------------------------------------ measure


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def measure(conn: psycopg.Connection, samples: int, seed: int = SEED) -> dict[str, object]:
    rng = random.Random(seed)
    ids = [r[0] for r in conn.execute("SELECT trace_id FROM traces WHERE span_count = 50")]
    chosen = rng.sample(ids, min(samples, len(ids)))
    # The first pass warms shared_buffers and the plans (psycopg prepares a
    # statement after 5 runs). It is reported too: those pages mostly come
    # from the OS page cache, not from disk, so it is "lukewarm", not cold.
    first_ms = []
    for trace_id in chosen:
        first_ms.append(_timed(lambda: fetch_trace(conn, trace_id)))
        conn.execute("SELECT * FROM llmpulse_trace_spans(%s)", (trace_id,)).fetchall()

    fetch_ms, render_ms, grafana_ms = [], [], []
    for trace_id in chosen:
        t = time.perf_counter()
        trace = fetch_trace(conn, trace_id)
        fetch_ms.append((time.perf_counter() - t) * 1000)
        assert trace is not None and len(trace.spans) == 50, trace_id
        render_ms.append(_timed(lambda: render_waterfall(trace, width=120)))
        grafana_ms.append(_timed(
            lambda: conn.execute("SELECT * FROM llmpulse_trace_spans(%s)", (trace_id,)).fetchall()
        ))

    project = PROJECTS[0][0]
    newest = conn.execute("SELECT max(start_time) FROM traces").fetchone()[0]
    since, until = newest - timedelta(days=7), newest + timedelta(seconds=1)

    def first_page():
        return list_traces(conn, project=project, since=since, until=until, limit=50)

    for _ in range(20):
        first_page()
    page_ms = [_timed(first_page) for _ in range(200)]
    next_ms, cursor, pages = [], first_page().next_cursor, 0
    while cursor and pages < 200:
        t = time.perf_counter()
        page = list_traces(conn, project=project, since=since, until=until, limit=50, cursor=cursor)
        next_ms.append((time.perf_counter() - t) * 1000)
        cursor, pages = page.next_cursor, pages + 1

    return {
        "fetch_trace_50_spans_ms": percentiles(fetch_ms),
        "fetch_trace_50_spans_first_access_ms": percentiles(first_ms),
        "render_waterfall_50_spans_ms": percentiles(render_ms),
        "grafana_llmpulse_trace_spans_50_spans_ms": percentiles(grafana_ms),
        "list_traces_ms": {
            "query": f"project={project!r}, 7-day window, limit 50",
            "first_page": percentiles(page_ms),
            "next_pages_by_cursor": percentiles(next_ms) if len(next_ms) >= 2 else None,
        },
    }


# ------------------------------------------------------------------ main


def _ensure_database(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
            print(f"Created database {DATABASE}")
    url = bench_conninfo(server_url)
    migrate(url)
    return url


def _dataset(conn: psycopg.Connection) -> dict[str, object]:
    spans, traces, fifty, mb_spans, mb_traces = conn.execute(
        """SELECT (SELECT count(*) FROM spans), count(*), count(*) FILTER (WHERE span_count = 50),
                  pg_total_relation_size('spans') / 1048576, pg_total_relation_size('traces') / 1048576
           FROM traces"""
    ).fetchone()
    return {"spans": spans, "traces": traces, "traces_with_50_spans": fifty,
            "spans_total_size_mb": mb_spans, "traces_total_size_mb": mb_traces,
            "projects": len(PROJECTS)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to store (default 1,000,000)")
    parser.add_argument("--samples", type=int, default=300, help="50-span traces to fetch (default 300)")
    parser.add_argument("--reload", action="store_true", help="load again even if the size matches")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="server to use; the benchmark works in its own database " + DATABASE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    url = _ensure_database(args.database_url)
    print(f"Database: {mask_password(url)}")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    expected_traces = len(trace_sizes(args.spans))
    with psycopg.connect(url, autocommit=True) as conn:
        have = _dataset(conn)
        if not args.reload and (have["spans"], have["traces"]) == (args.spans, expected_traces):
            print(f"Reusing the {args.spans:,} spans already loaded")
            load_info = dict(previous.get("load") or {}) if previous.get("dataset", {}).get("spans") == args.spans else {}
            load_info["reused"] = True
        else:
            print(f"Loading {args.spans:,} spans in {expected_traces:,} traces with COPY")
            load_info = {**load(conn, args.spans), "reused": False}
            print(f"  {load_info['seconds']} s ({load_info['spans_per_second']:,} spans/s), "
                  f"of which trace summaries {load_info['of_which_refresh_traces_seconds']} s; "
                  f"VACUUM ANALYZE {load_info['vacuum_analyze_seconds']} s")
        dataset = _dataset(conn)
        version = conn.execute("SHOW server_version").fetchone()[0]
        timescale = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
        print(f"Measuring ({args.samples} random 50-span traces, warm)")
        results = measure(conn, args.samples)

    fetch = results["fetch_trace_50_spans_ms"]
    report = {
        "benchmark": "trace retrieval",
        "command": "python -m tests.bench.retrieval --spans " + str(args.spans),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {
            "postgresql": version,
            "backend": "TimescaleDB" if timescale else "plain PostgreSQL",
            "shared_buffers": shared_buffers,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "client": "same host, TCP",
        },
        "dataset": dataset,
        "load": load_info,
        **results,
        "target": {"fetch_trace_p95_ms": TARGET_P95_MS, "met": fetch["p95"] <= TARGET_P95_MS},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    page = results["list_traces_ms"]
    print(
        f"retrieval: {dataset['spans']:,} spans / {dataset['traces']:,} traces; "
        f"fetch_trace(50 spans) p50 {fetch['p50']:.2f} p95 {fetch['p95']:.2f} p99 {fetch['p99']:.2f} ms "
        f"(target p95 <= {TARGET_P95_MS:g} ms: {'met' if report['target']['met'] else 'MISSED'}); "
        f"list_traces page p95 {page['first_page']['p95']:.2f} ms -> {args.out}"
    )
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["target"]["met"] else 1)
