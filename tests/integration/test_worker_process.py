"""The worker as a child process (``python -m worker run``): SIGKILL, rebalance, SIGTERM under
load, and the DLQ guard across restarts. Real broker, real AEP sandbox, no mocks.

Each test checks the principles of DESIGN.md section 1 from the outside: what reached the
sandbox, what reached the dead-letter topic, and what the group committed (read back from the
broker, including the full commit history in ``__consumer_offsets``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fixture_events import valid_events
from tests.integration.process_helpers import (
    TENANT,
    Commit,
    Ownership,
    Produced,
    SteadyProducer,
    accepted_count,
    commit_history,
    commits_outside_ownership,
    delivered_entities,
    find_events,
    health_port,
    http_get,
    ownership,
    problems,
    produce_tracked,
    tail,
    wait_for_event,
)
from tests.integration.worker_harness import (
    WorkerProcess,
    committed,
    committed_metadata,
    end_offsets,
    read_all,
    settings_dict,
    wait_until,
)
from worker.dlq import header_map
from worker.kafka import GUARD_MARK
from worker.mapping import DEFAULT_FAMILIES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """``start_worker(settings, name, *args)`` -> a running child worker; all killed at the end."""
    started: list[WorkerProcess] = []

    def start(settings: dict[str, Any], name: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{name}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def by_offset(produced: list[Produced]) -> dict[int, dict[int, str]]:
    """partition -> offset -> eventId."""
    out: dict[int, dict[int, str]] = {}
    for p in produced:
        out.setdefault(p.partition, {})[p.offset] = p.event_id
    return out


def assert_committed_is_finished(
    produced: list[Produced], commits: dict[int, int], delivered: set[str], dead: set[str]
) -> int:
    """No loss at a point in time: every record below a partition's committed offset reached
    AEP or the DLQ. Returns how many records that covered."""
    covered = 0
    missing: list[tuple[int, int, str]] = []
    for partition, offsets in by_offset(produced).items():
        upto = commits.get(partition, -1)
        for offset, event_id in offsets.items():
            if offset < upto:
                covered += 1
                if event_id not in delivered and event_id not in dead:
                    missing.append((partition, offset, event_id))
    assert not missing, (
        f"{len(missing)} records below the committed offset never reached AEP or the DLQ, "
        f"e.g. (partition, offset, eventId) {sorted(missing)[:5]}"
    )
    return covered


def assert_duplicates_identical(entities: dict[str, list[dict[str, Any]]]) -> int:
    """A redelivered event is the same record to AEP: same ``_id`` (and same document) per
    target; an event fanned out to N targets has N distinct ``_id``s (SPEC 2.5), never more."""
    duplicates = 0
    for event_id, docs in entities.items():
        by_id: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            by_id.setdefault(doc["_id"], []).append(doc)
        details = docs[0].get(TENANT, {})
        name = details.get("eventName") or details.get("lastEventName")
        assert len(by_id) <= len(DEFAULT_FAMILIES[name]), (
            f"eventId {event_id} reached AEP with more _ids than targets: {sorted(by_id)}"
        )
        for same in by_id.values():
            duplicates += len(same) - 1
            assert all(d == same[0] for d in same), f"eventId {event_id}: redelivery differs"
    return duplicates


def dlq_event_sources(bootstrap: str, dlq: str) -> list[tuple[int, int]]:
    """(source partition, source offset) of every dead letter."""
    out = []
    for msg in read_all(bootstrap, dlq, idle_s=1):
        h = header_map(msg.headers())
        out.append((int(h["source-partition"]), int(h["source-offset"])))
    return out


# --------------------------------------------------------------------------------------------
# 1. SIGKILL mid-stream, restart: nothing lost, duplicates are the same records
# --------------------------------------------------------------------------------------------


def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 3
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    events = valid_events(3000)
    produced = produce_tracked(kafka_bootstrap, topic, events)
    assert len(produced) == len(events)
    all_ids = {e for e, _, _ in events}

    # Slow AEP + small batches: a few hundred records per second, with batches in flight.
    sandbox.set_faults(latency_ms=250)
    settings = settings_dict(
        kafka_bootstrap,
        sandbox,
        topics=[topic],
        group=group,
        dlq_topic=dlq,
        batching={"max_messages": 50, "linger_s": 0.05},
    )
    first = start_worker(settings, "first")
    # Kill once some, not all, are delivered and some offsets are committed.
    wait_until(
        lambda: (
            accepted_count(sandbox) >= 600
            and any(o > 0 for o in committed(kafka_bootstrap, group, topic, partitions).values())
        ),
        timeout=60,
        what="first deliveries and commits",
    )
    first.kill()
    assert first.proc.returncode == -9
    at_kill = committed(kafka_bootstrap, group, topic, partitions)
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    entities = delivered_entities(sandbox)
    assert len(entities) < len(all_ids), "killed too late: everything was already delivered"
    assert any(at_kill[p] < ends[p] for p in range(partitions)), "killed after the last commit"
    # The crash left the committed offsets consistent: everything below them is in AEP.
    covered = assert_committed_is_finished(produced, at_kill, set(entities), set())
    assert covered > 0

    sandbox.set_faults(latency_ms=0)
    second = start_worker(settings, "second", "--exit-when-drained")
    assert second.wait(90) == 0, tail(second)

    entities = delivered_entities(sandbox)
    assert set(entities) == all_ids, (
        f"lost: {len(all_ids - set(entities))}, unexpected: {len(set(entities) - all_ids)}"
    )
    assert_duplicates_identical(entities)
    # The restart resumed from the committed offsets, not from the beginning.
    assigned = wait_for_event(second, "partitions_assigned", 1)
    assert {f"{topic}[{p}]@{at_kill[p]}" for p in range(partitions) if at_kill[p] >= 0} <= set(
        assigned["partitions"]
    )
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert committed(kafka_bootstrap, group, topic, partitions) == ends
    assert problems(second) == [], problems(second)


# --------------------------------------------------------------------------------------------
# 2. Rebalance: a member joins mid-stream, then the first one leaves
# --------------------------------------------------------------------------------------------


def assert_commits_follow_ownership(
    history: list[Commit], owners: list[Ownership], partitions: int
) -> None:
    """From the broker's side: per partition the committed offset never goes back, every
    commit happened while some member owned the partition (by its own log), ownership never
    overlaps, and a new owner starts from the previous owner's last commit."""
    slack_ms = 5  # broker ms timestamps vs. log microseconds, same clock
    for p in range(partitions):
        mine = [c for c in history if c.partition == p]
        assert mine, f"partition {p}: never committed"
        backwards = [(a, b) for a, b in itertools.pairwise(mine) if b.offset < a.offset]
        assert not backwards, f"partition {p}: committed offset went back: {backwards[:3]}"
        spans = sorted((o for o in owners if o.partition == p), key=lambda o: o.start_ms)
        for a, b in itertools.pairwise(spans):
            assert a.end_ms is not None and a.end_ms <= b.start_ms + slack_ms, (
                f"partition {p} owned by {a.worker} and {b.worker} at once",
                a,
                b,
            )
        for c in mine:
            assert any(o.contains(c.ts_ms, slack_ms) for o in spans), (
                f"partition {p}: commit {c} while no member owned it: {spans}"
            )
        for o in spans:
            before = [c for c in mine if c.ts_ms <= o.start_ms + slack_ms]
            if before:
                assert o.committed_at_start == before[-1].offset, (
                    f"partition {p}: {o.worker} started at {o.committed_at_start}, the last "
                    f"commit before was {before[-1]}"
                )


