"""Avro and JSON messages through the real broker with both Python clients and kcat."""
from __future__ import annotations

import asyncio
import subprocess
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka.admin import AdminClient, ConfigResource

from processors.topics import ALL_TOPICS, USERS, create_topics
from schemas.codec import decode, encode, encode_json
from schemas.samples import sample
from tests.integration.helpers import consume


def _span(trace_id: str) -> dict:
    return {**sample("span"), "trace_id": trace_id}


def test_topics_create_is_idempotent_and_applies_policies(admin: AdminClient) -> None:
    outcome = create_topics(admin, ALL_TOPICS)
    assert set(outcome) == {t.name for t in ALL_TOPICS}
    assert set(outcome.values()) == {"exists"}  # the session fixture created them already

    [users] = admin.describe_configs([ConfigResource("topic", USERS.name)]).values()
    assert users.result(30)["cleanup.policy"].value == "compact"
    metadata = admin.list_topics(timeout=15).topics
    assert len(metadata["llm.spans"].partitions) >= 1


def test_confluent_producer_to_aiokafka_consumer(bootstrap, producer, topic_factory) -> None:
    topic = topic_factory("roundtrip")
    trace_ids = [uuid.uuid4().hex for _ in range(4)]
    for i, trace_id in enumerate(trace_ids):
        # Half Avro, half JSON: the codec tells them apart by their first bytes.
        value = encode("span", _span(trace_id)) if i % 2 else encode_json("span", _span(trace_id))
        producer.produce(topic, key=trace_id.encode(), value=value)
    producer.flush(30)

    async def read_all() -> list[dict]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=f"t-{uuid.uuid4().hex}", auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            records = []
            while len(records) < len(trace_ids):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                records += [decode(m.value, expected="span") for msgs in batch.values() for m in msgs]
            return records
        finally:
            await consumer.stop()

    records = asyncio.run(read_all())
    assert sorted(r["trace_id"] for r in records) == sorted(trace_ids)
    assert all(r["start_time"] == sample("span")["start_time"] for r in records)


def test_aiokafka_producer_to_confluent_consumer(bootstrap, topic_factory) -> None:
    topic = topic_factory("roundtrip")
    feedback = sample("feedback")

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, encode("feedback", feedback), key=b"k1")
            await producer.send_and_wait(topic, encode_json("feedback", feedback), key=b"k2")
        finally:
            await producer.stop()

    asyncio.run(send())
    messages = consume(bootstrap, topic, 2, timeout_s=30)
    assert [m.key() for m in sorted(messages, key=lambda m: m.key())] == [b"k1", b"k2"]
    assert [decode(m.value(), expected="feedback") for m in messages] == [feedback, feedback]


def test_kcat_json_is_read_by_the_codec(bootstrap, topic_factory) -> None:
    # kcat is an independent client: what it sends owes nothing to our code.
    topic = topic_factory("kcat", partitions=1)
    line = encode_json("span", _span("ab" * 16)).decode()
    subprocess.run(
        ["kcat", "-b", bootstrap, "-t", topic, "-P", "-K", "|"],
        input=f"{'ab' * 16}|{line}\n", text=True, check=True, timeout=30,
    )
    [message] = consume(bootstrap, topic, 1, timeout_s=30)
    assert message.key() == b"ab" * 16
    assert decode(message.value(), expected="span")["trace_id"] == "ab" * 16


def test_kcat_reads_what_the_codec_wrote(bootstrap, producer, topic_factory) -> None:
    topic = topic_factory("kcat", partitions=1)
    value = encode("span", _span("cd" * 16))
    producer.produce(topic, value=value)
    producer.flush(30)
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-t", topic, "-C", "-e", "-c", "1", "-f", "%S"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    assert int(out.stdout) == len(value)
