"""The local Kafka broker itself: real produce/consume/commit, isolation, restart, SASL, ACLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.fixtures.kafka import (
    BROKER_PY,
    CONSUMER_SESSION_TIMEOUT_MS,
    SESSION_MAX_MESSAGE_BYTES,
    KafkaNames,
    LocalKafkaClass,
    SaslListener,
    create_topic,
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def produce(
    config: Mapping[str, Any],
    topic: str,
    values: Iterable[bytes],
    partition: Callable[[int], int] | None = None,
) -> list[Message]:
    """Produce and flush; returns the delivered messages (raises on any delivery error)."""
    producer = Producer({**config, "linger.ms": 0, "acks": "all"})
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg)

    for i, value in enumerate(values):
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition(i)
        producer.produce(topic, value, **kwargs)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"
    if errors:
        raise KafkaException(errors[0])
    return delivered


def make_consumer(config: Mapping[str, Any], group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            **config,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": CONSUMER_SESSION_TIMEOUT_MS,
        }
    )
    consumer.subscribe([topic])
    return consumer


def consume(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Message]:
    """Poll until exactly ``count`` messages arrived (fails on errors or timeout)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(err)
        got.append(msg)
    assert len(got) == count, f"got {len(got)} of {count} messages in {timeout}s"
    return got


def nothing_more(consumer: Consumer, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = consumer.poll(0.3)
        assert msg is None or msg.error() is not None, f"unexpected {msg.value()!r}"


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    finally:
        probe.close()
    return {tp.partition: tp.offset for tp in tps}


# --------------------------------------------------------------------------------------------
# produce / consume / commit / resume
# --------------------------------------------------------------------------------------------


def test_produce_consume_commit_resume(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], kafka_names: KafkaNames
) -> None:
    topic = kafka_topic(partitions=1)
    group = kafka_names.group()
    conf = {"bootstrap.servers": kafka_bootstrap}
    produce(conf, topic, [f"m{i}".encode() for i in range(10)])

    first = make_consumer(conf, group, topic)
    try:
        got = consume(first, 4)
        assert [m.value() for m in got] == [b"m0", b"m1", b"m2", b"m3"]
        first.commit(message=got[-1], asynchronous=False)  # commits offset 4 (next to read)
    finally:
        first.close()
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 4}

    second = make_consumer(conf, group, topic)
    try:
        rest = consume(second, 6)
        assert [m.offset() for m in rest] == list(range(4, 10))
        assert [m.value() for m in rest] == [f"m{i}".encode() for i in range(4, 10)]
        nothing_more(second, 1.0)
    finally:
        second.close()


# --------------------------------------------------------------------------------------------
# two tests in a row are isolated
# --------------------------------------------------------------------------------------------

_ISOLATION: dict[str, str] = {}


def _isolation_step(bootstrap: str, names: KafkaNames, make_topic: Callable[..., str]) -> None:
    topic = make_topic()
    group = names.group()
    assert names.topic() == topic and names.group() == group  # stable within a test
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # a brand-new topic: empty, and the group has no committed offset
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        probe.close()
    assert (low, high) == (0, 0)
    assert committed(bootstrap, group, topic, 1)[0] < 0  # OFFSET_INVALID: nothing committed
    assert admin.list_topics(topic=topic, timeout=10).topics[topic].error is None
    produce({"bootstrap.servers": bootstrap}, topic, [b"x"])
    if _ISOLATION:
        assert topic != _ISOLATION["topic"]
        assert group != _ISOLATION["group"]
    _ISOLATION.update(topic=topic, group=group)


def test_isolation_first(
    kafka_bootstrap: str, kafka_names: KafkaNames, kafka_topic: Callable[..., str]
) -> None:
    _isolation_step(kafka_bootstrap, kafka_names, kafka_topic)


def test_isolation_second(
    kafka_bootstrap: str, kafka_names: KafkaNames, kafka_topic: Callable[..., str]
) -> None:
    _isolation_step(kafka_bootstrap, kafka_names, kafka_topic)


# --------------------------------------------------------------------------------------------
# large messages on the session broker (message.max.bytes = 5 MiB)
# --------------------------------------------------------------------------------------------


