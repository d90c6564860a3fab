"""Render traces as text: a waterfall of one trace, a table of many.

Pure functions over the dataclasses of :mod:`sinks.trace_query`; no database,
no terminal queries, so the output is the same everywhere and doctests can
pin it. Colour is opt-in ANSI and never changes the layout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sinks.trace_query import Page, Span, Trace

__all__ = [
    "format_cost",
    "format_duration",
    "format_tokens",
    "one_line",
    "render_trace_list",
    "render_waterfall",
]

BLOCK = "█"
ERROR_MARK = "✗"
_ORPHAN = " (orphan)"
#: Payload previews are cut here: enough to recognise a prompt, short enough
#: that one span stays one line in a 100-column terminal.
PAYLOAD_CHARS = 60

# Fixed column widths of the waterfall (the name and bar columns share the rest).
_LATENCY_W = 8  # "12.35 s", "0.42 ms", "1m05s"
_TOKENS_W = 12  # "12,345/6,789"
_COST_W = 12  # "$0.000123", "$12.50", "$0.000000480"
_STATUS_W = 7  # "✗ error"
_MODEL_MAX = 24

_RESET = "\x1b[0m"
_STYLES = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
}
_KIND_STYLE = {
    "llm": "cyan",
    "tool": "yellow",
    "retrieval": "green",
    "embedding": "green",
    "agent": "blue",
    "chain": "blue",
}
# C0/C1 control characters other than whitespace: an LLM output or a span
# name could carry terminal escape sequences; print them escaped, not raw.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------- formatting


def format_duration(ms: float) -> str:
    """Humanise a latency in milliseconds.

    Examples
    --------
    >>> [format_duration(x) for x in (0, 0.42, 4.25, 120, 999.7, 2345, 65_000, 7_260_000)]
    ['0 ms', '0.42 ms', '4.2 ms', '120 ms', '1.00 s', '2.35 s', '1m05s', '2h01m']
    """
    if ms <= 0:
        return "0 ms"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 10:
        return f"{ms:.1f} ms"
    if round(ms) < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if round(seconds, 2) < 10:
        return f"{seconds:.2f} s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_tokens(input_tokens: int | None, output_tokens: int | None) -> str:
    """``in/out`` token counts; ``-`` for a count the span does not have.

    Examples
    --------
    >>> format_tokens(1234, 56), format_tokens(None, None), format_tokens(None, 7)
    ('1,234/56', '-', '-/7')
    """
    if input_tokens is None and output_tokens is None:
        return "-"
    side = lambda n: "-" if n is None else f"{n:,}"  # noqa: E731
    return f"{side(input_tokens)}/{side(output_tokens)}"


def format_cost(cost: Decimal | float | None) -> str:
    """Dollars: cents from $0.10 up, else three significant digits (up to 9 decimals).

    Per-span costs are often fractions of a cent; a fixed two decimals would
    print ``$0.00`` for most of them.

    Examples
    --------
    >>> [format_cost(c) for c in (None, 0, Decimal("1.5"), Decimal("0.0421"), Decimal("0.000123456"))]
    ['-', '$0', '$1.50', '$0.0421', '$0.000123']
    >>> format_cost(Decimal("0.000000450"))
    '$0.000000450'
    """
    if cost is None:
        return "-"
    value = Decimal(str(cost)) if not isinstance(cost, Decimal) else cost
    if value == 0:
        return "$0"
    # Cents from ten cents up; below that, three significant digits.
    decimals = 2 if value.adjusted() >= -1 else min(9, 2 - value.adjusted())
    return "$" + format(value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP), "f")


def one_line(text: str | None, limit: int = PAYLOAD_CHARS) -> str:
    """Collapse whitespace (newlines too), escape control characters, cut to ``limit``.

    Examples
    --------
    >>> one_line("Hello\\n\\n  world\\t!")
    'Hello world !'
    >>> one_line("x" * 80, limit=10)
    'xxxxxxxxx…'
    >>> one_line("\\x1b[31mred")
    '\\\\x1b[31mred'
    """
    if not text:
        return ""
    flat = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)] + "…"


def _fit(text: str, width: int) -> str:
    """Cut to ``width`` with an ellipsis, then pad with spaces."""
    if len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return text.ljust(width)


def _time(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _paint(text: str, style: str | None, color: bool) -> str:
    if not color or not style or not text:
        return text
    return "".join(_STYLES[s] for s in style.split()) + text + _RESET


def _status(status: str) -> str:
    return f"{ERROR_MARK} error" if status == "error" else status


# -------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class _Row:
    span: Span
    lead: str  # tree drawing before the name: "│  ├─ "
    detail: str  # tree drawing before the payload/error lines under it
    orphan: bool


def _walk(spans: tuple[Span, ...]) -> Iterator[_Row]:
    """Depth-first rows: roots and orphans at the top, children by start time.

    Iterative, with a visited set, so deep traces cannot hit the recursion
    limit and a parent cycle (bad data) cannot loop: spans never reached from
    a top-level span are shown at the top as orphans at the end.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start_time, spans[i].span_id))
    ids = {s.span_id for s in spans}
    children: dict[str, list[int]] = {}
    top: list[int] = []
    for i in order:
        parent = spans[i].parent_span_id
        if parent is None or parent not in ids or parent == spans[i].span_id:
            top.append(i)
        else:
            children.setdefault(parent, []).append(i)
    seen: set[int] = set()
    taken: set[str] = set()  # a duplicated span_id lists its children only once

    def kids(i: int) -> list[int]:
        span_id = spans[i].span_id
        if span_id in taken:
            return []
        taken.add(span_id)
        return [k for k in children.get(span_id, []) if k not in seen]

    def visit(i: int) -> Iterator[_Row]:
        # (index, lead, continuation-prefix-for-children)
        stack = [(i, "", "")]
        while stack:
            j, lead, cont = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            sub = kids(j)
            span = spans[j]
            orphan = not lead and span.parent_span_id is not None
            yield _Row(span, lead, cont + ("│  " if sub else "   "), orphan)
            for n, k in reversed(list(enumerate(sub))):
                last = n == len(sub) - 1
                stack.append((k, cont + ("└─ " if last else "├─ "), cont + ("   " if last else "│  ")))

    for i in top:
        yield from visit(i)
    for i in order:  # cycles: never reachable from a top-level span
        if i not in seen:
            yield from visit(i)


