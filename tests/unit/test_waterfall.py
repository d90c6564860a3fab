"""Rendering traces as text (sinks.waterfall): pure, no database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from sinks.trace_query import Page, Span, Trace, TraceSummary
from sinks.waterfall import (
    BLOCK,
    format_cost,
    format_duration,
    format_tokens,
    one_line,
    render_trace_list,
    render_waterfall,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def span(span_id: str, parent: str | None, start_ms: float, end_ms: float, **kw) -> Span:
    kw.setdefault("name", span_id)
    kw.setdefault("kind", "other")
    name, kind = kw.pop("name"), kw.pop("kind")
    return Span(span_id, parent, name, kind, T0 + start_ms * MS, T0 + end_ms * MS, **kw)


def trace(*spans: Span, summary: TraceSummary | None = None) -> Trace:
    return Trace("trace-1", summary, tuple(spans))


def body(text: str) -> list[str]:
    """The span lines and their detail lines (after the column header)."""
    lines = text.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("span ")) + 1:]


def head(text: str) -> str:
    """The header, unwrapped into one line."""
    lines = text.splitlines()
    return " · ".join(line.strip() for line in lines[: next(i for i, line in enumerate(lines) if line.startswith("span "))])


def names(text: str) -> list[str]:
    """The name column of every span line (detail lines have no bar)."""
    lines = text.splitlines()
    columns = next(line for line in lines if line.startswith("span "))
    width = len(columns) - len(columns[4:].lstrip()) - 1
    return [line[:width].rstrip() for line in body(text) if BLOCK in line]


def agent_trace() -> Trace:
    return trace(
        span("root", None, 0, 4200, name="support agent", kind="agent", status="ok",
             project="support-bot", user_id="u-42", agent_name="triage"),
        span("ret", "root", 10, 130, name="retrieve docs", kind="retrieval", status="ok",
             tool_name="pgvector", input="What is the refund policy\nfor annual plans?",
             output='[{"doc": "refunds.md", "score": 0.91}, {"doc": "billing.md", "score": 0.84}]'),
        span("plan", "root", 140, 1400, name="plan", kind="llm", status="ok",
             request_model="gpt-4o-mini", input_tokens=1843, output_tokens=212,
             cost_usd=Decimal("0.000403650"), input="You are a support agent.",
             output="Look up the plan first."),
        span("tool", "plan", 1410, 1410, name="lookup_plan", kind="tool", status="ok",
             tool_name="crm.lookup_plan"),
        span("ans", "root", 1500, 4150, name="answer", kind="llm", status="error",
             error_type="RateLimitError", status_message="429 Too Many\nRequests",
             request_model="gpt-4o", input_tokens=2100),
    )


# ------------------------------------------------------------------ golden


def test_full_output_at_width_100() -> None:
    assert render_waterfall(agent_trace(), width=100) == "\n".join([
        "trace trace-1 · project support-bot · user u-42 · 2024-05-01 12:00:00.000 UTC · 4.20 s · 5 spans",
        "  4,155 tokens · $0.000404 · ✗ error (1 of 5 spans) · no summary row (totals from spans)",
        "span              0               4.20 s  latency       tokens         cost status  model/tool",
        "support agent     ██████████████████████   4.20 s            -            - ok      triage",
        "├─ retrieve docs  █                        120 ms            -            - ok      pgvector",
        "│     in  What is the refund policy for annual plans?",
        '│     out [{"doc": "refunds.md", "score": 0.91}, {"doc": "billing.md"…',
        "├─ plan           ████████                 1.26 s    1,843/212    $0.000404 ok      gpt-4o-mini",
        "│  │  in  You are a support agent.",
        "│  │  out Look up the plan first.",
        "│  └─ lookup_plan        █                   0 ms            -            - ok      crm.lookup_plan",
        "└─ answer                ███████████████   2.65 s      2,100/-            - ✗ error gpt-4o",
        "      ✗ RateLimitError: 429 Too Many Requests",
    ])


# ------------------------------------------------------------------ tree


def test_children_sorted_by_start_time_whatever_the_input_order() -> None:
    spans = [span("r", None, 0, 100), span("c", "r", 50, 60), span("a", "r", 10, 20),
             span("b", "r", 30, 40)]
    a = render_waterfall(trace(*spans))
    b = render_waterfall(trace(*reversed(spans)))
    assert a == b
    assert names(a) == ["r", "├─ a", "├─ b", "└─ c"]


def test_orphans_at_top_level_marked_and_ordered_with_roots() -> None:
    out = render_waterfall(trace(
        span("late", "never-arrived", 50, 60),
        span("root", None, 0, 100),
        span("kid", "late", 52, 55),
        span("early", "gone", -10, 5),
    ))
    assert names(out) == ["early (orphan)", "root", "late (orphan)", "└─ kid"]


def test_orphan_mark_survives_a_narrow_name_column() -> None:
    out = render_waterfall(trace(span("x", "gone", 0, 1, name="a-very-long-span-name-" * 5)), width=60)
    assert "… (orphan)" in body(out)[0]


def test_parent_cycle_shows_every_span_once_and_terminates() -> None:
    out = render_waterfall(trace(span("a", "b", 0, 10), span("b", "a", 5, 10), span("c", "c", 1, 2)))
    # Bad data, shown rather than hidden: the loop is broken where it was entered.
    assert sorted(n.lstrip("└─ ") for n in names(out)) == ["a (orphan)", "b", "c (orphan)"]


def test_duplicate_span_ids_are_all_shown() -> None:
    out = render_waterfall(trace(span("r", None, 0, 10), span("x", "r", 1, 2), span("x", "r", 3, 4),
                                 span("y", "x", 5, 6)))
    assert len(body(out)) == 4


def test_deep_nesting_keeps_lines_bounded_and_shows_depth() -> None:
    depth = 300  # a runaway agent loop; recursion would fail, width would explode
    spans = [span("s0", None, 0, 1000)] + [
        span(f"s{i}", f"s{i - 1}", i, 1000 - i, name=f"level {i}") for i in range(1, depth)
    ]
    out = render_waterfall(trace(*spans), width=100)
    lines = body(out)
    assert len(lines) == depth
    assert max(len(line) for line in lines) <= 100
    assert lines[-1].startswith(f"[{depth - 1}]") and "level 299" in lines[-1]


# ------------------------------------------------------------------ bars


def test_single_span_fills_the_timeline() -> None:
    out = render_waterfall(trace(span("only", None, 0, 250, status="ok")), width=100)
    (line,) = body(out)
    assert BLOCK * 10 in line and " 250 ms " in line
    assert "· 1 span ·" in head(out)


def test_bars_are_positioned_by_start_and_duration() -> None:
    out = render_waterfall(trace(
        span("r", None, 0, 1000), span("first", "r", 0, 250), span("second", "r", 500, 1000),
    ), width=120)
    lines = body(out)
    start = lines[0].index(BLOCK)
    full = lines[0].count(BLOCK)
    # Cells partly covered count as covered, so lengths may round up by one.
    assert lines[1].index(BLOCK) == start and full / 4 <= lines[1].count(BLOCK) <= full / 4 + 1
    assert lines[2].index(BLOCK) == start + full // 2
    assert lines[2].index(BLOCK) + lines[2].count(BLOCK) == start + full


def test_zero_duration_spans_get_one_cell() -> None:
    out = render_waterfall(trace(span("r", None, 0, 1000), span("instant", "r", 1000, 1000)))
    assert body(out)[1].count(BLOCK) == 1 and " 0 ms " in body(out)[1]
    # Every span zero-length: the trace has no duration at all.
    out = render_waterfall(trace(span("a", None, 0, 0), span("b", "a", 0, 0)))
    assert [line.count(BLOCK) for line in body(out)] == [1, 1]
    assert " · 0 ms · " in head(out)


# ------------------------------------------------------------------ columns


def test_missing_tokens_and_cost_are_dashes() -> None:
    out = render_waterfall(trace(
        span("r", None, 0, 10), span("t", "r", 1, 2, input_tokens=5, cost_usd=Decimal(0)),
    ))
    root, child = body(out)
    assert re.search(r"10 ms +- +- unset", root)
    assert re.search(r"5/- +\$0 unset", child)
    assert " 5 tokens · $0 · unset" in head(out)


def test_error_line_with_type_and_collapsed_message_even_without_payloads() -> None:
    out = render_waterfall(agent_trace(), payloads=False)
    assert "✗ error gpt-4o" in out
    assert "✗ RateLimitError: 429 Too Many Requests" in out
    assert " in  " not in out and " out " not in out


def test_error_without_message() -> None:
    out = render_waterfall(trace(span("r", None, 0, 1, status="error")))
    assert body(out)[1].strip() == "✗ failed"


def test_payload_previews_are_one_short_line() -> None:
    text = "line one\n\nline two " + "x" * 200
    out = render_waterfall(trace(span("r", None, 0, 1, input=text, output="  \n  ")))
    (payload,) = [line for line in body(out) if "in  " in line]
    assert "line one line two" in payload and payload.endswith("…")
    assert len(payload.split("in  ", 1)[1]) == 60
    assert "out" not in "".join(body(out)[1:])  # whitespace-only output is skipped


def test_control_characters_are_escaped_not_sent_to_the_terminal() -> None:
    out = render_waterfall(trace(span("r", None, 0, 1, name="evil\x1b[2J", output="\x1b]0;pwn\x07")))
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J" in out


def test_color_only_adds_escape_codes() -> None:
    plain = render_waterfall(agent_trace(), color=False)
    colored = render_waterfall(agent_trace(), color=True)
    assert "\x1b[" not in plain and "\x1b[31m" in colored
    assert ANSI.sub("", colored) == plain


def test_summary_row_drives_the_header_when_present() -> None:
    summary = TraceSummary("trace-1", "proj", T0, T0 + 3000 * MS, "ok", root_span_id="r",
                           root_name="r", span_count=7, input_tokens=10, output_tokens=5,
                           cost_usd=Decimal("1.5"), user_id="u")
    out = render_waterfall(trace(span("r", None, 0, 1000), summary=summary))
    assert "project proj · user u" in head(out)
    assert "· 3.00 s · 7 spans · 15 tokens · $1.50 · ok" in head(out)
    assert "no summary row" not in out


def test_trace_without_spans() -> None:
    summary = TraceSummary("trace-1", "proj", T0, T0, "unset", span_count=2)
    out = render_waterfall(trace(summary=summary))
    assert out.splitlines()[-1] == "(no spans stored for this trace)"


@pytest.mark.parametrize("width", [80, 100, 120, 160, 200])
def test_span_lines_fit_the_width(width) -> None:
    lines = render_waterfall(agent_trace(), width=width).splitlines()
    assert max(len(line) for line in lines) <= width
    assert len(lines[0]) > width * 0.6  # the header is wrapped, not cut short


def test_output_is_deterministic() -> None:
    assert render_waterfall(agent_trace()) == render_waterfall(agent_trace())


# ------------------------------------------------------------------ formatting


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0 ms"), (-1, "0 ms"), (0.004, "0.00 ms"), (0.5, "0.50 ms"), (9.94, "9.9 ms"),
     (10, "10 ms"), (999.4, "999 ms"), (999.5, "1.00 s"), (1234, "1.23 s"), (9999, "10.0 s"),
     (59_960, "1m00s"), (61_000, "1m01s"), (3_600_000, "1h00m")],
)
def test_format_duration(ms, text) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("cost", "text"),
    [(None, "-"), (Decimal(0), "$0"), (Decimal("12.345"), "$12.35"), (Decimal("0.5"), "$0.50"),
     (Decimal("0.012345"), "$0.0123"), (Decimal("0.000001"), "$0.00000100"),
     (Decimal("0.000000001"), "$0.000000001"), (0.25, "$0.25")],
)
def test_format_cost(cost, text) -> None:
    assert format_cost(cost) == text


def test_format_tokens_and_one_line() -> None:
    assert format_tokens(1_000_000, 0) == "1,000,000/0"
    assert one_line(None) == "" and one_line("a\r\nb") == "a b"
    assert one_line("abc", limit=3) == "abc" and one_line("abcd", limit=3) == "ab…"


# ------------------------------------------------------------------ list


def test_trace_list_table() -> None:
    items = tuple(
        TraceSummary(f"{i:032x}", "support-bot" if i % 2 else "p", T0 - i * timedelta(minutes=1),
                     T0 - i * timedelta(minutes=1) + i * 700 * MS, "error" if i == 2 else "ok",
                     root_name=None if i == 3 else "agent run", span_count=i * 10,
                     error_count=int(i == 2), input_tokens=i * 1000, output_tokens=i,
                     cost_usd=Decimal("0.0012") * i, user_id=None if i == 1 else f"user-{i}")
        for i in range(1, 4)
    )
    lines = render_trace_list(Page(items, "cursor")).splitlines()
    assert lines[0].split("  ")[0] == "start (UTC)"
    assert lines[1].startswith("2024-05-01 11:59:00.000  00000000000000000000000000000001  support-bot  -")
    assert lines[2].endswith("✗ error") and " $0.00240 " in lines[2]
    assert " - " in lines[3]  # no root span yet
    # Columns line up: every row has the same position for the trace id and "spans".
    assert len({line.index(items[0].trace_id[:8]) for line in lines[1:]}) == 1
    assert len({len(line.rstrip("✗ error").rstrip("ok").rstrip()) for line in lines[1:]}) == 1
