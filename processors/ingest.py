"""Ingest: turn producer spans into clean, costed, PII-free enriched spans.

Reads ``llm.spans`` (Avro single-object or JSON, one span per message) and
``otlp_spans`` (one OTLP ``ExportTraceServiceRequest`` per message, many
spans), and writes every span to ``llm.spans.enriched`` as Avro, keyed by
trace id. Per span, in this order:

1. **mask PII** in payloads, status message and attributes, so nothing after
   this point (topics, database, dashboards, alerts) ever holds it;
2. **cost** from the price table when the span carries none; unknown models
   are counted, never guessed;
3. **sample** per project when a project exceeds its span budget, whole
   traces at a time, always keeping errors and slow traces.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from processors.contract import Output
from processors.deadletter import SourceMessage
from processors.otlp import spans_from_otlp
from processors.pii import PiiMasker, parse_patterns
from processors.pricing import PriceTable, UnknownModels
from processors.sampling import TraceSampler, parse_budgets
from processors.settings import Settings
from processors.topics import OTLP_SPANS, SPANS, SPANS_ENRICHED
from schemas.codec import decode, encode, encode_decoded

Sample = tuple[str, str, dict[str, str], float]


class IngestProcessor:
    """Decode, mask, cost and sample spans; emit them as Avro.

    Examples
    --------
    >>> from schemas.samples import sample
    >>> from schemas.codec import encode_json
    >>> span = sample("span", input="mail me at ann@example.com", cost_usd=None)
    >>> msg = SourceMessage("llm.spans", 0, 0, None, encode_json("span", span))
    >>> [out] = IngestProcessor(PriceTable.load(), PiiMasker()).process(msg)
    >>> enriched = decode(out.value, expected="span")
    >>> enriched["input"], enriched["cost_usd"] > 0
    ('mail me at <EMAIL>', True)
    """

    name = "ingest"
    sources = (SPANS.name, OTLP_SPANS.name)

    def __init__(self, prices: PriceTable, masker: PiiMasker, sampler: TraceSampler | None = None) -> None:
        self.prices = prices
        self.masker = masker
        self.sampler = sampler
        self.unknown_models = UnknownModels()
        self.masked: Counter[str] = Counter()
        self.costed: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestProcessor:
        """Build from settings: price overrides, PII patterns, sampling budgets."""
        prices = PriceTable.load(overrides=settings.prices_file)
        masker = PiiMasker(parse_patterns(settings.pii_patterns) if settings.pii_patterns else None)
        sampler = None
        if settings.sampling_budgets:
            budgets, default = parse_budgets(settings.sampling_budgets)
            sampler = TraceSampler(budgets, default_budget=default, slow_ms=settings.sampling_slow_ms)
        return cls(prices, masker, sampler)

    def process(self, message: SourceMessage) -> list[Output]:
        if message.value is None:
            raise ValueError(f"empty message value (tombstone) on {message.topic}")
        if message.topic == OTLP_SPANS.name:
            # Mapped by our code from foreign attributes: validate on the way out.
            return self._outputs(self._kept(self._enrich(span) for span in spans_from_otlp(message.value)), encode)
        # Decoded and validated already; masking and cost change only strings
        # and a float, so re-validating would double the encoder's cost.
        span = decode(message.value, expected="span")
        return self._outputs(self._kept([self._enrich(span)]), encode_decoded)

    def tick(self) -> list[Output]:
        """Release sampled traces whose decision time has come (called every second)."""
        return self._outputs(self.sampler.flush_expired(), encode) if self.sampler else []

    def drain(self) -> list[Output]:
        """Decide every trace the sampler still holds (called on shutdown)."""
        return self._outputs(self.sampler.drain(), encode) if self.sampler else []

    def _enrich(self, span: dict) -> dict:
        span = self.masker.mask_span(span, self.masked)
        result = self.prices.cost_of(span)
        self.costed[result.source] += 1
        if result.source == "table":
            span["cost_usd"] = result.cost_usd
        self.unknown_models.observe(result)
        return span

    def _kept(self, spans: Iterable[dict]) -> list[dict]:
        if self.sampler is None:
            return list(spans)
        return [kept for span in spans for kept in self.sampler.offer(span)]

    @staticmethod
    def _outputs(spans: list[dict], encoder) -> list[Output]:  # noqa: ANN001 - encode or encode_decoded
        # Key by trace id, whatever the producer used: every span of a trace
        # must reach the same partition downstream (sampling, trace store).
        return [Output(SPANS_ENRICHED.name, span["trace_id"].encode(), encoder("span", span)) for span in spans]

    def samples(self) -> list[Sample]:
        """Counters for Prometheus: (metric, help, labels, value)."""
        out: list[Sample] = [
            ("llmpulse_pii_masked", "PII values masked, by type.", {"type": t}, float(n))
            for t, n in self.masked.items()
        ]
        out += [
            ("llmpulse_cost_source", "Spans by where their cost came from.", {"source": s}, float(n))
            for s, n in self.costed.items()
        ]
        out += [
            ("llmpulse_unknown_model_spans", "Spans whose model has no price.", {"model": m}, float(n))
            for m, n in self.unknown_models.most_common(50)
        ]
        if self.sampler:
            for project, counts in self.sampler.stats().items():
                for what, n in counts.items():
                    out.append(
                        (f"llmpulse_sampling_{what}", f"Sampling: {what.replace('_', ' ')}.", {"project": project}, float(n))
                    )
        return out