def test_rebalance_join_then_leave_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 4
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    # More than the test needs: the stream runs until both hand-offs are done.
    events = valid_events(8000)
    sandbox.set_faults(latency_ms=100)  # batches in flight at every revocation
    settings = settings_dict(
        kafka_bootstrap,
        sandbox,
        topics=[topic],
        group=group,
        dlq_topic=dlq,
        batching={"max_messages": 50, "linger_s": 0.05},
    )
    producer = SteadyProducer(kafka_bootstrap, topic, events, per_second=120).start()
    a = start_worker(settings, "a")
    wait_until(lambda: accepted_count(sandbox) >= 100, timeout=60, what="A delivering")

    # B joins: the cooperative rebalance moves some partitions from A to B.
    b = start_worker(settings, "b")
    wait_until(
        lambda: any(o.end_ms is None for o in ownership("b", b.log_path, topic)),
        timeout=60,
        what="B owning partitions",
    )
    both_at = accepted_count(sandbox)
    wait_until(
        lambda: accepted_count(sandbox) >= both_at + 300,
        timeout=60,
        what="deliveries with two members",
    )
    a_now = {o.partition for o in ownership("a", a.log_path, topic) if o.end_ms is None}
    b_now = {o.partition for o in ownership("b", b.log_path, topic) if o.end_ms is None}
    assert a_now and b_now and not a_now & b_now, (a_now, b_now)

    # A leaves (SIGTERM) while the stream goes on: B takes over everything.
    assert a.terminate(30) == 0, tail(a)
    wait_until(
        lambda: (
            {o.partition for o in ownership("b", b.log_path, topic) if o.end_ms is None}
            == set(range(partitions))
        ),
        timeout=60,
        what="B owning every partition",
    )
    after_leave = accepted_count(sandbox)
    wait_until(
        lambda: accepted_count(sandbox) >= after_leave + 200,
        timeout=60,
        what="deliveries after A left",
    )
    assert not producer.finished, "the stream ended before both hand-offs were done"
    produced = producer.stop()
    all_ids = {p.event_id for p in produced}
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    wait_until(
        lambda: committed(kafka_bootstrap, group, topic, partitions) == ends,
        timeout=60,
        what="B committing everything",
    )
    assert b.terminate(30) == 0, tail(b)

    entities = delivered_entities(sandbox)
    assert set(entities) == all_ids, (
        f"lost: {len(all_ids - set(entities))}, unexpected: {len(set(entities) - all_ids)}"
    )
    # Graceful hand-offs (revocation and SIGTERM both drain, then commit) redeliver nothing.
    assert assert_duplicates_identical(entities) == 0
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert committed(kafka_bootstrap, group, topic, partitions) == ends
    owners = ownership("a", a.log_path, topic) + ownership("b", b.log_path, topic)
    history = commit_history(kafka_bootstrap, group, topic)
    assert_commits_follow_ownership(history, owners, partitions)
    for worker in (a, b):  # exact, from each worker's own log, once it logs its commits
        _, outside = commits_outside_ownership(worker, topic)
        assert not outside, f"committed partitions it did not own: {outside[:5]}"
    assert problems(a) == [] and problems(b) == [], problems(a) + problems(b)


