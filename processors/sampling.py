"""Per-project span budgets, enforced by keeping or dropping whole traces.

Each project may have a budget in spans per second. While a project's
incoming rate is within its budget every span passes straight through. Above
it, each trace is kept with probability ``p`` (about ``budget / rate``),
decided from a stable hash of its trace id, so the spans of one trace share
one verdict. Traces with an error or a slow span are always kept. Behaviour,
guarantees and limits are in ``docs/sampling.md``.

Everything here is plain, deterministic logic: the clock is injected and
there is no I/O and no randomness, so tests and benchmarks drive it directly.

Examples
--------
>>> budgets, default = parse_budgets("support-bot=200, *=1000")
>>> sampler = TraceSampler(budgets, default, now=lambda: 0.0)
>>> span = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "a1",
...         "parent_span_id": None, "project": "support-bot", "status": "ok"}
>>> sampler.offer(span) == [span]
True
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import timedelta
from hashlib import blake2b
from typing import Any

__all__ = ["COUNTERS", "GAUGES", "TraceSampler", "parse_budgets", "trace_hash"]

Span = dict[str, Any]

#: Monotonic per-project counters returned by :meth:`TraceSampler.stats`.
COUNTERS = (
    "spans_in",
    "spans_kept",
    "spans_dropped",
    "traces_kept",
    "traces_dropped",
    "kept_for_error",
    "kept_for_latency",
    "forced_decisions",
    "late_error",
)
#: Per-project gauges returned by :meth:`TraceSampler.gauges`.
GAUGES = ("keep_probability", "rate", "pending_traces", "pending_spans")

# Verdicts stored in the decision memory. _RESCUED marks a trace kept only
# because of an error or latency (its hash said drop): its spans are the
# "extra" load that the keep probability must leave room for.
_DROP, _KEEP, _RESCUED = 0, 1, 2


def trace_hash(trace_id: str) -> float:
    """Where a trace falls in [0, 1): the same in every process and restart.

    A trace is sampled in when ``trace_hash(trace_id) < p``. blake2b rather
    than the trace id's own low bits, because not every producer makes them
    random (sequential or time-based ids would all land at one end), and
    rather than :func:`hash`, which is salted per process.

    Parameters
    ----------
    trace_id
        Any string; normally 32 lowercase hex characters.

    Examples
    --------
    >>> h = trace_hash("4bf92f3577b34da6a3ce929d0e0e4736")
    >>> 0.0 <= h < 1.0, h == trace_hash("4bf92f3577b34da6a3ce929d0e0e4736")
    (True, True)
    """
    # 53 bits so the float is exact and never rounds up to 1.0.
    digest = blake2b(trace_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) * 2.0**-53


def parse_budgets(text: str) -> tuple[dict[str, float], float | None]:
    """Parse ``LLMPULSE_SAMPLING_BUDGETS``: ``project=spans_per_s,...,*=default``.

    ``*`` sets the budget of every project not named; without it such
    projects are never sampled. ``inf`` means "never sample this project"
    (useful with a ``*`` default). ``0`` keeps only error and slow traces.

    Parameters
    ----------
    text
        Comma-separated ``name=number`` entries; spaces around items are
        ignored. An empty or blank string means no budgets at all.

    Returns
    -------
    tuple
        ``(budgets, default_budget)``: project -> spans/s, and the ``*``
        budget or None.

    Raises
    ------
    ValueError
        On an entry without ``=``, an empty name, a repeated name, or a value
        that is not a number >= 0. The message names the entry.

    Examples
    --------
    >>> parse_budgets("support-bot=200,search-rag=50,*=1000")
    ({'support-bot': 200.0, 'search-rag': 50.0}, 1000.0)
    >>> parse_budgets("support-bot=lots")
    Traceback (most recent call last):
    ValueError: sampling budget 'support-bot=lots': 'lots' is not a number of spans per second
    """
    budgets: dict[str, float] = {}
    default: float | None = None
    if not text.strip():
        return budgets, default
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"sampling budgets {text!r}: empty entry (stray comma?)")
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise ValueError(f"sampling budget {item!r}: expected project=spans_per_second")
        if not name:
            raise ValueError(f"sampling budget {item!r}: project name is empty (use * for the default)")
        try:
            budget = float(value)
        except ValueError:
            raise ValueError(f"sampling budget {item!r}: {value!r} is not a number of spans per second") from None
        if math.isnan(budget) or budget < 0:
            raise ValueError(f"sampling budget {item!r}: spans per second must be >= 0 (or inf for no limit)")
        if name == "*":
            if default is not None:
                raise ValueError(f"sampling budgets {text!r}: the default (*) is given twice")
            default = budget
        elif name in budgets:
            raise ValueError(f"sampling budgets {text!r}: project {name!r} is given twice")
        else:
            budgets[name] = budget
    return budgets, default


class _Project:
    """Rate estimate, keep probability and counters of one project."""

    __slots__ = (
        "budget", "unlimited", "p", "rate", "extra_rate", "measured", "first_cap",
        "window_start", "window_end", "window_count", "window_extra",
        "pending_traces", "pending_spans", *COUNTERS,
    )

    def __init__(self, budget: float, t: float, window_s: float) -> None:
        self.budget = budget
        self.unlimited = budget == math.inf  # never sampled: skips the verdict memory
        self.p = 1.0
        self.rate = 0.0  # spans/s in, smoothed
        self.extra_rate = 0.0  # spans/s kept only for error/latency, smoothed
        self.measured = False
        # Until the first measurement, a window that already holds a full
        # window's budget is proof enough of overload: measure right then,
        # rather than let the whole first window through unsampled.
        self.first_cap = budget * window_s
        self.window_start = t
        self.window_end = t + window_s
        self.window_count = 0
        self.window_extra = 0
        self.pending_traces = 0
        self.pending_spans = 0
        for name in COUNTERS:
            setattr(self, name, 0)


class _Pending:
    """Spans of a trace held until its verdict."""

    __slots__ = ("project", "deadline", "spans")

    def __init__(self, project: _Project, deadline: float, span: Span) -> None:
        self.project = project  # the project of the trace's first span decides
        self.deadline = deadline
        self.spans = [span]


class TraceSampler:
    """Keep each project within its span budget by sampling whole traces.

    Parameters
    ----------
    budgets
        Project -> budget in spans per second (>= 0; ``inf`` = no limit).
    default_budget
        Budget of projects not in ``budgets``; None = no limit.
    slow_ms
        A trace with a span (normally its root) lasting at least this long
        is kept, if that span arrives before the trace is decided.
    decision_ttl_s
        Longest time spans of an undecided trace are held waiting for its
        root span; then the trace is decided without it.
    max_pending_traces, max_pending_spans
        Bounds of the hold buffer. When either is exceeded the oldest held
        traces are decided early (counted in ``forced_decisions``).
        ``max_pending_spans`` defaults to ``50 * max_pending_traces``.
    memory_ttl_s, max_decisions
        How long, and how many, trace verdicts are remembered so that late
        spans follow their trace's verdict. Entries live at least
        ``memory_ttl_s`` after last use unless ``max_decisions`` forces an
        earlier turnover.
    rate_window_s, rate_tau_s
        The incoming rate is counted per window and smoothed with an
        exponential moving average of time constant ``rate_tau_s``; the keep
        probability changes once per window. A project's first window ends
        early once it holds ``budget * rate_window_s`` spans.
    now
        Monotonic clock in seconds (injected so tests control time).

    Examples
    --------
    >>> t = [0.0]
    >>> sampler = TraceSampler({"demo": 10.0}, slow_ms=5_000, now=lambda: t[0])
    >>> filler = [{"trace_id": f"{i:032x}", "span_id": "r", "parent_span_id": None,
    ...            "project": "demo", "status": "ok"} for i in range(100)]
    >>> sum(len(sampler.offer(s)) for s in filler)  # no time has passed: nothing measured
    100
    >>> t[0] = 1.0  # the next span closes the window: 100 spans/s for a budget of 10
    >>> error = dict(filler[0], trace_id="f" * 32, status="error")
    >>> sampler.offer(error) == [error]
    True
    >>> round(sampler.keep_probability("demo"), 2), sampler.stats()["demo"]["spans_in"]
    (0.1, 101)
    """

    def __init__(
        self,
        budgets: Mapping[str, float],
        default_budget: float | None = None,
        *,
        slow_ms: float = 10_000.0,
        decision_ttl_s: float = 30.0,
        max_pending_traces: int = 10_000,
        max_pending_spans: int | None = None,
        memory_ttl_s: float = 300.0,
        max_decisions: int = 500_000,
        rate_window_s: float = 1.0,
        rate_tau_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, budget in [*budgets.items(), ("default_budget", default_budget)]:
            if budget is not None and (math.isnan(budget) or budget < 0):
                raise ValueError(f"sampling budget of {name!r} must be >= 0 spans/s, got {budget!r}")
        for name, value in [("slow_ms", slow_ms), ("decision_ttl_s", decision_ttl_s),
                            ("memory_ttl_s", memory_ttl_s), ("rate_window_s", rate_window_s),
                            ("rate_tau_s", rate_tau_s)]:
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if max_pending_spans is None:
            max_pending_spans = 50 * max_pending_traces
        for name, count in [("max_pending_traces", max_pending_traces),
                            ("max_pending_spans", max_pending_spans), ("max_decisions", max_decisions)]:
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}")

        self._budgets = dict(budgets)
        self._default = default_budget
        self._slow = timedelta(milliseconds=slow_ms)
        self._slow_us = slow_ms * 1000.0
        self._ttl = decision_ttl_s
        self._max_traces = max_pending_traces
        self._max_spans = max_pending_spans
        self._memory_ttl = memory_ttl_s
        self._half_decisions = max(1, max_decisions // 2)
        self._window = rate_window_s
        self._tau = rate_tau_s
        self._now = now

        self._projects: dict[str, _Project] = {}
        # Spans held per undecided trace, oldest first (OrderedDict: O(1)
        # pop of the oldest, unlike a plain dict after many deletions).
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._pending_spans = 0
        # Verdict memory in two generations: writes go to _cur; when it is
        # old or full it becomes _prev and the old _prev is dropped. A hit in
        # _prev moves back to _cur. This is an LRU with TTL at the cost of a
        # dict read, cheap enough for the per-span path.
        self._cur: dict[str, int] = {}
        self._prev: dict[str, int] = {}
        self._rotate_at = now() + memory_ttl_s

    # -- per span ---------------------------------------------------------

    def offer(self, span: Span) -> list[Span]:
        """Take one span; return the spans to forward now.

        The result is ``[span]`` when the span passes, ``[]`` when it is held
        or dropped, and may also hold earlier spans of the same trace (or,
        when the hold buffer overflows, of other traces) released by this
        span. Released spans come in arrival order.

        Parameters
        ----------
        span
            A decoded span: ``trace_id``, ``project``, ``parent_span_id``,
            ``status``, ``start_time`` and ``end_time`` are read.

        Examples
        --------
        >>> sampler = TraceSampler({}, now=lambda: 0.0)  # no budgets: never samples
        >>> span = {"trace_id": "ab" * 16, "project": "p", "parent_span_id": None}
        >>> sampler.offer(span) == [span]
        True
        """
        # The fast path (no budget, or a trace already kept) is a few dict
        # reads and counter bumps: it runs on every span.
        t = self._now()
        project = span["project"]
        st = self._projects.get(project)
        if st is None:
            st = self._projects[project] = _Project(self._budget_of(project), t, self._window)
        if t >= st.window_end or st.window_count >= st.first_cap:
            self._roll(st, t)
        st.spans_in += 1
        st.window_count += 1
        if st.unlimited or self._cur.get(span["trace_id"]) == _KEEP:
            st.spans_kept += 1
            return [span]
        return self._offer_slow(st, span, t)

    def _offer_slow(self, st: _Project, span: Span, t: float) -> list[Span]:
        tid = span["trace_id"]
        verdict = self._lookup(tid, t)
        if verdict is not None:
            if verdict:
                st.spans_kept += 1
                if verdict == _RESCUED:
                    st.window_extra += 1
                return [span]
            if span.get("status") == "error":
                # A trace already dropped has a late error: keep the error
                # (a partial trace) rather than lose it. See docs.
                st.late_error += 1
                st.spans_kept += 1
                st.window_extra += 1
                return [span]
            st.spans_dropped += 1
            return []

        pend = self._pending.get(tid)
        if st.p >= 1.0:
            # Within budget, nothing is looked at: the trace is kept. Its
            # verdict is remembered anyway, so that if the project goes over
            # budget mid-trace the rest of the trace still follows it.
            if pend is None:
                self._remember(tid, _KEEP, t)
                st.traces_kept += 1
                st.spans_kept += 1
                return [span]
            self._hold(pend, span)
            del self._pending[tid]
            return self._release(tid, pend, t)

        error = span.get("status") == "error"
        slow = self._is_slow(span)
        if pend is None:
            # The hash verdict is made once, here. Held traces are those it
            # drops; holding them only gives an error, a slow span or a
            # return within budget the chance to save them.
            sampled = trace_hash(tid) < st.p
            if sampled or error or slow:
                # Kept at first sight: nothing to wait for.
                verdict = self._verdict(st, sampled, error, slow)
                self._remember(tid, verdict, t)
                st.traces_kept += 1
                st.spans_kept += 1
                if verdict == _RESCUED:
                    st.window_extra += 1
                return [span]
            if span.get("parent_span_id") is None:
                # The root and nothing held: the trace is decided already.
                self._remember(tid, _DROP, t)
                st.traces_dropped += 1
                st.spans_dropped += 1
                return []
            pend = self._pending[tid] = _Pending(st, t + self._ttl, span)
            st.pending_traces += 1
            st.pending_spans += 1
            self._pending_spans += 1
        else:
            self._hold(pend, span)
            if error or slow or span.get("parent_span_id") is None:
                del self._pending[tid]
                return self._release(tid, pend, t, error, slow)
        if len(self._pending) > self._max_traces or self._pending_spans > self._max_spans:
            return self._enforce_bounds(t)
        return []

    # -- time-driven ------------------------------------------------------

    def flush_expired(self) -> list[Span]:
        """Decide every held trace whose first span came ``decision_ttl_s`` ago.

        Call it about once a second. Kept traces' spans are returned; dropped
        ones are counted.

        Examples
        --------
        >>> TraceSampler({"p": 1.0}, now=lambda: 0.0).flush_expired()
        []
        """
        t = self._now()
        out: list[Span] = []
        pending = self._pending
        while pending:
            tid = next(iter(pending))
            pend = pending[tid]
            if pend.deadline > t:
                break
            del pending[tid]
            out += self._release(tid, pend, t)
        return out

    def drain(self) -> list[Span]:
        """Decide every held trace now; call before shutdown or on partition revoke.

        Examples
        --------
        >>> TraceSampler({"p": 1.0}, now=lambda: 0.0).drain()
        []
        """
        t = self._now()
        out: list[Span] = []
        while self._pending:
            tid, pend = self._pending.popitem(last=False)
            out += self._release(tid, pend, t)
        return out

    # -- read-outs --------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """Monotonic counters per project (names in :data:`COUNTERS`), for Prometheus.

        ``spans_in == spans_kept + spans_dropped + pending`` holds per
        project at every moment.

        Examples
        --------
        >>> sampler = TraceSampler({}, now=lambda: 0.0)
        >>> _ = sampler.offer({"trace_id": "ab" * 16, "project": "p", "parent_span_id": None})
        >>> sampler.stats()["p"]["spans_kept"]
        1
        """
        return {name: {c: getattr(st, c) for c in COUNTERS} for name, st in self._projects.items()}

    def gauges(self) -> dict[str, dict[str, float]]:
        """Current values per project (names in :data:`GAUGES`): not counters.

        Examples
        --------
        >>> sampler = TraceSampler({"p": 5.0}, now=lambda: 0.0)
        >>> _ = sampler.offer({"trace_id": "ab" * 16, "project": "p", "parent_span_id": None})
        >>> sampler.gauges()["p"]["keep_probability"]
        1.0
        """
        return {
            name: {"keep_probability": st.p, "rate": st.rate,
                   "pending_traces": float(st.pending_traces), "pending_spans": float(st.pending_spans)}
            for name, st in self._projects.items()
        }

    def keep_probability(self, project: str) -> float:
        """The probability a trace of ``project`` is sampled in, right now.

        Examples
        --------
        >>> TraceSampler({"p": 5.0}, now=lambda: 0.0).keep_probability("never-seen")
        1.0
        """
        st = self._projects.get(project)
        return 1.0 if st is None else st.p

    @property
    def pending_traces(self) -> int:
        """Traces held now, all projects."""
        return len(self._pending)

    @property
    def pending_spans(self) -> int:
        """Spans held now, all projects."""
        return self._pending_spans

    @property
    def remembered(self) -> int:
        """Trace verdicts in memory (at most ``max_decisions``)."""
        return len(self._cur) + len(self._prev)

    # -- internals --------------------------------------------------------

    def _budget_of(self, project: str) -> float:
        budget = self._budgets.get(project, self._default)
        return math.inf if budget is None else float(budget)

    def _roll(self, st: _Project, t: float) -> None:
        """Close the rate window ending at ``t`` and recompute the keep probability."""
        elapsed = t - st.window_start
        if elapsed <= 0:  # several spans at one clock reading: wait for time to pass
            return
        rate, extra = st.window_count / elapsed, st.window_extra / elapsed
        if st.measured:
            # EWMA weighted by elapsed time, so an idle gap counts as the
            # zero traffic it was.
            a = 1.0 - math.exp(-elapsed / self._tau)
            st.rate += a * (rate - st.rate)
            st.extra_rate += a * (extra - st.extra_rate)
        else:
            st.rate, st.extra_rate, st.measured = rate, extra, True
            st.first_cap = math.inf
        st.window_start, st.window_end = t, t + self._window
        st.window_count = st.window_extra = 0
        if st.rate <= st.budget:
            st.p = 1.0
        else:
            # Kept = p * rate + extra (traces the hash dropped but an error or
            # latency saved), so leave room for the extra: the kept rate then
            # tracks the budget even when many traces fail.
            st.p = min(1.0, max(0.0, (st.budget - st.extra_rate) / st.rate))

    def _verdict(self, st: _Project, sampled: bool, error: bool, slow: bool) -> int:
        if sampled:
            return _KEEP
        if error:
            st.kept_for_error += 1
            return _RESCUED
        if slow:
            st.kept_for_latency += 1
            return _RESCUED
        return _DROP

    def _is_slow(self, span: Span) -> bool:
        try:
            duration = span["end_time"] - span["start_time"]
        except (KeyError, TypeError):
            return False
        if isinstance(duration, timedelta):
            return duration >= self._slow
        return duration >= self._slow_us  # raw timestamp-micros

    def _hold(self, pend: _Pending, span: Span) -> None:
        pend.spans.append(span)
        self._pending_spans += 1
        self._projects[span["project"]].pending_spans += 1

    def _release(self, tid: str, pend: _Pending, t: float, error: bool = False, slow: bool = False) -> list[Span]:
        """Decide a held trace (already removed from the buffer) and account for it."""
        st = pend.project
        if t >= st.window_end:  # an idle project's probability may be stale
            self._roll(st, t)
        # The hash said drop when the trace was first seen (that is why it is
        # held); asking again at the current p would give each held trace a
        # second chance and bias the kept rate above the budget. Only a
        # project back within budget keeps it without a reason.
        verdict = self._verdict(st, st.p >= 1.0, error, slow)
        self._remember(tid, verdict, t)
        st.pending_traces -= 1
        self._pending_spans -= len(pend.spans)
        projects = self._projects
        for s in pend.spans:
            owner = projects[s["project"]]
            owner.pending_spans -= 1
            if verdict:
                owner.spans_kept += 1
            else:
                owner.spans_dropped += 1
        if not verdict:
            st.traces_dropped += 1
            return []
        st.traces_kept += 1
        if verdict == _RESCUED:
            st.window_extra += len(pend.spans)
        return pend.spans

    def _enforce_bounds(self, t: float) -> list[Span]:
        out: list[Span] = []
        while len(self._pending) > self._max_traces or self._pending_spans > self._max_spans:
            tid, pend = self._pending.popitem(last=False)
            pend.project.forced_decisions += 1
            out += self._release(tid, pend, t)
        return out

    def _lookup(self, tid: str, t: float) -> int | None:
        verdict = self._cur.get(tid)
        if verdict is None:
            verdict = self._prev.get(tid)
            if verdict is not None:
                self._remember(tid, verdict, t)
        return verdict

    def _remember(self, tid: str, verdict: int, t: float) -> None:
        if t >= self._rotate_at or len(self._cur) >= self._half_decisions:
            self._prev, self._cur = self._cur, {}
            self._rotate_at = t + self._memory_ttl
        self._cur[tid] = verdict