def _squeeze(prefix: str, limit: int) -> str:
    """Keep the innermost levels of a very deep tree prefix, tagged with its depth.

    >>> _squeeze("│  │  │  │  └─ ", 9)
    '[5]│  └─ '
    """
    if len(prefix) <= limit:
        return prefix
    tag = f"[{len(prefix) // 3}]"
    return tag + prefix[-(limit - len(tag)):]


def _bar(span: Span, origin: datetime, total_ms: float, width: int) -> str:
    start_ms = (span.start_time - origin) / timedelta(milliseconds=1)
    end_ms = start_ms + max(span.duration_ms, 0.0)
    scale = width / total_ms if total_ms > 0 else 0.0
    first = min(max(int(start_ms * scale), 0), width - 1)
    last = min(max(math.ceil(end_ms * scale - 1e-9), first + 1), width)
    return " " * first + BLOCK * (last - first) + " " * (width - last)


# ------------------------------------------------------------------ render


def _header(trace: Trace, width: int) -> list[str]:
    status = trace.status
    if status == "error":
        status = f"{ERROR_MARK} error ({trace.error_count} of {trace.span_count} spans)"
    parts = [
        f"trace {trace.trace_id}",
        f"project {trace.project or '-'}",
        f"user {trace.user_id or '-'}",
        f"{_time(trace.start_time)} UTC",
        format_duration(trace.duration_ms),
        f"{trace.span_count:,} span" + ("" if trace.span_count == 1 else "s"),
        f"{trace.total_tokens:,} tokens",
        format_cost(trace.cost_usd),
        status,
    ]
    if trace.summary is None:
        parts.append("no summary row (totals from spans)")
    # Wrapped at `width` rather than one long line: the terminal would wrap
    # it anyway, mid-word.
    lines = [""]
    for part in (one_line(p, 200) for p in parts):
        if lines[-1] and len(lines[-1]) + 3 + len(part) > width:
            lines.append("  " + part)
        else:
            lines[-1] = f"{lines[-1]} · {part}" if lines[-1] else part
    return lines


