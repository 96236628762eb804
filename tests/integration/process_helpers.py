"""Helpers for the child-process worker tests (tests/integration/test_worker_process.py).

What the harness (``worker_harness``) does not have: producing with the (partition, offset)
each record got, reading the worker's JSON log lines, its health port, a steady background
producer, the group's complete commit history from ``__consumer_offsets``, and the partition
ownership each worker logged.
"""

from __future__ import annotations

import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.worker_harness import WorkerProcess

DATASETS = ("ds-loyalty-events", "ds-profile-customer", "ds-profile-tier")
TENANT = "_capillary"


# -- producing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Produced:
    """One produced record and where the broker put it."""

    event_id: str  # "" for records that carry no event (garbage, tombstones)
    partition: int
    offset: int


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "enable.idempotence": True}
    )


def produce_tracked(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    *,
    partition: int | None = None,
) -> list[Produced]:
    """Produce (event_id, key, value) triples; returns where each landed (broker-acked)."""
    producer = _producer(bootstrap)
    out: list[Produced] = []
    errors: list[str] = []
    _produce_into(producer, topic, records, out, errors, partition)
    assert producer.flush(30) == 0, "produce: not everything was acknowledged"
    assert not errors, errors[:3]
    return out


def _produce_into(
    producer: Producer,
    topic: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    out: list[Produced],
    errors: list[str],
    partition: int | None,
) -> None:
    for event_id, key, value in records:

        def report(err: Any, msg: Any, event_id: str = event_id) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                out.append(Produced(event_id, msg.partition(), msg.offset()))

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)


class SteadyProducer:
    """Produces a prepared list of (event_id, key, value) at a steady rate from a thread."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        records: Sequence[tuple[str, bytes, bytes]],
        per_second: float,
    ) -> None:
        self._producer = _producer(bootstrap)
        self._topic = topic
        self._records = records
        self._per_second = per_second
        self._stop = threading.Event()
        self.produced: list[Produced] = []
        self.errors: list[str] = []
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and self.sent < len(self._records):
            due = min(int((time.monotonic() - started) * self._per_second) + 1, len(self._records))
            if due > self.sent:
                chunk = self._records[self.sent : due]
                _produce_into(self._producer, self._topic, chunk, self.produced, self.errors, None)
                self.sent = due
            self._producer.poll(0.02)
        self._producer.flush(30)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def stop(self, timeout: float = 60) -> list[Produced]:
        """Stop (if still producing), wait for every ack; returns what was produced."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "steady producer did not stop"
        assert not self.errors, self.errors[:3]
        assert len(self.produced) == self.sent, "not every produced record was acknowledged"
        return self.produced


# -- the worker's log ----------------------------------------------------------------------------


def log_events(source: WorkerProcess | Path) -> list[dict[str, Any]]:
    """The worker's structlog JSON lines, in order (librdkafka's own stderr lines skipped)."""
    path = source.log_path if isinstance(source, WorkerProcess) else source
    if isinstance(source, WorkerProcess):
        source.log_text()  # flushes our handle
    out: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut by SIGKILL
        if isinstance(doc, dict) and "event" in doc:
            out.append(doc)
    return out


def find_events(source: WorkerProcess | Path, event: str) -> list[dict[str, Any]]:
    return [e for e in log_events(source) if e["event"] == event]


def wait_for_event(
    worker: WorkerProcess, event: str, timeout: float, *, after: int = 0
) -> dict[str, Any]:
    """The first ``event`` log line (skipping the first ``after`` of them); fails if the
    worker exits or the timeout passes first."""
    end = time.monotonic() + timeout
    while True:
        found = find_events(worker, event)
        if len(found) > after:
            return found[after]
        if not worker.alive():
            raise AssertionError(
                f"worker exited ({worker.proc.returncode}) before logging {event!r}:\n"
                + tail(worker)
            )
        if time.monotonic() > end:
            raise AssertionError(f"no {event!r} log line within {timeout}s:\n" + tail(worker))
        time.sleep(0.1)


def tail(worker: WorkerProcess, lines: int = 40) -> str:
    return "\n".join(worker.log_text().splitlines()[-lines:])


def problems(source: WorkerProcess | Path, allowed: Iterable[str] = ()) -> list[dict[str, Any]]:
    """error/critical log lines, except the events listed in ``allowed``."""
    ok = set(allowed)
    return [
        e
        for e in log_events(source)
        if e.get("level") in ("error", "critical") and e["event"] not in ok
    ]


