from __future__ import annotations

import pytest

from processors.topics import ALL_TOPICS, DAY_MS, EXPERIMENTS, USERS, TopicSpec, by_name
from schemas.codec import encode
from schemas.samples import sample


def test_names_are_unique() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))


def test_state_topics_are_compacted_without_time_retention() -> None:
    for spec in (USERS, EXPERIMENTS):
        assert spec.config() == {"cleanup.policy": "compact"}


def test_event_topics_expire() -> None:
    spec = TopicSpec("x", "doc", retention_ms=2 * DAY_MS)
    assert spec.config()["retention.ms"] == str(2 * DAY_MS)


@pytest.mark.parametrize("spec", [t for t in ALL_TOPICS if t.schema], ids=lambda t: t.name)
def test_every_declared_schema_exists(spec: TopicSpec) -> None:
    assert encode(spec.schema, sample(spec.schema))


def test_unknown_topic_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="llm.spans"):
        by_name("nope")