# --------------------------------------------------------------------------------------------
# 3. SIGTERM under load: exit 0 within the drain deadline, commits only what is finished
# --------------------------------------------------------------------------------------------


def test_sigterm_under_load_drains_commits_finished_and_exits_zero(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 3
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    events = valid_events(4000)
    produced = produce_tracked(kafka_bootstrap, topic, events)
    all_ids = {e for e, _, _ in events}

    # ~300 records/s: the backlog cannot drain within the deadline, so the worker must cut
    # its in-flight work short and commit only the contiguous finished prefix.
    drain_timeout = 4.0
    sandbox.set_faults(latency_ms=600)
    settings = settings_dict(
        kafka_bootstrap,
        sandbox,
        topics=[topic],
        group=group,
        dlq_topic=dlq,
        batching={"max_messages": 50, "linger_s": 0.05},
        shutdown={"drain_timeout_s": drain_timeout, "revoke_drain_timeout_s": 2},
    )
    first = start_worker(settings, "first")
    wait_until(lambda: accepted_count(sandbox) >= 300, timeout=60, what="first deliveries")
    started = time.monotonic()
    code = first.terminate(timeout=drain_timeout + 30)
    took = time.monotonic() - started
    assert code == 0, tail(first)
    # drain deadline + DLQ flush (>= 1 s) + final commit + leaving the group, on 2 busy cores
    assert took < drain_timeout + 8, f"exit took {took:.1f}s (drain deadline {drain_timeout}s)"
    shutdown = wait_for_event(first, "shutdown", 1)
    assert shutdown["undelivered_batches"] > 0 or shutdown["unfinished_records"] > 0, (
        "the backlog drained within the deadline: the test did not cut work short",
        shutdown,
    )

    at_stop = committed(kafka_bootstrap, group, topic, partitions)
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    entities = delivered_entities(sandbox)
    covered = assert_committed_is_finished(produced, at_stop, set(entities), set())
    assert covered > 0, f"nothing committed: {at_stop}"
    assert any(at_stop[p] < ends[p] for p in range(partitions)), "nothing left for the next run"
    assert problems(first) == [], problems(first)

    sandbox.set_faults(latency_ms=0)
    second = start_worker(settings, "second", "--exit-when-drained")
    assert second.wait(90) == 0, tail(second)
    entities = delivered_entities(sandbox)
    assert set(entities) == all_ids, (
        f"lost: {len(all_ids - set(entities))}, unexpected: {len(set(entities) - all_ids)}"
    )
    assert_duplicates_identical(entities)
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert committed(kafka_bootstrap, group, topic, partitions) == ends
    assert problems(second) == [], problems(second)


# --------------------------------------------------------------------------------------------
# 4. DLQ guard: trips and stays up, the trip survives a restart, the operator's reset resumes
# --------------------------------------------------------------------------------------------

STRICT_GUARD = {"max_consecutive": 20, "min_records": 10, "window": 50, "max_invalid_ratio": 0.5}
# The operator's "fix": thresholds that this input can never trip.
RAISED_GUARD = {
    "max_consecutive": 100_000,
    "min_records": 10,
    "window": 50,
    "max_invalid_ratio": 1.0,
}


def guard_state(
    bootstrap: str, group: str, topic: str, partitions: int
) -> tuple[dict[int, int], dict[int, str]]:
    return (
        committed(bootstrap, group, topic, partitions),
        committed_metadata(bootstrap, group, topic, partitions),
    )


def assert_not_ready_for_guard(worker: WorkerProcess) -> None:
    port = health_port(worker)
    status, body = http_get(port, "/readyz")
    assert status == 503 and "DLQ guard" in body["reason"], (status, body)
    status, body = http_get(port, "/livez")
    assert status == 200, (status, body)


def test_dlq_guard_trip_survives_restart_until_operator_reset(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 1
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    # 3 valid events, then 100 undecodable records (a bad upstream deploy).
    valid = produce_tracked(kafka_bootstrap, topic, valid_events(3))
    poison = produce_tracked(kafka_bootstrap, topic, (("", b"k", b"not json") for _ in range(100)))
    poison_at = {(r.partition, r.offset) for r in poison}

    def settings(guard: dict[str, Any]) -> dict[str, Any]:
        return settings_dict(
            kafka_bootstrap,
            sandbox,
            topics=[topic],
            group=group,
            dlq_topic=dlq,
            dlq_guard=guard,
        )

    # -- run 1: the guard trips; the worker stays up, not ready, and commits nothing past it
    first = start_worker(settings(STRICT_GUARD), "first")
    trip = wait_for_event(first, "dlq_guard_tripped", 60)
    assert trip["level"] == "critical"
    at_topic, _, at_offset = trip["at"].rpartition("@")
    trip_partition, trip_offset = int(at_topic.rpartition("[")[2].rstrip("]")), int(at_offset)
    assert (trip_partition, trip_offset) in poison_at
    wait_until(
        lambda: all(
            m.startswith(GUARD_MARK)
            for m in committed_metadata(kafka_bootstrap, group, topic, partitions).values()
        ),
        timeout=30,
        what="the trip mark on every partition's committed offset",
    )
    time.sleep(2)  # time to misbehave: dead-letter more, commit further, exit
    assert first.alive(), tail(first)
    assert_not_ready_for_guard(first)
    dead = dlq_event_sources(kafka_bootstrap, dlq)
    assert 0 < len(dead) <= STRICT_GUARD["max_consecutive"], len(dead)
    assert set(dead) <= poison_at
    offsets, _ = guard_state(kafka_bootstrap, group, topic, partitions)
    assert offsets[trip_partition] <= trip_offset, (offsets, trip["at"])
    delivered = set(delivered_entities(sandbox))
    dead_ids = {f"dead-{p}-{o}" for p, o in dead}
    tagged = valid + [
        Produced(f"dead-{r.partition}-{r.offset}", r.partition, r.offset) for r in poison
    ]
    assert_committed_is_finished(tagged, offsets, delivered, dead_ids)
    assert first.terminate(30) == 0, tail(first)
    offsets_1, meta_1 = guard_state(kafka_bootstrap, group, topic, partitions)
    assert offsets_1 == offsets and all(m.startswith(GUARD_MARK) for m in meta_1.values()), (
        offsets_1,
        meta_1,
    )

    # New valid events arrive behind the poison.
    valid_later = produce_tracked(kafka_bootstrap, topic, valid_events(20))
    accepted_before = accepted_count(sandbox)

    # -- run 2: raised thresholds but no reset flag: the mark keeps the worker stopped
    second = start_worker(settings(RAISED_GUARD), "second")
    wait_for_event(second, "dlq_guard_tripped", 60)
    time.sleep(3)
    assert second.alive(), tail(second)
    assert_not_ready_for_guard(second)
    assert len(dlq_event_sources(kafka_bootstrap, dlq)) == len(dead), "dead-lettered after restart"
    assert accepted_count(sandbox) == accepted_before, "delivered while the guard was tripped"
    assert guard_state(kafka_bootstrap, group, topic, partitions) == (offsets_1, meta_1)
    assert second.terminate(30) == 0, tail(second)
    assert guard_state(kafka_bootstrap, group, topic, partitions) == (offsets_1, meta_1)

    # -- run 3: the operator's reset: dead-letters the rest of the poison, delivers the rest
    third = start_worker(
        settings(RAISED_GUARD), "third", "--reset-dlq-guard", "--exit-when-drained"
    )
    assert third.wait(90) == 0, tail(third)
    assert len(find_events(third, "dlq_guard_reset")) == partitions  # one per marked partition
    assert find_events(third, "dlq_guard_tripped") == []
    dead = dlq_event_sources(kafka_bootstrap, dlq)
    assert sorted(dead) == sorted(poison_at), "every poison record dead-lettered exactly once"
    delivered = set(delivered_entities(sandbox))
    assert delivered == {r.event_id for r in valid + valid_later}
    offsets_3, meta_3 = guard_state(kafka_bootstrap, group, topic, partitions)
    assert offsets_3 == end_offsets(kafka_bootstrap, topic, partitions)
    assert meta_3 == dict.fromkeys(range(partitions), ""), "the trip mark was not cleared"


def marked(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, bool]:
    meta = committed_metadata(bootstrap, group, topic, partitions)
    return {p: m.startswith(GUARD_MARK) for p, m in meta.items()}


def test_dlq_guard_trip_mark_reaches_every_owned_partition(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 3
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()  # a new group: no committed offsets yet
    produce_tracked(
        kafka_bootstrap, topic, (("", b"k", b"not json") for _ in range(40)), partition=0
    )
    settings = settings_dict(
        kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq, dlq_guard=STRICT_GUARD
    )
    worker = start_worker(settings, "worker")
    trip = wait_for_event(worker, "dlq_guard_tripped", 60)
    assert trip["at"].startswith(f"{topic}[0]@")
    # The bad deploy goes on: poison reaches partition 1 after the trip (consumed, skipped).
    produce_tracked(
        kafka_bootstrap, topic, (("", b"k", b"not json") for _ in range(20)), partition=1
    )
    wait_until(
        lambda: marked(kafka_bootstrap, group, topic, partitions)[0],
        timeout=30,
        what="the trip mark on partition 0",
    )
    # "the trip mark must reach every owned partition, moved or not" (pipeline.py)
    wait_until(
        lambda: all(marked(kafka_bootstrap, group, topic, partitions).values()),
        timeout=5,
        what="the trip mark on every owned partition",
    )
    assert worker.terminate(30) == 0, tail(worker)
    assert all(marked(kafka_bootstrap, group, topic, partitions).values())


def test_dlq_guard_reset_clears_the_mark_on_idle_partitions(
    kafka_bootstrap: str,
    kafka_topic: Any,
    kafka_names: Any,
    sandbox: Any,
    start_worker: StartWorker,
) -> None:
    partitions = 2
    topic = kafka_topic("in", partitions=partitions)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    ids: set[str] = set()
    for p in range(partitions):  # normal traffic first: both partitions have commits
        ids |= {
            r.event_id
            for r in produce_tracked(kafka_bootstrap, topic, valid_events(5), partition=p)
        }

    def settings(guard: dict[str, Any]) -> dict[str, Any]:
        return settings_dict(
            kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq, dlq_guard=guard
        )

    warmup = start_worker(settings(STRICT_GUARD), "warmup", "--exit-when-drained")
    assert warmup.wait(60) == 0, tail(warmup)
    # A bad deploy upstream poisons partition 0 only; the guard trips, both get the mark.
    produce_tracked(
        kafka_bootstrap, topic, (("", b"k", b"not json") for _ in range(40)), partition=0
    )
    tripped = start_worker(settings(STRICT_GUARD), "tripped")
    wait_for_event(tripped, "dlq_guard_tripped", 60)
    wait_until(
        lambda: all(marked(kafka_bootstrap, group, topic, partitions).values()),
        timeout=30,
        what="the trip mark on both partitions",
    )
    assert tripped.terminate(30) == 0, tail(tripped)

    # The operator's reset, once (partition 1 sees no new records meanwhile).
    reset = start_worker(
        settings(RAISED_GUARD), "reset", "--reset-dlq-guard", "--exit-when-drained"
    )
    assert reset.wait(60) == 0, tail(reset)

    # Later, an ordinary restart (a deploy) with new valid traffic must just work.
    later = {
        r.event_id for r in produce_tracked(kafka_bootstrap, topic, valid_events(10), partition=0)
    }
    ordinary = start_worker(settings(RAISED_GUARD), "ordinary", "--exit-when-drained")
    wait_until(
        lambda: not ordinary.alive() or find_events(ordinary, "dlq_guard_tripped"),
        timeout=60,
        what="the ordinary restart to drain",
    )
    assert find_events(ordinary, "dlq_guard_tripped") == [], (
        "the guard tripped again after the operator's reset",
        committed_metadata(kafka_bootstrap, group, topic, partitions),
    )
    assert ordinary.wait(10) == 0, tail(ordinary)
    assert ids | later <= set(delivered_entities(sandbox))
    assert not any(marked(kafka_bootstrap, group, topic, partitions).values())
