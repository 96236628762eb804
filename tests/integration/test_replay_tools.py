"""``capillary-aep replay`` against the real broker and sandbox: resets, side replay, misuse."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from tests.integration.fixture_events import expected_deliveries, valid_events
from tests.integration.tool_helpers import (
    cli,
    cli_json,
    cli_process,
    commit_group,
    group_offsets,
    now_ms,
    produce_at,
)
from tests.integration.worker_harness import (
    delivered_event_ids,
    make_settings,
    produce,
    read_all,
    run_inline,
    settings_dict,
)
from worker import replay_mark
from worker.dlq import header_map

pytestmark = pytest.mark.integration

HOUR = 3_600_000
EE = "ds-loyalty-events"
PROFILES = ("ds-profile-customer", "ds-profile-tier")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _offsets(bootstrap: str, group: str, topic: str, n: int) -> dict[int, int]:
    return {p: o for p, (o, _) in group_offsets(bootstrap, group, topic, n).items()}


def test_every_reset_mode_dry_run_then_execute(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=3)
    now = now_ms()
    # Each partition: 10 records, record i stamped (10 - i) hours ago.
    produce_at(kafka_bootstrap, topic, [
        (p, now - (10 - i) * HOUR, b"k", b"v%d" % i) for p in range(3) for i in range(10)
    ])
    group = kafka_names.group()
    settings = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=group,
                             dlq_topic=kafka_names.topic("dlq"))
    commit_group(kafka_bootstrap, group, {(topic, p): 6 for p in range(3)})
    steps: list[tuple[list[str], dict[int, int]]] = [
        (["--to-earliest"], {0: 0, 1: 0, 2: 0}),
        (["--to-latest"], {0: 10, 1: 10, 2: 10}),
        (["--to-datetime", iso(now - 7 * HOUR - HOUR // 2)], {0: 3, 1: 3, 2: 3}),
        (["--by-duration", "PT5H30M"], {0: 5, 1: 5, 2: 5}),
        (["--to-offset", "2", "--topic", f"{topic}:1"], {0: 5, 1: 2, 2: 5}),
        (["--shift-by", "-4"], {0: 1, 1: 0, 2: 1}),  # partition 1 clamped to the log start
        (["--shift-by", "100"], {0: 10, 1: 10, 2: 10}),  # clamped to the log end
    ]
    for args, expected in steps:
        before = _offsets(kafka_bootstrap, group, topic, 3)
        plan = cli_json(settings, "replay", *args)
        assert not plan["execute"] and not plan["applied"]
        new = {r["partition"]: r["new"] for r in plan["partitions"]}
        assert new == {p: o for p, o in expected.items() if p in new}, args
        for r in plan["partitions"]:
            assert r["current"] == before[r["partition"]]
            assert r["replays"] == r["current"] - r["new"]
        assert _offsets(kafka_bootstrap, group, topic, 3) == before, f"dry run changed {args}"
        done = cli_json(settings, "replay", *args, "--execute")
        assert done["applied"] or new == {p: before[p] for p in new}
        assert _offsets(kafka_bootstrap, group, topic, 3) == expected, args
        if args == ["--to-earliest"]:
            # replayed offsets [0, 6) skip profile targets: the mark says below 6
            metas = group_offsets(kafka_bootstrap, group, topic, 3)
            assert all(replay_mark.split(m) == ("", 6) for _, m in metas.values()), metas
        if args == ["--to-latest"]:
            metas = group_offsets(kafka_bootstrap, group, topic, 3)
            assert all(m == "" for _, m in metas.values()), "skipping forward clears the mark"
    clamped = cli_json(settings, "replay", "--shift-by", "-50")
    assert all("clamped to the log start" in r["note"] for r in clamped["partitions"])
    # --include-profile: no mark
    cli_json(settings, "replay", "--to-earliest", "--include-profile", "--execute")
    assert all(m == "" for _, m in group_offsets(kafka_bootstrap, group, topic, 3).values())


def test_reset_refused_while_the_group_has_members(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    produce(kafka_bootstrap, topic, [(b"k", b"v")] * 4)
    group = kafka_names.group()
    commit_group(kafka_bootstrap, group, {(topic, 0): 1, (topic, 1): 1})
    settings = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=group,
                             dlq_topic=kafka_names.topic("dlq"))
    member = Consumer({
        "bootstrap.servers": kafka_bootstrap, "group.id": group, "client.id": "worker-7f",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.consume(10, 0.2)
        assert member.assignment()
        for extra in ([], ["--execute"]):
            result = cli(settings, "replay", "--to-earliest", *extra)
            assert result.exit_code == 1, result.stdout
            assert "is active" in result.stderr and "worker-7f" in result.stderr
            assert "autoscaler" in result.stderr and "replicas" in result.stderr
        assert _offsets(kafka_bootstrap, group, topic, 2) == {0: 1, 1: 1}
    finally:
        member.close()


def test_cli_misuse_exits_non_zero_and_changes_nothing(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    produce(kafka_bootstrap, topic, [(b"k", b"v")] * 4)
    group = kafka_names.group()
    commit_group(kafka_bootstrap, group, {(topic, 0): 2, (topic, 1): 2})
    settings = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=group,
                             dlq_topic=kafka_names.topic("dlq"))
    unknown = kafka_names.group("never-ran")
    cases: list[tuple[list[str], int, str]] = [
        (["replay", "--group", unknown, "--to-earliest", "--execute"], 1, "no consumer group"),
        (["replay", "--to-datetime", "2024-13-01T00:00:00Z", "--execute"], 2, "not ISO 8601"),
        (["replay", "--to-datetime", "2024-07-01T06:00:00", "--execute"], 2, "no time zone"),
        (["replay", "--by-duration", "6h", "--execute"], 2, "not ISO 8601"),
        (["replay", "--to-earliest", "--shift-by", "3", "--execute"], 2, "choose one reset mode"),
        (["replay", "--to-latest", "--from", "PT2H", "--to", "PT1H"], 2, "one or the other"),
        (["replay", "--execute"], 2, "say where to"),
        (["replay", "--from", "PT2H", "--to", "PT1H", "--group", kafka_names.group("s"),
          "--execute"], 2, "--rate"),
        (["replay", "--from", "PT2H", "--to", "PT1H", "--group", group, "--rate", "5",
          "--execute"], 2, "worker's own group"),
        (["replay", "--from", "PT1H", "--to", "PT2H", "--group", kafka_names.group("s"),
          "--rate", "5", "--execute"], 2, "--from must be before --to"),
        (["replay", "--topic", kafka_names.topic("nope"), "--to-earliest", "--execute"], 1,
         "no such topic"),
        (["replay", "--topic", f"{topic}:7", "--to-earliest", "--execute"], 1, "no partition [7]"),
        (["replay", "--topic", f"{topic}:x", "--to-earliest", "--execute"], 2, "must be numbers"),
        (["dlq", "summary", "--since", "last tuesday"], 2, "not ISO 8601"),
        (["dlq", "show", "--source-offset", "9-3"], 2, "ends before it starts"),
        (["dlq", "redrive", "--execute"], 2, "--job"),
        (["dlq", "redrive", "--job", "j1", "--to-topic", kafka_names.topic("nope"), "--execute"],
         1, "no such topic"),
    ]
    for args, code, says in cases:
        result = cli(settings, *args)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        assert says in result.stderr, (args, result.stderr)
    assert _offsets(kafka_bootstrap, group, topic, 2) == {0: 2, 1: 2}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for g in (unknown, kafka_names.group("s"), "capillary-aep-redrive.j1"):
        state = admin.describe_consumer_groups([g])[g].result(timeout=15).state
        assert state.name == "DEAD", (g, state)
    assert read_all(kafka_bootstrap, topic, idle_s=1)  # still there, untouched


async def test_worker_skips_profile_targets_for_replayed_offsets_only(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    first = valid_events(40)
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in first))
    group = kafka_names.group()
    raw = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq)
    settings = make_settings(kafka_bootstrap, sandbox, topics=[topic], group=group,
                             dlq_topic=dlq)
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error
    profile_before = Counter(delivered_event_ids(sandbox, PROFILES))
    assert profile_before, "the fixture events feed profile targets"

    plan = cli_json(raw, "replay", "--to-earliest", "--execute")
    assert plan["replays"] == 40
    second = valid_events(10)
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in second))
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    ee = Counter(delivered_event_ids(sandbox, [EE]))
    once = Counter(expected_deliveries(first, ["experience_event"]))
    assert once, "the fixture events feed the ExperienceEvent target"
    assert ee == once + once + Counter(expected_deliveries(second, ["experience_event"])), (
        "replayed to the ExperienceEvent target again (same _ids), new ones once"
    )
    profile_after = Counter(delivered_event_ids(sandbox, PROFILES))
    new_profile = profile_after - profile_before
    assert not set(new_profile) & {e for e, _, _ in first}, "no profile update replayed"
    assert sorted(new_profile.elements()) == sorted(
        expected_deliveries(second, ["profile_customer", "profile_tier"])
    ), "records past the old offset update profiles again"
    metas = group_offsets(kafka_bootstrap, group, topic, 2)
    assert all(m == "" for _, m in metas.values()), "the mark is dropped once passed"


def test_side_replay_delivers_exactly_the_window_and_stops(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    now = now_ms()
    before, window, after = valid_events(6), valid_events(30), valid_events(6)
    invalid = [b"not json at all", b'{"eventName": "pointsIssued"']
    start = now - 2 * HOUR
    records: list[tuple[int, int, bytes | None, bytes | None]] = []
    records += [(i % 2, now - 3 * HOUR + i, k, v) for i, (_, k, v) in enumerate(before)]
    records += [(i % 2, start + i * 1000, k, v) for i, (_, k, v) in enumerate(window)]
    records += [(i % 2, start + 40_000 + i, b"bad", v) for i, v in enumerate(invalid)]
    records += [(i % 2, now - HOUR // 2 + i, k, v) for i, (_, k, v) in enumerate(after)]
    produce_at(kafka_bootstrap, topic, records)
    production = kafka_names.group("production")
    commit_group(kafka_bootstrap, production, {(topic, 0): 3, (topic, 1): 3})
    group = kafka_names.group("side")
    settings = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=production,
                             dlq_topic=dlq)
    window_args = ["replay", "--from", iso(start - 60_000), "--to", iso(now - HOUR),
                   "--group", group, "--rate", "400"]
    dry = cli_json(settings, *window_args)
    assert dry["records"] == len(window) + len(invalid)
    assert {r["partition"]: (r["start"], r["end"]) for r in dry["partitions"]} == {
        0: (3, 3 + 15 + 1), 1: (3, 3 + 15 + 1)
    }
    assert all(o < 0 for o, _ in group_offsets(kafka_bootstrap, group, topic, 2).values())

    started = time.monotonic()
    done = cli_process(settings, *window_args, "--execute", "--json", timeout=150)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(done.stdout)
    assert report["reached_end"] and report["exit_code"] == 0
    to_ee = expected_deliveries(window, ["experience_event"])
    assert sorted(delivered_event_ids(sandbox, [EE])) == sorted(to_ee)
    assert delivered_event_ids(sandbox, PROFILES) == [], "profile targets skipped by default"
    profile_only = len(window) - len(to_ee)
    assert profile_only and report["filtered_by_reason"] == {"replay-profile-skip": profile_only}
    assert _offsets(kafka_bootstrap, group, topic, 2) == {0: 19, 1: 19}
    assert _offsets(kafka_bootstrap, production, topic, 2) == {0: 3, 1: 3}, "production untouched"
    dead = [header_map(m.headers()) for m in read_all(kafka_bootstrap, dlq, idle_s=1)]
    assert sorted(int(h["source-offset"]) for h in dead) == [18, 18]
    assert report["dead_lettered_by_kind"] == {"invalid-json": 2}
    assert took < 120, f"side replay took {took:.0f}s"
