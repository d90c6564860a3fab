from __future__ import annotations

import pytest
from pydantic import ValidationError

from processors.settings import Settings


def test_reads_documented_environment_variables(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cret@db:5432/x")
    monkeypatch.setenv("LLMPULSE_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("LLMPULSE_METRICS_PORT", "-1")
    monkeypatch.setenv("LLMPULSE_SLACK_WEBHOOK_URL", "https://hooks.example/T/B/xyz")
    s = Settings()
    assert s.kafka_url == "kafka://k1:9092;k2:9093"
    assert s.topic_partitions == 12
    assert s.metrics_port == -1
    assert s.database_url.get_secret_value().endswith("@db:5432/x")
    # Secrets never print, whichever way the object is shown.
    for shown in (repr(s), str(s), str(s.model_dump())):
        assert "s3cret" not in shown and "xyz" not in shown


def test_is_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.topic_partitions = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("LLMPULSE_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("LLMPULSE_LOG_LEVEL", "LOUD", "not a logging level"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, env, value, message) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=message):
        Settings()