def timestamp_ms(event: dict[str, Any]) -> float:
    """A log line's time (structlog ISO, UTC) as epoch milliseconds."""
    text = str(event["timestamp"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp() * 1000


# -- health endpoints ----------------------------------------------------------------------------


def health_port(worker: WorkerProcess, timeout: float = 30) -> int:
    return int(wait_for_event(worker, "health_listening", timeout)["port"])


def http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


# -- what reached AEP (the sandbox) ----------------------------------------------------------------


def delivered_entities(
    sandbox: Any, datasets: Iterable[str] = DATASETS
) -> dict[str, list[dict[str, Any]]]:
    """eventId -> every xdmEntity the sandbox accepted for it (duplicates kept)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for ds in datasets:
        for rec in sandbox.records(ds, limit=1_000_000):
            entity = rec["xdmEntity"]
            details = entity.get(TENANT, {})
            event_id = details.get("eventId") or details.get("lastEventId") or entity["_id"]
            out.setdefault(event_id, []).append(entity)
    return out


def accepted_count(sandbox: Any) -> int:
    return int(sandbox.stats()["messages"]["accepted"])


# -- the group's commits ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Commit:
    """One offset commit as the group coordinator stored it in ``__consumer_offsets``."""

    ts_ms: int  # when the coordinator wrote it (broker clock = this machine's clock)
    partition: int
    offset: int


def _str16(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    return buf[pos : pos + n].decode(), pos + n


def commit_history(bootstrap: str, group: str, topic: str, timeout: float = 30) -> list[Commit]:
    """Every offset commit of ``group`` for ``topic``, in the order the coordinator wrote them.

    Read from ``__consumer_offsets`` itself, so no commit is missed between two samples.
    Offset-commit keys are versions 0/1 (group, topic, partition); every value version
    (0 to 4) starts with the int16 version and the int64 offset.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"history-{time.time_ns()}",
            "enable.auto.commit": False,
            "check.crcs": False,
            "isolation.level": "read_uncommitted",  # others' open transactions must not block
        }
    )
    internal = "__consumer_offsets"
    try:
        meta = consumer.list_topics(internal, timeout=10).topics[internal]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(internal, p), timeout=10)[1]
            for p in meta.partitions
        }
        todo = {p for p, high in ends.items() if high > 0}
        consumer.assign([TopicPartition(internal, p, 0) for p in todo])
        out: list[tuple[int, int, Commit]] = []
        deadline = time.monotonic() + timeout
        while todo:
            assert time.monotonic() < deadline, f"__consumer_offsets not read within {timeout}s"
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                key, value = msg.key() or b"", msg.value()
                if len(key) < 2 or struct.unpack_from(">h", key)[0] not in (0, 1):
                    continue
                g, pos = _str16(key, 2)
                if g != group:
                    continue
                t, pos = _str16(key, pos)
                if t != topic or value is None:
                    continue
                (partition,) = struct.unpack_from(">i", key, pos)
                (offset,) = struct.unpack_from(">q", value, 2)
                commit = Commit(msg.timestamp()[1], partition, offset)
                out.append((msg.partition() or 0, msg.offset() or 0, commit))
            # By position, not by the last record seen: transaction markers are never returned.
            positions = consumer.position([TopicPartition(internal, p) for p in todo])
            todo -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
    finally:
        consumer.close()
    return [c for _, _, c in sorted(out, key=lambda x: (x[0], x[1]))]


@dataclass(slots=True)
class Ownership:
    """When one worker owned one partition, from its own log lines (epoch ms)."""

    worker: str
    partition: int
    start_ms: float
    end_ms: float | None = None  # None: still owned at the worker's last log line
    committed_at_start: int | None = None

    def contains(self, ts_ms: float, slack_ms: float) -> bool:
        end = float("inf") if self.end_ms is None else self.end_ms
        return self.start_ms - slack_ms <= ts_ms <= end + slack_ms


def _tp(text: str) -> tuple[str, int, int | None]:
    """'topic[3]@120' or 'topic[3]' -> (topic, 3, 120 | None)."""
    head, _, at = text.partition("@")
    topic, _, rest = head.rpartition("[")
    committed = None if at in ("", "None") else int(at)
    return topic, int(rest.rstrip("]")), committed


def ownership(worker_name: str, source: WorkerProcess | Path, topic: str) -> list[Ownership]:
    """The partitions of ``topic`` this worker owned, and when (from partitions_* lines)."""
    open_: dict[int, Ownership] = {}
    done: list[Ownership] = []
    for e in log_events(source):
        kind = e["event"]
        if kind not in ("partitions_assigned", "partitions_revoked", "partitions_lost"):
            continue
        for text in e.get("partitions", []):
            t, p, committed_offset = _tp(text)
            if t != topic:
                continue
            if kind == "partitions_assigned":
                assert p not in open_, f"{worker_name}: {text} assigned twice without a revoke"
                open_[p] = Ownership(worker_name, p, timestamp_ms(e), None, committed_offset)
            else:
                own = open_.pop(p, None)
                assert own is not None, f"{worker_name}: {kind} {text} that it did not own"
                own.end_ms = timestamp_ms(e)
                done.append(own)
    return done + list(open_.values())


def commits_outside_ownership(source: WorkerProcess | Path, topic: str) -> tuple[int, list[str]]:
    """Check the worker's own ``committed`` log lines against its own ownership, in program
    order: (commit lines checked, offending entries). A commit made inside on_revoke is logged
    before that ``partitions_revoked`` line, so it counts as owned.

    Expects ``{"event": "committed", "partitions": ["topic[p]@offset", ...]}``; the worker does
    not log it yet (requested), so until then this checks nothing and returns (0, []).
    """
    owned: set[int] = set()
    checked = 0
    bad: list[str] = []
    kinds = ("partitions_assigned", "partitions_revoked", "partitions_lost", "committed")
    for e in log_events(source):
        kind = e["event"]
        if kind not in kinds or not isinstance(e.get("partitions"), list):
            continue
        mine = {p for t, p, _ in map(_tp, e["partitions"]) if t == topic}
        if kind == "partitions_assigned":
            owned |= mine
        elif kind in ("partitions_revoked", "partitions_lost"):
            owned -= mine
        elif kind == "committed" and mine:
            checked += 1
            bad += [f"{topic}[{p}] at {e.get('timestamp')}" for p in sorted(mine - owned)]
    return checked, bad
