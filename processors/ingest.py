"""Ingest: turn producer spans into clean, costed, PII-free enriched spans.

Reads ``llm.spans`` (Avro single-object or JSON, one span per message) and
``otlp_spans`` (one OTLP ``ExportTraceServiceRequest`` per message, many
spans), and writes every span to ``llm.spans.enriched`` as Avro, keyed by
trace id. Per span, in this order:

1. **mask PII** in payloads, status message and attributes, so nothing after
   this point (topics, database, dashboards, alerts) ever holds it;
2. **cost** from the price table when the span carries none; unknown models
   are counted, never guessed;
3. **enrich** with the user's cohorts and experiment variants, and emit
   one exposure per (user, experiment) (:mod:`processors.enrich`; profiles
   and definitions come from the compacted ``llm.users`` and
   ``llm.experiments`` topics, read whole at start and followed after);
4. **sample** per project when a project exceeds its span budget, whole
   traces at a time, always keeping errors and slow traces.

Feedback from ``llm.feedback`` is validated, tagged with the same cohorts and
variants, and written to ``llm.feedback.enriched`` keyed by trace id, the
same key and partitioner as the enriched spans, so downstream joins by trace
stay within one partition.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from processors.contract import Output
from processors.deadletter import SourceMessage, encode_dead_letter
from processors.otlp import spans_from_otlp
from processors.pii import PiiMasker, parse_patterns
from processors.pricing import PriceTable, UnknownModels
from processors.sampling import TraceSampler, parse_budgets
from processors.settings import Settings
from processors.enrich import Enricher
from processors.tables import CompactedTable
from processors.topics import (
    DEADLETTER,
    EXPERIMENTS,
    EXPOSURES,
    FEEDBACK,
    FEEDBACK_ENRICHED,
    OTLP_SPANS,
    SPANS,
    SPANS_ENRICHED,
    USERS,
)
from schemas.codec import decode, encode, encode_decoded

Sample = tuple[str, str, dict[str, str], float]
_ENRICHED_TOPIC = SPANS_ENRICHED.name


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
    sources = (SPANS.name, OTLP_SPANS.name, FEEDBACK.name)

    def __init__(
        self,
        prices: PriceTable,
        masker: PiiMasker,
        sampler: TraceSampler | None = None,
        enricher: Enricher | None = None,
        tables: tuple[CompactedTable, ...] = (),
    ) -> None:
        self.prices = prices
        self.masker = masker
        self.sampler = sampler
        self.enricher = enricher
        self.tables = tables
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
        enricher, tables = _enrichment(settings)
        return cls(prices, masker, sampler, enricher, tables)

    def start(self) -> list[Output]:
        """Read the profile and experiment tables whole (called once, before consuming)."""
        return [out for table in self.tables for out in self._dead_letters(table.restore())]

    def process(self, message: SourceMessage) -> list[Output]:
        if message.value is None:
            raise ValueError(f"empty message value (tombstone) on {message.topic}")
        if message.topic == FEEDBACK.name:
            return [self._feedback(message.value)]
        exposures: list[Output] = []
        if message.topic == OTLP_SPANS.name:
            # Mapped by our code from foreign attributes: validate on the way out.
            spans = [self._enrich(span, exposures) for span in spans_from_otlp(message.value)]
            return self._outputs(self._kept(spans), encode) + exposures
        # Decoded and validated already; masking, cost and tags change only
        # strings and a float, so re-validating would double the encoder's cost.
        span = self._enrich(decode(message.value, expected="span"), exposures)
        if self.sampler is None:
            # The common one-span case without the list plumbing of _kept/_outputs.
            out = [Output(_ENRICHED_TOPIC, span["trace_id"].encode(), encode_decoded("span", span))]
            if exposures:
                out += exposures
            return out
        return self._outputs(self._kept([span]), encode_decoded) + exposures

    def tick(self) -> list[Output]:
        """Follow the tables; release sampled traces whose time has come (called every second)."""
        outputs = [out for table in self.tables for out in self._dead_letters(table.poll())]
        if self.sampler:
            outputs += self._outputs(self.sampler.flush_expired(), encode)
        return outputs

    def drain(self) -> list[Output]:
        """Decide every trace the sampler still holds (called on shutdown)."""
        return self._outputs(self.sampler.drain(), encode) if self.sampler else []

    def _enrich(self, span: dict, exposures: list[Output]) -> dict:
        # ``span`` was just decoded and nobody else holds it: mask and tag it
        # in place (each step replaces, never changes, nested dicts) rather
        # than copy its ~36 fields twice more.
        span = self.masker.mask_span(span, self.masked, copy=False)
        result = self.prices.cost_of(span)
        self.costed[result.source] += 1
        if result.source == "table":
            span["cost_usd"] = result.cost_usd
        self.unknown_models.observe(result)
        if self.enricher is None:
            return span
        span, exposed = self.enricher.span(span, copy=False)
        if exposed:
            exposures += [
                Output(EXPOSURES.name, f"{e['experiment_key']}|{e['user_id']}".encode(), encode("exposure", e))
                for e in exposed
            ]
        return span

    def _feedback(self, value: bytes) -> Output:
        feedback = decode(value, expected="feedback")
        if feedback.get("comment"):
            # Users paste e-mail addresses and phone numbers into comments too.
            feedback["comment"], found = self.masker.mask(feedback["comment"])
            self.masked.update(found)
        if self.enricher is not None:
            feedback = self.enricher.feedback(feedback)
        return Output(FEEDBACK_ENRICHED.name, feedback["trace_id"].encode(), encode("feedback", feedback))

    def _dead_letters(self, bad: list) -> list[Output]:
        return [Output(DEADLETTER.name, source.key, encode_dead_letter(self.name, source, exc)) for source, exc in bad]

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
        if self.enricher is not None:
            out += self.enricher.samples()
        if self.sampler:
            for project, counts in self.sampler.stats().items():
                for what, n in counts.items():
                    out.append(
                        (f"llmpulse_sampling_{what}", f"Sampling: {what.replace('_', ' ')}.", {"project": project}, float(n))
                    )
        return out


def _enrichment(settings: Settings) -> tuple[Enricher, tuple[CompactedTable, ...]]:
    """The enricher and the two tables feeding it (profiles, experiments)."""
    from processors.cohorts import CohortConfig, CohortTagger, newer
    from processors.experiments.client import experiments_table

    profiles: CompactedTable[dict] = CompactedTable(
        settings.kafka_bootstrap_servers, USERS.name,
        decode=lambda value: decode(value, expected="user_profile"),
        merge=lambda old, new: new if newer(old, new) else old,
    )
    enricher = Enricher(CohortTagger(CohortConfig.load(settings.cohorts_file)), profiles.get)
    experiments = experiments_table(settings.kafka_bootstrap_servers, enricher.set_experiment, EXPERIMENTS.name)
    return enricher, (profiles, experiments) if settings.enrich_tables else ()
