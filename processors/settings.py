"""The one settings object every llmpulse process reads once at start-up.

Environment variables (all optional; defaults match ``make services``):

=============================  =============================================
``KAFKA_BOOTSTRAP_SERVERS``    broker list, ``host:port[,host:port]``
``DATABASE_URL``               PostgreSQL/TimescaleDB URL (secret)
``LLMPULSE_TOPIC_PARTITIONS``  partitions of the topics llmpulse creates
``LLMPULSE_REPLICATION``       replication factor of those topics
``LLMPULSE_METRICS_PORT``      Prometheus ``/metrics`` port of a worker;
                               ``0`` picks a free port, ``-1`` disables it
``LLMPULSE_SLACK_WEBHOOK_URL`` Slack incoming-webhook URL (secret)
``LLMPULSE_LOG_LEVEL``         ``DEBUG``, ``INFO``, ``WARNING``...
``LLMPULSE_KAFKA_SESSION_TIMEOUT_S`` consumer session timeout, seconds
``LLMPULSE_STATE_DIR``         local worker state (faust data dirs)
``LLMPULSE_ENGINE``            ``kafka`` (librdkafka, default) or ``faust``
``LLMPULSE_PRICES_FILE``       price-table overrides (JSON, docs/pricing.md)
``LLMPULSE_PII_PATTERNS``      extra PII patterns, JSON ``{"NAME": "regex"}``
``LLMPULSE_SAMPLING_BUDGETS``  spans/s per project, ``proj=200,*=1000``
``LLMPULSE_SAMPLING_SLOW_MS``  traces at least this slow are always kept
``LLMPULSE_GRAFANA_URL``       Grafana base URL used in alert links
``LLMPULSE_RESULTS_INTERVAL_S`` seconds between experiment-results passes
``LLMPULSE_SLACK_ROUTES``      Slack routes file (JSON, docs/slack.md)
=============================  =============================================

Settings are frozen and passed down explicitly: no module-level singleton that
tests must patch. Secrets are :class:`pydantic.SecretStr`, so printing the
settings (or an exception that includes them) never leaks a password.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.dburl import DEFAULT_DATABASE_URL, mask_password

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


class Settings(BaseSettings):
    """Typed, frozen configuration read from the environment.

    Examples
    --------
    >>> s = Settings(kafka_bootstrap_servers="k1:9092", database_url="postgresql://u:pw@h/db")
    >>> s.kafka_url
    'kafka://k1:9092'
    >>> "pw" in repr(s)
    False
    >>> s.database_url_masked
    'postgresql://u:***@h/db'
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        DEFAULT_BOOTSTRAP, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers")
    )
    database_url: SecretStr = Field(
        SecretStr(DEFAULT_DATABASE_URL), validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    topic_partitions: int = Field(
        3, ge=1, validation_alias=AliasChoices("LLMPULSE_TOPIC_PARTITIONS", "topic_partitions")
    )
    replication_factor: int = Field(
        1, ge=1, validation_alias=AliasChoices("LLMPULSE_REPLICATION", "replication_factor")
    )
    metrics_port: int = Field(
        0, ge=-1, le=65535, validation_alias=AliasChoices("LLMPULSE_METRICS_PORT", "metrics_port")
    )
    slack_webhook_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LLMPULSE_SLACK_WEBHOOK_URL", "slack_webhook_url")
    )
    log_level: str = Field("INFO", validation_alias=AliasChoices("LLMPULSE_LOG_LEVEL", "log_level"))
    kafka_session_timeout_s: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("LLMPULSE_KAFKA_SESSION_TIMEOUT_S", "kafka_session_timeout_s")
    )

    state_dir: str = Field(
        str(Path.home() / ".local" / "state" / "llmpulse"),
        validation_alias=AliasChoices("LLMPULSE_STATE_DIR", "state_dir"),
    )

    engine: Literal["kafka", "faust"] = Field("kafka", validation_alias=AliasChoices("LLMPULSE_ENGINE", "engine"))
    prices_file: str | None = Field(None, validation_alias=AliasChoices("LLMPULSE_PRICES_FILE", "prices_file"))
    pii_patterns: str | None = Field(None, validation_alias=AliasChoices("LLMPULSE_PII_PATTERNS", "pii_patterns"))
    sampling_budgets: str | None = Field(
        None, validation_alias=AliasChoices("LLMPULSE_SAMPLING_BUDGETS", "sampling_budgets")
    )
    sampling_slow_ms: float = Field(
        10_000.0, gt=0, validation_alias=AliasChoices("LLMPULSE_SAMPLING_SLOW_MS", "sampling_slow_ms")
    )
    cohorts_file: str | None = Field(None, validation_alias=AliasChoices("LLMPULSE_COHORTS_FILE", "cohorts_file"))
    metrics_lateness_s: float = Field(
        600.0, ge=0, validation_alias=AliasChoices("LLMPULSE_METRICS_LATENESS_S", "metrics_lateness_s")
    )
    metrics_caps: str | None = Field(None, validation_alias=AliasChoices("LLMPULSE_METRICS_CAPS", "metrics_caps"))
    metrics_store_streams: int = Field(
        2, ge=1, le=16, validation_alias=AliasChoices("LLMPULSE_METRICS_STORE_STREAMS", "metrics_store_streams")
    )
    points_settle_s: float = Field(
        120.0, ge=0, validation_alias=AliasChoices("LLMPULSE_POINTS_SETTLE_S", "points_settle_s")
    )
    enrich_tables: bool = Field(
        True, validation_alias=AliasChoices("LLMPULSE_ENRICH_TABLES", "enrich_tables")
    )
    grafana_url: str = Field(
        "http://localhost:3000", validation_alias=AliasChoices("LLMPULSE_GRAFANA_URL", "grafana_url")
    )
    results_interval_s: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("LLMPULSE_RESULTS_INTERVAL_S", "results_interval_s")
    )
    slack_routes: str | None = Field(
        None, validation_alias=AliasChoices("LLMPULSE_SLACK_ROUTES", "slack_routes")
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        # A missing port otherwise surfaces much later as a vague connect timeout.
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"KAFKA_BOOTSTRAP_SERVERS entry {server!r} must look like host:port")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LLMPULSE_LOG_LEVEL {value!r} is not a logging level")
        return level

    @property
    def database_url_masked(self) -> str:
        """The database URL with its password hidden, safe to log."""
        return mask_password(self.database_url.get_secret_value())

    @property
    def kafka_url(self) -> str:
        """The broker list in the ``kafka://`` form faust expects.

        >>> Settings(kafka_bootstrap_servers="a:1,b:2").kafka_url
        'kafka://a:1;b:2'
        """
        return "kafka://" + ";".join(s.strip() for s in self.kafka_bootstrap_servers.split(","))