def test_large_messages(
    kafka_bootstrap: str,
    kafka_broker: Any,
    kafka_topic: Callable[..., str],
    kafka_names: KafkaNames,
) -> None:
    if kafka_broker is None:
        pytest.skip("message.max.bytes is only known for the local session broker")
    assert kafka_broker.max_message_bytes == SESSION_MAX_MESSAGE_BYTES
    topic = kafka_topic()
    conf = {
        "bootstrap.servers": kafka_bootstrap,
        "message.max.bytes": 10 * 1024 * 1024,
        "compression.type": "none",
    }
    big = os.urandom(4 * 1024 * 1024)
    produce(conf, topic, [big])
    too_big = os.urandom(6 * 1024 * 1024)
    with pytest.raises(KafkaException) as info:
        produce(conf, topic, [too_big])
    assert info.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE

    consumer = make_consumer({"bootstrap.servers": kafka_bootstrap}, kafka_names.group(), topic)
    try:
        (msg,) = consume(consumer, 1)
        assert msg.value() == big
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# SASL listener and ACLs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_right_credentials(
    kafka_sasl: SaslListener,
    kafka_topic: Callable[..., str],
    kafka_names: KafkaNames,
    mechanism: str,
) -> None:
    assert mechanism in kafka_sasl.mechanisms
    topic = kafka_topic()
    conf = kafka_sasl.client_config("alice", mechanism)
    produce(conf, topic, [b"over-sasl"])
    consumer = make_consumer(conf, kafka_names.group(), topic)
    try:
        (msg,) = consume(consumer, 1)
        assert msg.value() == b"over-sasl"
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        ("PLAIN", "alice", "wrong"),
        ("SCRAM-SHA-256", "alice", "wrong"),
        ("SCRAM-SHA-512", "nobody", "whatever"),
    ],
)
def test_sasl_wrong_credentials(
    kafka_sasl: SaslListener, mechanism: str, user: str, password: str
) -> None:
    errors: list[KafkaError] = []
    conf = {
        **kafka_sasl.client_config("alice", mechanism),
        "sasl.username": user,
        "sasl.password": password,
        "error_cb": errors.append,
    }
    admin = AdminClient(conf)
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1)

    def auth_failed() -> bool:
        return any(e.code() == KafkaError._AUTHENTICATION for e in errors)

    deadline = time.monotonic() + 15
    while not auth_failed() and time.monotonic() < deadline:
        admin.poll(0.1)
    assert auth_failed(), errors


def test_acl_denies_produce(
    kafka_sasl: SaslListener, kafka_admin: AdminClient, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic()

    def binding(user: str, permission: AclPermissionType) -> AclBinding:
        return AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            AclOperation.WRITE,
            permission,
        )

    # Once a resource has any ACL, allow.everyone.if.no.acl.found no longer applies to it:
    # alice needs her own ALLOW; bob gets an explicit DENY.
    acls = [binding("bob", AclPermissionType.DENY), binding("alice", AclPermissionType.ALLOW)]
    for fut in kafka_admin.create_acls(acls).values():
        fut.result(timeout=20)

    denied: KafkaException | None = None
    deadline = time.monotonic() + 20
    while denied is None and time.monotonic() < deadline:  # ACLs reach the broker async
        try:
            produce(kafka_sasl.client_config("bob"), topic, [b"nope"])
        except KafkaException as exc:
            denied = exc
        else:
            time.sleep(0.3)
    assert denied is not None, "bob could still produce"
    assert denied.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    produce(kafka_sasl.client_config("alice"), topic, [b"yes"])
    produce(kafka_sasl.client_config("admin"), topic, [b"super"])  # super user


# --------------------------------------------------------------------------------------------
# broker restart keeps committed offsets (own broker: the session one is not disturbed)
# --------------------------------------------------------------------------------------------


