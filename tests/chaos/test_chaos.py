"""Fault injection against the real broker and the AEP sandbox: what the worker survives.

Ten scenarios (issue #7), each on its own topics and group, the worker always a child process
(``python -m worker run``). Every produced record is booked with its expected outcome and
checked by eventId (or source offset) against what the sandbox stored, what the dead-letter
topic holds and what the group committed. ``make test`` runs the short sizes; ``make chaos``
(``CHAOS_FULL=1``) the full ones and writes the README table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.chaos.conftest import SIZES
from tests.chaos.ledger import Expect
from tests.chaos.poison import corpus
from tests.chaos.scenario import (
    BIG_TOPIC,
    Scenario,
    metric,
    wait_for,
)
from tests.chaos.sizes import Sizes
from tests.integration.process_helpers import (
    SteadyProducer,
    accepted_count,
    find_events,
    health_port,
    http_get,
    tail,
    wait_for_event,
)
from tests.integration.worker_harness import PROFILE_SCHEMA, WorkerProcess, routes_for
from worker.tools.samples import Sample

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(SIZES.timeout_s)]

NewScenario = Callable[..., Scenario]
BIG_SANDBOX = {"max_records_per_dataset": 1_000_000}


def steady(s: Scenario, samples: list[Sample], seconds: float) -> SteadyProducer:
    """Produce ``samples`` evenly over about ``seconds`` from a background thread."""
    records = [(x.event_id, x.key, x.value) for x in samples]
    return SteadyProducer(s.bootstrap, s.topic, records, per_second=len(records) / seconds).start()


def finish_stream(s: Scenario, producer: SteadyProducer, samples: list[Sample], timeout: float) -> None:
    """Wait for the producer, book what it produced, wait until the group committed it all."""
    wait_for(lambda: producer.finished, timeout, "the producer")
    s.book(producer.stop(), Scenario.expectations(samples))
    wait_for(s.all_committed, timeout, "every record committed")



# --------------------------------------------------------------------------------------------
# 1. Crash loop: SIGKILL at random moments, restart each time
# --------------------------------------------------------------------------------------------


def test_crash_loop(scenario: NewScenario, sandbox_factory: Any, sizes: Sizes) -> None:
    sandbox = sandbox_factory(**BIG_SANDBOX)
    s = scenario("crash-loop", sandbox, partitions=4)
    samples = s.samples(sizes.crash_events, seed=101, invalid_share=0.01)
    # Traffic flows all through the crash loop, AEP answers a little slowly so batches are in
    # flight at every kill; static membership so a restarted worker takes its partitions back
    # at once instead of after a session timeout.
    sandbox.set_faults(latency_ms=sizes.crash_latency_ms)
    settings = s.settings(kafka={"group_instance_id": "crash-loop-worker"})
    lives = sizes.crash_kills * (sum(sizes.crash_life_s) / 2 + 3)  # + ~3 s to start up
    # 90% over the expected length of the loop; the last 10% only after the last kill, so the
    # stream outlasts the loop however slowly the workers start on a loaded host.
    cut = len(samples) * 9 // 10
    first = steady(s, samples[:cut], seconds=lives)
    rng = random.Random(7)
    at_kills = []  # (committed, produced but not committed) at each kill
    for i in range(sizes.crash_kills):
        worker = s.start(settings, f"life-{i}")
        wait_for_event(worker, "partitions_assigned", 90)  # then a random moment of its work
        time.sleep(rng.uniform(*sizes.crash_life_s))
        assert worker.alive(), f"life {i} exited on its own:\n{tail(worker)}"
        worker.kill()
        assert worker.proc.returncode == -9
        done = sum(max(c, 0) for c in s.committed().values())
        at_kills.append((done, first.sent - done))
    busy = sum(1 for _, pending in at_kills if pending > 0)
    assert busy * 2 >= len(at_kills), f"most kills found nothing in flight: {at_kills}"
    assert at_kills[-1][0] > 0, "no life committed anything: the kills came too early"
    s.note(
        f"{sizes.crash_kills} SIGKILLs while producing, {busy} with records in flight; "
        f"committed {at_kills[0][0]:,} at the first, {at_kills[-1][0]:,} at the last"
    )
    sandbox.set_faults(latency_ms=0)
    rest = steady(s, samples[cut:], seconds=max(lives / 10, 1))
    final = s.start(settings, "final")
    finish_stream(s, first, samples, sizes.timeout_s / 2)
    finish_stream(s, rest, samples, sizes.timeout_s / 2)
    assert final.terminate(60) == 0, tail(final)
    s.finish()


# --------------------------------------------------------------------------------------------
# 2. AEP faults: 503s, 429s with Retry-After, resets, latency spikes, per-message 400 and 500
# --------------------------------------------------------------------------------------------


def test_aep_faults(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("aep-faults", sandbox)
    samples = s.samples(sizes.fault_events, seed=202)
    rejected = [x.event_id for x in samples[7::100]]  # a known 1% that AEP rejects (400)
    broken = [x.event_id for x in samples[13::max(len(samples) // 5, 1)]]  # always 500
    expect = {e: Expect("dlq", "aep-400", "deliver") for e in rejected}
    expect |= {e: Expect("dlq", "aep-500", "deliver") for e in broken}
    s.produce_these(samples, expect)
    sandbox.set_faults(
        seed=7, share_503=0.10, share_429=0.03, retry_after_seconds=1, reset_share=0.02,
        latency_spike_ms=1000, latency_spike_share=0.03,
        message_faults=[{"contains": e, "status": 400, "times": None} for e in rejected]
        + [{"contains": e, "status": 500, "times": None} for e in broken],
    )
    # Small batches: enough requests for every share to come up.
    settings = s.settings(batching={"max_messages": 20, "linger_s": 0.05})
    s.drain(settings, "worker", timeout=sizes.timeout_s / 2)
    injected = sandbox.stats()["faults_injected"]
    s.note("injected " + ", ".join(f"{k}: {v}" for k, v in sorted(injected.items())))
    for kind in ("503", "429", "reset", "message_400", "message_500"):
        assert injected.get(kind, 0) > 0, f"no {kind} was injected: {injected}"
    s.finish()


# --------------------------------------------------------------------------------------------
# 3. AEP outage: the sandbox stopped mid-stream, then started again
# --------------------------------------------------------------------------------------------


def test_aep_outage(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("aep-outage", sandbox)
    samples = s.samples(sizes.outage_events, seed=303)
    worker = s.start(s.settings(), "worker")
    producer = steady(s, samples, seconds=sizes.outage_s * 2 + 5)
    wait_for(lambda: accepted_count(sandbox) >= len(samples) // 10, 60, "first deliveries")
    sandbox.stop()
    down_at = time.monotonic()
    time.sleep(sizes.outage_s)
    assert worker.alive(), tail(worker)
    sandbox.start()
    s.note(f"AEP down {time.monotonic() - down_at:.0f} s")
    finish_stream(s, producer, samples, sizes.timeout_s / 2)
    assert worker.terminate(30) == 0, tail(worker)
    s.finish()


# --------------------------------------------------------------------------------------------
# 4. Broker restart: Kafka stopped (SIGTERM) mid-stream, restarted on the same data
# --------------------------------------------------------------------------------------------


def test_broker_restart(
    scenario: NewScenario, sandbox: Any, sizes: Sizes, kafka_broker: Any
) -> None:
    if kafka_broker is None:
        pytest.skip("needs the local session broker (KAFKA_BOOTSTRAP_SERVERS is set)")
    s = scenario("broker-restart", sandbox)
    samples = s.samples(sizes.broker_events, seed=404)
    worker = s.start(s.settings(), "worker")
    producer = steady(s, samples, seconds=sizes.broker_down_s * 2 + 15)
    wait_for(lambda: accepted_count(sandbox) >= len(samples) // 10, 60, "first deliveries")
    started = time.monotonic()
    kafka_broker.stop()
    time.sleep(sizes.broker_down_s)
    kafka_broker.start()
    s.note(f"broker down {time.monotonic() - started:.0f} s (stop, wait, start)")
    assert worker.alive(), tail(worker)
    # The group coordinator reloads its offsets after the restart; on a loaded host that alone
    # can take a minute, so this wait gets the scenario's whole budget.
    finish_stream(s, producer, samples, sizes.timeout_s)
    assert worker.terminate(30) == 0, tail(worker)
    s.finish()


# --------------------------------------------------------------------------------------------
# 5. Auth churn: short-lived tokens and a burst of 403s
# --------------------------------------------------------------------------------------------


def test_auth_churn(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("auth-churn", sandbox)
    samples = s.samples(sizes.auth_events, seed=505)
    sandbox.set_token_lifetime(sizes.token_lifetime_s)
    seconds = sizes.token_lifetime_s * 4 + 4
    worker = s.start(s.settings(), "worker")
    producer = steady(s, samples, seconds=seconds)
    wait_for(lambda: accepted_count(sandbox) >= len(samples) // 2, seconds * 2, "half delivered")
    sandbox.set_faults(auth_403_next=sizes.auth_403_burst)
    finish_stream(s, producer, samples, sizes.timeout_s / 2)
    assert worker.terminate(30) == 0, tail(worker)
    stats = sandbox.stats()
    tokens = stats["ims"]["tokens_issued"]
    assert stats["faults_injected"].get("auth_403", 0) == sizes.auth_403_burst, stats
    assert tokens >= 4, f"only {tokens} tokens for a {seconds:.0f}s stream"
    s.note(
        f"token lifetime {sizes.token_lifetime_s:g} s, {tokens} tokens issued, "
        f"a burst of {sizes.auth_403_burst} 403s"
    )
    s.finish()


# --------------------------------------------------------------------------------------------
# 6. Poison corpus: each dead-lettered (or filtered) with a precise reason, no slowdown
# --------------------------------------------------------------------------------------------


def test_poison_corpus(scenario: NewScenario, sandbox_factory: Any, sizes: Sizes) -> None:
    # The same valid events without poison, on their own topic, group and sandbox: the pace
    # to compare with (same machine, same moment).
    base_sandbox, poison_sandbox = sandbox_factory(), sandbox_factory()
    base = scenario("poison-baseline", base_sandbox, partitions=2, topic_config=BIG_TOPIC)
    samples = base.samples(sizes.poison_valid, seed=606)
    base.produce_these(samples)
    base.drain(base.settings(), "worker", timeout=sizes.timeout_s / 3)
    s = scenario("poison-corpus", poison_sandbox, partitions=2, topic_config=BIG_TOPIC)
    poison = [p for r in range(sizes.poison_rounds) for p in corpus(r)]
    expect = Scenario.expectations(samples) | {label: e for label, _, _, e in poison}
    every = max(len(samples) // (len(poison) + 1), 1)
    records: list[tuple[str, bytes | None, bytes | None]] = []
    for i, sample in enumerate(samples):
        records.append((sample.event_id, sample.key, sample.value))
        if i % every == every - 1 and poison:
            label, key, value, _ = poison.pop(0)
            records.append((label, key, value))
    s.produce(records, expect)
    assert not poison, "corpus not fully produced"
    s.drain(s.settings(), "worker", timeout=sizes.timeout_s / 3)
    # The pace of the valid events: from AEP's first receipt to its last, with and without
    # the poison among them.
    with_poison, baseline = delivery_span(poison_sandbox), delivery_span(base_sandbox)
    s.note(f"valid events delivered in {with_poison:.2f} s vs {baseline:.2f} s without poison")
    outcome = s.finish()
    assert outcome.filtered == sizes.poison_rounds  # the tombstones
    seen = s.observe()
    for where, entry in s.ledger.entries.items():
        if entry.label.endswith("-2mb"):  # the DLQ takes what the input takes: kept whole
            assert "payload-truncated" not in seen.dead[where][0], seen.dead[where][0]
    assert with_poison <= baseline * 1.5 + 1, f"poison slowed the stream: {with_poison} vs {baseline}"


def delivery_span(sandbox: Any) -> float:
    """Seconds between the first and the last record the sandbox accepted."""
    times = [
        r["receivedTimeMs"] for ds in sandbox.stats()["datasets"]
        for r in sandbox.records(ds, limit=10_000_000)
    ]
    return (max(times) - min(times)) / 1000 if times else 0.0


# --------------------------------------------------------------------------------------------
# 7. DLQ unavailable: a produce ACL denies the dead-letter topic while poison arrives
# --------------------------------------------------------------------------------------------


def _dlq_acls(dlq: str) -> list[AclBinding]:
    def acl(op: Any, perm: Any) -> AclBinding:
        return AclBinding(ResourceType.TOPIC, dlq, ResourcePatternType.LITERAL, "User:alice", "*",
                          op, perm)

    # Only the write is denied: once a topic has an ACL, everything else must be allowed.
    return [
        acl(AclOperation.WRITE, AclPermissionType.DENY),
        acl(AclOperation.DESCRIBE, AclPermissionType.ALLOW),
        acl(AclOperation.DESCRIBE_CONFIGS, AclPermissionType.ALLOW),
    ]


def test_dlq_unavailable(
    scenario: NewScenario, sandbox: Any, sizes: Sizes, kafka_sasl: Any
) -> None:
    s = scenario("dlq-unavailable", sandbox)
    admin = AdminClient(kafka_sasl.client_config("admin"))
    settings = s.settings(kafka={
        "bootstrap_servers": kafka_sasl.bootstrap_servers, "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN", "sasl_username": "alice", "sasl_password": "alice-secret",
    })
    first = s.samples(sizes.dlq_events // 3, seed=707)
    s.produce_these(first)
    worker = s.start(settings, "worker")
    wait_for(lambda: accepted_count(sandbox) >= len(first), 60, "the valid head delivered")
    acls = _dlq_acls(s.dlq)
    for fut in admin.create_acls(acls).values():
        fut.result(30)
    time.sleep(1)  # the authorizer applies ACLs from the metadata log
    rest = s.samples(sizes.dlq_events - len(first), seed=708, invalid_share=0.05)
    produced = s.produce_these(rest)
    bad = {x.event_id for x in rest if not x.valid}
    first_poison: dict[int, int] = {}
    for p in produced:
        if p.event_id in bad:
            first_poison[p.partition] = min(first_poison.get(p.partition, p.offset), p.offset)
    wait_for_event(worker, "dlq_unavailable", 60)
    port = health_port(worker)
    wait_for(lambda: metric(port, "capaep_paused", reason="dlq-unavailable") == 1.0, 30,
             "the worker pausing for the DLQ")
    time.sleep(sizes.dlq_down_s)  # many commit intervals while the DLQ refuses writes
    status, body = http_get(port, "/readyz")
    assert status == 503 and "dead-letter" in body["reason"], (status, body)
    held = s.committed()
    for partition, offset in first_poison.items():
        assert held[partition] <= offset, (
            f"committed {held[partition]} past the unwritten dead letter at "
            f"[{partition}]@{offset}"
        )
    assert s.observe().dead == {}, "dead letters written while the ACL denies it"
    for fut in admin.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, s.dlq, ResourcePatternType.LITERAL, "User:alice", "*",
        AclOperation.ANY, AclPermissionType.ANY,
    )]).values():
        fut.result(30)
    wait_for(s.all_committed, sizes.timeout_s / 2, "everything completed after the DLQ returned")
    assert find_events(worker, "dlq_available_again"), tail(worker)
    assert worker.terminate(30) == 0, tail(worker)
    s.note(f"DLQ write denied ~{sizes.dlq_down_s:.0f} s while {len(bad)} poison records arrived")
    s.finish()


# --------------------------------------------------------------------------------------------
# 8. Rebalance storm: three workers in one group, one joining or leaving every few seconds
# --------------------------------------------------------------------------------------------


def leave(worker: WorkerProcess) -> None:
    """SIGTERM a member: it drains, commits, leaves the group and exits 0. (One still starting
    up is not a member yet: a SIGTERM before its handlers exist just ends the process.)"""
    wait_for_event(worker, "worker_started", 90)
    code = worker.terminate(60)
    assert code == 0, f"left with {code}:\n{tail(worker)}"


def test_rebalance_storm(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("rebalance-storm", sandbox, partitions=6)
    samples = s.samples(sizes.storm_events, seed=808, invalid_share=0.01)
    sandbox.set_faults(latency_ms=20)  # batches in flight at every revocation
    settings = s.settings(batching={"max_messages": 100, "linger_s": 0.05})
    mean = sum(sizes.storm_interval_s) / 2
    producer = steady(s, samples, seconds=sizes.storm_changes * mean)
    running = {slot: s.start(settings, f"{slot}-0") for slot in ("a", "b", "c")}
    started = {slot: 1 for slot in running}
    rng = random.Random(8)
    joins = leaves = 0
    for _ in range(sizes.storm_changes):
        time.sleep(rng.uniform(*sizes.storm_interval_s))
        up = [slot for slot, w in running.items() if w is not None]
        down = [slot for slot, w in running.items() if w is None]
        if down and (len(up) == 1 or rng.random() < 0.5):
            slot = rng.choice(down)
            running[slot] = s.start(settings, f"{slot}-{started[slot]}")
            started[slot] += 1
            joins += 1
        else:
            slot = rng.choice(up)
            worker = running[slot]
            assert worker is not None
            leave(worker)
            running[slot] = None
            leaves += 1
    s.note(f"{joins} joins, {leaves} leaves")
    finish_stream(s, producer, samples, sizes.timeout_s / 2)
    for worker in running.values():
        if worker is not None:
            leave(worker)
    # A SIGTERM during a rebalance gets its final commit refused; the worker then serves the
    # group (partitions paused) until the commit goes through. A commit still lost on close
    # (on_revoke_failed / final_commit_failed, errors) fails the scenario.
    recovered = [e for w in s.workers for e in find_events(w, "final_commit_after_rebalance")]
    if recovered:
        s.note(f"{len(recovered)} final commits refused mid-rebalance, then made after it")
    failed = [e for w in s.workers for e in find_events(w, "final_commit_failed")]
    assert not failed, f"final commits lost on close: {failed[:3]}"
    s.finish()


# --------------------------------------------------------------------------------------------
# 9. Graceful stop under load: SIGTERM at full throughput
# --------------------------------------------------------------------------------------------


def test_graceful_stop_under_load(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("graceful-stop", sandbox)
    s.produce_samples(sizes.sigterm_events, seed=90, invalid_share=0.01)
    # A deadline shorter than the backlog in flight: the stop must cut work short and
    # commit only the finished prefix of each partition.
    drain_s = sizes.sigterm_drain_s
    sandbox.set_faults(latency_ms=300)  # AEP is the bottleneck: batches queue up in flight
    settings = s.settings(
        shutdown={"drain_timeout_s": drain_s, "revoke_drain_timeout_s": 2},
        batching={"max_messages": 50, "linger_s": 0.05},
        # A fixed in-flight limit: adaptive concurrency would grow until the (rate-budget
        # bounded) work in flight drains within the deadline, and nothing would be cut short.
        delivery={"adaptive": False, "concurrency": 4},
    )
    worker = s.start(settings, "worker")
    wait_for(lambda: accepted_count(sandbox) >= len(s.ledger) // 5, 90, "full throughput")
    t0 = time.monotonic()
    code = worker.terminate(drain_s + 60)
    took = time.monotonic() - t0
    assert code == 0, tail(worker)
    # drain deadline + DLQ flush (>= 1 s) + final commit + leaving the group, on 2 busy cores
    assert took <= drain_s + 8, f"exit took {took:.1f} s (drain deadline {drain_s} s)"
    at_stop = s.committed()
    unfinished = s.ledger.unfinished_below(s.observe(), at_stop)
    assert not unfinished, f"committed past unfinished records: {unfinished[:5]}"
    shutdown = wait_for_event(worker, "shutdown", 1)
    s.note(
        f"SIGTERM at {accepted_count(sandbox)} accepted: exit 0 in {took:.1f} s (drain "
        f"deadline {drain_s:.0f} s), {shutdown['unfinished_records']} records cut short, "
        f"committed {sum(max(c, 0) for c in at_stop.values())} of {len(s.ledger)}"
    )
    assert shutdown["unfinished_records"] > 0, "nothing was in flight: not a stop under load"
    sandbox.set_faults(latency_ms=0)
    s.drain(settings, "restart", timeout=sizes.timeout_s / 2)
    s.finish()


# --------------------------------------------------------------------------------------------
# 10. Bad deploy guard: every record fails; the guard stops it, restarts stay stopped
# --------------------------------------------------------------------------------------------


def test_bad_deploy_guard(scenario: NewScenario, sandbox: Any, sizes: Sizes) -> None:
    s = scenario("bad-deploy-guard", sandbox)
    # Only events of the broken route: the mapping fails for every record.
    s.produce_samples(sizes.guard_events, seed=1010, event_names=("transactionAdded", "pointsIssued"))
    limit = sizes.guard_max_consecutive
    guard = {"max_consecutive": limit, "min_records": limit, "window": max(2 * limit, 10)}
    # The bad deploy: the events route's schema_id points at the profile schema (a copy-paste
    # slip), so every ExperienceEvent fails XDM validation before it is sent.
    bad_routes = routes_for(sandbox)
    bad_routes[0] = {**bad_routes[0], "schema_id": PROFILE_SCHEMA}
    bad = s.settings(routes=bad_routes, dlq_guard=guard)  # type: ignore[arg-type]
    first = s.start(bad, "bad-deploy")
    trip = wait_for_event(first, "dlq_guard_tripped", 60)
    time.sleep(1)  # time to misbehave: dead-letter more, commit further, exit
    assert first.alive(), tail(first)
    status, body = http_get(health_port(first), "/readyz")
    assert status == 503 and "DLQ guard" in body["reason"], (status, body)
    assert first.terminate(30) == 0, tail(first)
    seen = s.observe()
    dead = len(seen.dead)
    assert 0 < dead <= limit, f"{dead} dead letters with the guard set to {limit}"
    assert accepted_count(sandbox) <= len(s.ledger) - dead
    held, delivered = s.committed(), accepted_count(sandbox)
    for restart in (1, 2):  # still the bad deploy: restarts must not resume it
        worker = s.start(bad, f"restart-{restart}")
        wait_for_event(worker, "dlq_guard_tripped", 60)
        time.sleep(1)
        assert worker.alive(), tail(worker)
        assert worker.terminate(30) == 0, tail(worker)
        assert len(s.observe().dead) == dead, f"restart {restart} dead-lettered more"
        assert s.committed() == held and accepted_count(sandbox) == delivered
    # What the guard let through before it tripped stays in the DLQ (for a redrive).
    for where in seen.dead:
        s.ledger.rebook(where, Expect("dlq", stage="validate"))
    # The operator fixes the route and resumes once.
    s.drain(s.settings(dlq_guard=guard), "operator-reset", "--reset-dlq-guard",
            timeout=sizes.timeout_s / 3)
    s.note(f"tripped after {dead} dead letters (limit {limit}) at {trip['at'].rsplit('-', 1)[-1]}; "
           "2 restarts dead-lettered 0; resumed with --reset-dlq-guard")
    s.finish()