def render_waterfall(
    trace: Trace, width: int = 100, color: bool = False, payloads: bool = True
) -> str:
    """Draw a trace as an indented tree with a time bar per span.

    Parameters
    ----------
    trace
        From :func:`sinks.trace_query.fetch_trace`.
    width
        Target line width in characters. The name and bar columns shrink to
        fit, then model names; below about 80 columns lines get longer than
        ``width``.
    color
        Add ANSI colours (errors red, bars by span kind).
    payloads
        Show each span's input and output (one line each, cut to 60
        characters) under it. Error messages are always shown.

    Returns
    -------
    str
        The header (wrapped at ``width``), a column header, then one line per
        span plus its detail lines, without a trailing newline.

    Examples
    --------
    >>> from datetime import datetime, timedelta, UTC
    >>> t0, ms = datetime(2024, 5, 1, 12, 0, tzinfo=UTC), timedelta(milliseconds=1)
    >>> trace = Trace("t1", None, (
    ...     Span("a", None, "agent", "agent", t0, t0 + 800 * ms, status="ok", project="bot"),
    ...     Span("b", "a", "chat", "llm", t0 + 200 * ms, t0 + 600 * ms, status="error",
    ...          status_message="rate limited", request_model="gpt-4o", input_tokens=12,
    ...          output_tokens=0, cost_usd=Decimal("0.00012"), input="Hi\\nthere"),
    ... ))
    >>> print(render_waterfall(trace, width=80))
    trace t1 · project bot · user - · 2024-05-01 12:00:00.000 UTC · 800 ms · 2 spans
      12 tokens · $0.000120 · ✗ error (1 of 2 spans)
      no summary row (totals from spans)
    span    0          800 ms  latency       tokens         cost status  model/tool
    agent   █████████████████   800 ms            -            - ok
    └─ chat     █████████       400 ms         12/0    $0.000120 ✗ error gpt-4o
          ✗ rate limited
          in  Hi there
    """
    spans = trace.spans
    head = [_paint(line, "bold", color) for line in _header(trace, width)]
    if not spans:
        return "\n".join([*head, "(no spans stored for this trace)"])
    rows = list(_walk(spans))
    origin = min([s.start_time for s in spans] + ([trace.start_time] if trace.start_time else []))
    end = max(s.end_time for s in spans)
    total_ms = (end - origin) / timedelta(milliseconds=1)

    numbers_w = _LATENCY_W + _TOKENS_W + _COST_W + _STATUS_W + 6  # with the gaps
    # Model names give way before the tree and the timeline do.
    model_cap = max(12, min(_MODEL_MAX, width - numbers_w - 28))
    labels = [one_line(r.span.label, model_cap) for r in rows]
    model_w = max([len("model/tool")] + [len(x) for x in labels])
    avail = max(width - numbers_w - model_w, 24)
    names = [r.lead + one_line(r.span.name, 200) + (_ORPHAN if r.orphan else "") for r in rows]
    name_w = min(max(len(n) for n in names + ["span"]), max(avail // 2, 12))
    bar_w = max(avail - name_w - 1, 10)
    # A deep tree keeps its innermost levels and leaves room for the name.
    prefix_limit = max(avail // 4, 9)

    lines = [
        *head,
        " ".join([
            "span".ljust(name_w),
            ("0" + format_duration(total_ms).rjust(bar_w - 1)) if bar_w >= 10 else "timeline".ljust(bar_w),
            "latency".rjust(_LATENCY_W),
            "tokens".rjust(_TOKENS_W),
            "cost".rjust(_COST_W),
            "status".ljust(_STATUS_W),
            "model/tool",
        ]),
    ]
    for row, label in zip(rows, labels, strict=True):
        span = row.span
        error = span.status == "error"
        lead = _squeeze(row.lead, prefix_limit)
        # The orphan mark survives truncation; the name gives way.
        suffix = _ORPHAN if row.orphan else ""
        name = _fit(lead + one_line(span.name, 200), name_w - len(suffix)) if suffix else _fit(
            lead + one_line(span.name, 200), name_w
        )
        name = (name.rstrip() + suffix).ljust(name_w) if suffix else name
        bar_style = "red" if error else _KIND_STYLE.get(span.kind)
        cells = [
            name,
            _paint(_bar(span, origin, total_ms, bar_w), bar_style, color),
            format_duration(span.duration_ms).rjust(_LATENCY_W),
            format_tokens(span.input_tokens, span.output_tokens).rjust(_TOKENS_W),
            format_cost(span.cost_usd).rjust(_COST_W),
            _paint(_status(span.status).ljust(_STATUS_W), "red bold" if error else None, color),
            label,
        ]
        lines.append(" ".join(cells).rstrip())
        detail = _squeeze(row.detail, prefix_limit)
        room = max(width - len(detail) - 4, 20)
        if error:
            message = ": ".join(x for x in (span.error_type, span.status_message) if x) or "failed"
            lines.append(detail + _paint(f"{ERROR_MARK} " + one_line(message, room), "red", color))
        if payloads:
            for tag, text in (("in ", span.input), ("out", span.output)):
                if text and text.strip():
                    preview = one_line(text, min(PAYLOAD_CHARS, room))
                    lines.append(detail + _paint(f"{tag} {preview}", "dim", color))
    return "\n".join(lines)


def render_trace_list(page: Page) -> str:
    """A table of trace summaries, one line each, newest first.

    Examples
    --------
    >>> from datetime import datetime, timedelta, UTC
    >>> from sinks.trace_query import TraceSummary
    >>> t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    >>> page = Page((TraceSummary("t1", "bot", t0, t0 + timedelta(seconds=2.5), "error",
    ...                           root_name="agent", span_count=3, error_count=1,
    ...                           input_tokens=900, output_tokens=100,
    ...                           cost_usd=Decimal("0.0042"), user_id="u-1"),), None)
    >>> print(render_trace_list(page))
    start (UTC)              trace id  project  user  root   spans  duration  tokens      cost  status
    2024-05-01 12:00:00.000  t1        bot      u-1   agent      3    2.50 s   1,000  $0.00420  ✗ error
    >>> render_trace_list(Page((), None))
    'No traces match.'
    """
    if not page.items:
        return "No traces match."
    header = ("start (UTC)", "trace id", "project", "user", "root", "spans", "duration", "tokens", "cost", "status")
    right = {5, 6, 7, 8}
    table = [header] + [
        (
            _time(t.start_time),
            one_line(t.trace_id, 64),
            one_line(t.project, 24),
            one_line(t.user_id, 24) or "-",
            one_line(t.root_name, 28) or "-",
            f"{t.span_count:,}",
            format_duration(t.duration_ms),
            f"{t.total_tokens:,}",
            format_cost(t.cost_usd),
            _status(t.status),
        )
        for t in page.items
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = []
    for row in table:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)