def test_restart_keeps_committed_offsets(tmp_path: Path) -> None:
    kafka = LocalKafkaClass(data_dir=tmp_path / "kafka", die_with_parent=True)
    try:
        bootstrap = kafka.start()
        conf = {"bootstrap.servers": bootstrap}
        topic, group = "restart-topic", "restart-group"
        create_topic(bootstrap, topic, partitions=2)
        produce(conf, topic, [f"v{i}".encode() for i in range(20)], partition=lambda i: i % 2)

        consumer = make_consumer(conf, group, topic)
        try:
            seen = consume(consumer, 12)
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        expected: dict[int, int] = {0: 0, 1: 0}
        for msg in seen:
            expected[msg.partition()] = max(expected[msg.partition()], msg.offset() + 1)
        assert committed(bootstrap, group, topic, 2) == expected

        kafka.stop()  # clean shutdown
        assert not kafka.is_running()
        assert kafka.start() == bootstrap  # same data dir, same port
        assert committed(bootstrap, group, topic, 2) == expected

        consumer = make_consumer(conf, group, topic)
        try:
            rest = consume(consumer, 8)
            nothing_more(consumer, 1.0)
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        values = {m.value() for m in seen} | {m.value() for m in rest}
        assert values == {f"v{i}".encode() for i in range(20)}
        for msg in rest:
            assert msg.offset() >= expected[msg.partition()]

        kafka.kill()  # unclean crash: recovery must keep the commit too
        assert kafka.start() == bootstrap
        assert committed(bootstrap, group, topic, 2) == {0: 10, 1: 10}
    finally:
        kafka.close()
    assert not kafka.is_running()


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BROKER_PY), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_misuse_prints_usage() -> None:
    for args in ([], ["frobnicate"], ["start", "--sasl-port", "0", "--user", "no-colon"]):
        proc = _cli(*args)
        assert proc.returncode != 0
        assert "usage:" in proc.stderr


def test_cli_start_status_stop(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert _cli("status", "--state-file", state).returncode != 0
    started = _cli("start", "--state-file", state, "--sasl-port", "0", "--user", "u:p")
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    try:
        info = json.loads(state.read_text())
        assert info["bootstrap_servers"] == bootstrap
        assert info["sasl_bootstrap_servers"]
        data_dir = Path(info["data_dir"])
        assert data_dir.is_dir()
        status = _cli("status", "--state-file", state)
        assert status.returncode == 0, status.stderr
        assert status.stdout.strip() == bootstrap
        again = _cli("start", "--state-file", state)  # idempotent while running
        assert again.returncode == 0 and again.stdout.strip() == bootstrap
    finally:
        stopped = _cli("stop", "--state-file", state)
    assert stopped.returncode == 0, stopped.stderr
    assert _cli("status", "--state-file", state).returncode != 0
    assert not data_dir.exists()  # temp data dir removed on stop


# --------------------------------------------------------------------------------------------
# the session broker through the kafka_broker fixture (what chaos tests do)
# --------------------------------------------------------------------------------------------


def test_session_broker_pause_and_restart(
    kafka_broker: Any,
    kafka_bootstrap: str,
    kafka_sasl: SaslListener,
    kafka_topic: Callable[..., str],
    kafka_names: KafkaNames,
) -> None:
    if kafka_broker is None:
        pytest.skip("needs the local session broker")
    topic = kafka_topic()
    group = kafka_names.group()
    conf = {"bootstrap.servers": kafka_bootstrap}
    produce(conf, topic, [b"a", b"b", b"c"])
    consumer = make_consumer(conf, group, topic)
    try:
        consume(consumer, 2)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    kafka_broker.pause()
    assert kafka_broker.is_running() and not kafka_broker.is_reachable(1.0)
    kafka_broker.resume()
    assert kafka_broker.is_reachable(10.0)

    assert kafka_broker.restart() == kafka_bootstrap  # same address after a restart
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}
    # SCRAM credentials survive (re-upserted on a resumed data dir) and SASL still works
    produce(kafka_sasl.client_config("alice", "SCRAM-SHA-512"), topic, [b"d"])
    consumer = make_consumer(conf, group, topic)
    try:
        assert [m.value() for m in consume(consumer, 2)] == [b"c", b"d"]
    finally:
        consumer.close()
    kafka_broker.stop()  # the fixture brings it back after the test
