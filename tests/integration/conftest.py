"""Real Kafka and real PostgreSQL for integration tests.

The services are the ones ``make services`` starts (or whatever
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL name). If they do not answer, the tests
fail with a hint; they never skip, because a skipped integration test proves
nothing.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processors.settings import Settings
from processors.topics import ALL_TOPICS, create_topics

HINT = "start the services with `make services` (or set KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL)"


@pytest.fixture(scope="session")
def bootstrap() -> str:
    servers = Settings().kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": servers})
    try:
        admin.list_topics(timeout=15)
    except KafkaException as exc:
        pytest.fail(f"Kafka at {servers} does not answer ({exc}); {HINT}", pytrace=False)
    # The declared topics exist for every test, as `llmpulse topics create` makes them.
    create_topics(admin, ALL_TOPICS)
    return servers


@pytest.fixture(scope="session")
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def topic_factory(admin: AdminClient) -> Iterator[Callable[..., str]]:
    """Make uniquely named topics for one test; delete them afterwards."""
    made: list[str] = []

    def make(prefix: str = "test", partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(30)
        made.append(name)
        return name

    yield make
    if made:
        for future in admin.delete_topics(made).values():
            future.result(30)


@pytest.fixture
def producer(bootstrap: str) -> Iterator[Producer]:
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    yield prod
    prod.flush(30)


@pytest.fixture(scope="session")
def database_url() -> str:
    url = Settings().database_url.get_secret_value()
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not answer ({exc}); {HINT}", pytrace=False)
    return url


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
