"""``capillary-aep dlq`` on a dead-letter topic written by the real worker (real broker, sandbox)."""

from __future__ import annotations

import base64
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.fixture_events import valid_events
from tests.integration.tool_helpers import cli, cli_json, cli_popen, cli_process, group_offsets
from tests.integration.worker_harness import (
    EE_SCHEMA,
    make_settings,
    produce,
    read_all,
    run_inline,
    settings_dict,
)
from worker.config import Settings
from worker.dlq import header_map

pytestmark = pytest.mark.integration

EMAIL = "jane.roe@example.com"
PHONE = "919812345678"


def _unknown_event(i: int) -> bytes:
    """An event name the worker has no route for, carrying an email and a phone number."""
    return orjson.dumps({
        "eventName": "badgeEarned", "eventId": f"badge-{i}", "orgId": 1655,
        "createdAt": 1719999999123, "data": {"customerIdentifiers": {
            "customerId": 1000 + i, "instore": {"email": EMAIL, "mobile": PHONE}}},
    })


POISON: list[tuple[str, bytes]] = [
    ("invalid-json", b'{"eventName": "pointsIssued", "email": "' + EMAIL.encode() + b'", '),
    ("invalid-json", b"not json at all"),
    ("avro-or-binary", b"\xff\xfe not utf-8"),
    ("unknown-event", _unknown_event(1)),
    ("unknown-event", _unknown_event(2)),
]


def _poisoned_input(bootstrap: str, topic: str) -> dict[int, str]:
    """Valid events with poison between them on partition 0; returns {source offset: kind}."""
    records: list[tuple[bytes | None, bytes | None]] = []
    expect: dict[int, str] = {}
    for i, (_, key, value) in enumerate(valid_events(12)):
        records.append((key, value))
        if i < len(POISON):
            expect[len(records)] = POISON[i][0]
            records.append((b"poison", POISON[i][1]))
    produce(bootstrap, topic, records, partition=0)
    return expect


async def test_summary_show_export_on_a_dlq_written_by_the_worker(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any, tmp_path: Path
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq", partitions=2)
    expect = _poisoned_input(kafka_bootstrap, topic)
    for run in ("first", "replayed"):  # the second group dead-letters the same records again
        settings = make_settings(kafka_bootstrap, sandbox, topics=[topic],
                                 group=kafka_names.group(run), dlq_topic=dlq)
        result = await run_inline(settings, timeout=90)
        assert result.exit_code == 0, result.error
    raw = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group("first"),
                        dlq_topic=dlq)
    n = len(expect)
    decode_n = sum(1 for k in expect.values() if k != "unknown-event")

    summary = cli_json(raw, "dlq", "summary")
    assert (summary["records"], summary["unique"], summary["repeats"]) == (2 * n, n, n)
    assert summary["by"]["stage"] == {"decode": decode_n, "validate": n - decode_n}
    assert summary["by"]["error kind"] == dict(Counter(expect.values()))
    assert summary["by"]["source topic"] == {topic: n}
    assert summary["first"] and summary["last"] and summary["first"] <= summary["last"]
    only_decode = cli_json(raw, "dlq", "summary", "--stage", "decode")
    assert (only_decode["unique"], only_decode["by"]["stage"]) == (decode_n, {"decode": decode_n})
    window = cli_json(raw, "dlq", "summary", "--since", "PT1H")
    assert window["records"] == 2 * n
    assert cli_json(raw, "dlq", "summary", "--until", "PT1H")["records"] == 0
    table = cli(raw, "dlq", "summary")
    assert table.exit_code == 0 and "by error kind" in table.stdout and "unknown-event" in table.stdout

    shown = cli_json(raw, "dlq", "show", "--limit", "100")
    assert len(shown) == 2 * n
    text = orjson.dumps(shown).decode()
    assert EMAIL not in text and PHONE not in text, "PII masked by default"
    assert "j***@***.com" in text and "***78" in text
    by_offset = Counter(int(d["headers"]["source-offset"]) for d in shown)
    assert by_offset == Counter({o: 2 for o in expect})
    unknown = next(d for d in shown if d["headers"]["error-kind"] == "unknown-event")
    assert unknown["payload"]["json"]["eventName"] == "badgeEarned"
    assert unknown["headers"]["stage"] == "validate" and unknown["key"] == "poison"
    human = cli(raw, "dlq", "show", "--stage", "validate")
    assert human.exit_code == 0 and "badgeEarned" in human.stdout
    assert EMAIL not in human.stdout and PHONE not in human.stdout
    with_pii = orjson.dumps(cli_json(raw, "dlq", "show", "--show-pii", "--reason", "unknown"))
    assert EMAIL.encode() in with_pii and PHONE.encode() in with_pii

    offset = next(o for o, k in expect.items() if k == "avro-or-binary")
    picked = cli_json(raw, "dlq", "show", "--source-topic", topic, "--source-partition", "0",
                      "--source-offset", str(offset))
    assert [d["headers"]["error-kind"] for d in picked] == ["avro-or-binary"] * 2
    assert "hidden" in picked[0]["payload"]["binary"], "binary payloads only with --show-pii"
    assert len(cli_json(raw, "dlq", "show", "--limit", "1")) == 1
    assert cli_json(raw, "dlq", "show", "--event", "badgeEarned", "--kind", "invalid-json") == []

    out = tmp_path / "dlq.jsonl"
    export = cli(raw, "dlq", "export", "--output", str(out), "--stage", "decode")
    assert export.exit_code == 0, export.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 2 * decode_n and f"{2 * decode_n} record(s) exported" in export.stderr
    assert EMAIL.encode() not in out.read_bytes()
    full = cli(raw, "dlq", "export", "--show-pii", "--limit", "3")
    rows = [orjson.loads(line) for line in full.stdout.splitlines()]
    assert len(rows) == 3
    originals = {o: v for o, (_, v) in enumerate(_values_by_offset(kafka_bootstrap, topic))}
    for row in rows:
        src = int(row["headers"]["source-offset"])
        assert base64.b64decode(row["value_base64"]) == originals[src]


def _values_by_offset(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    msgs = sorted((m for m in read_all(bootstrap, topic, idle_s=1) if m.partition() == 0),
                  key=lambda m: m.offset())
    return [(m.offset(), m.value()) for m in msgs]


def _narrow_routes(sandbox: Any) -> list[dict[str, Any]]:
    """A deploy with a routing bug: only two event names reach the ExperienceEvent target."""
    return [{
        "name": "loyalty-events", "family": "experience_event",
        "inlet_url": sandbox.inlet_url("capillary-inlet"), "dataset_id": "ds-loyalty-events",
        "schema_id": EE_SCHEMA, "flow_id": "flow-events",
        "events": ["transactionAdded", "pointsIssued"],
    }]


async def _dlq_from_a_routing_bug(
    bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any, events: int
) -> tuple[str, str, dict[str, Any], dict[str, Any], list[tuple[str, bytes, bytes]]]:
    """Input with ``events`` valid events and two undecodable ones, run through the buggy
    deploy. Returns topic, dlq, the buggy settings, the fixed settings, the events."""
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq", partitions=2)
    good = valid_events(events, names=("customerAdded", "tierUpgraded"))
    produce(bootstrap, topic, [(k, v) for _, k, v in good] + [(b"x", b"{broken"), (b"y", b"[1")])
    group = kafka_names.group("worker")
    buggy = settings_dict(bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq,
                          routes=_narrow_routes(sandbox))
    fixed = settings_dict(bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq)
    result = await run_inline(Settings(**buggy), timeout=90)
    assert result.exit_code == 0, result.error
    return topic, dlq, buggy, fixed, good


async def test_retest_tells_fixed_records_from_still_broken_ones(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    _, _, buggy, fixed, _ = await _dlq_from_a_routing_bug(
        kafka_bootstrap, kafka_topic, kafka_names, sandbox, events=8
    )
    still = cli_json(buggy, "dlq", "retest")
    assert still["totals"] == {"records": 10, "pass": 0, "filtered": 0, "fail": 10,
                               "still_failing_by": {"validate/unknown-event": 8,
                                                    "decode/invalid-json": 2}}
    now = cli_json(fixed, "dlq", "retest")
    assert now["totals"]["pass"] == 8 and now["totals"]["fail"] == 2
    assert now["totals"]["still_failing_by"] == {"decode/invalid-json": 2}
    for rec in now["records"]:
        if rec["was"]["kind"] == "unknown-event":
            assert rec["now"]["outcome"] == "pass"
            assert rec["now"]["targets"], "it names the targets it would go to now"
        else:
            assert rec["now"] == {"outcome": "fail", "stage": "decode", "kind": "invalid-json",
                                  "reason": rec["now"]["reason"]}
            assert "invalid-json" in rec["now"]["reason"]
    assert {r["event"] for r in now["records"] if r["now"]["outcome"] == "pass"} == {
        "customerAdded", "tierUpgraded"}
    table = cli(fixed, "dlq", "retest", "--stage", "decode")
    assert table.exit_code == 0 and "still failing decode/invalid-json: 2" in table.stdout
    first = cli_json(fixed, "dlq", "retest", "--limit", "3")
    assert first["listed"] == 3 and first["totals"] == now["totals"], "totals cover all"


def _kill_once_progress_shows(
    settings: dict[str, Any], job: list[str], bootstrap: str, dlq: str
) -> None:
    """Start the redrive (paced), SIGKILL it as soon as a first chunk is committed."""
    proc = cli_popen(settings, *job, "--rate", "20", "--execute")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _progress(bootstrap, "fix-routes", dlq) == 0:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _progress(bootstrap: str, job: str, dlq: str, *, stable: bool = False) -> int:
    """DLQ offsets the job has committed (by default without waiting for an open chunk)."""
    return sum(max(o, 0) for o, _ in group_offsets(
        bootstrap, f"capillary-aep-redrive.{job}", dlq, 2, stable=stable).values())


async def test_redrive_killed_and_rerun_publishes_each_record_once_and_guards_loops(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic, dlq, buggy, fixed, _ = await _dlq_from_a_routing_bug(
        kafka_bootstrap, kafka_topic, kafka_names, sandbox, events=40
    )
    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    selected = {m.value(): header_map(m.headers()) for m in dead
                if header_map(m.headers())["error-kind"] == "unknown-event"}
    assert len(selected) == 40
    end = sum(1 for _ in dead)
    job = ["dlq", "redrive", "--job", "fix-routes", "--kind", "unknown-event", "--chunk-size", "4"]

    dry = cli_json(fixed, *job)
    assert dry["would_redrive"] == {topic: 40} and dry["not_selected"] == 2
    assert _progress(kafka_bootstrap, "fix-routes", dlq) == 0, "a dry run records nothing"

    _kill_once_progress_shows(fixed, job, kafka_bootstrap, dlq)
    at_kill = _progress(kafka_bootstrap, "fix-routes", dlq)
    assert 0 < at_kill < end, f"killed mid-job (progress {at_kill} of {end})"

    rerun = cli_process(fixed, *job, "--execute", "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = orjson.loads(rerun.stdout)
    assert report["resumed"] and report["complete"]
    assert _progress(kafka_bootstrap, "fix-routes", dlq, stable=True) == end
    again = cli_json(fixed, *job, "--execute")
    assert again["complete"] and again["scanned"] == 0 and again["redriven"] == {}

    redriven = [m for m in read_all(kafka_bootstrap, topic, idle_s=1)
                if header_map(m.headers()).get("redrive-count") == "1"]
    assert Counter(m.value() for m in redriven) == Counter(dict.fromkeys(selected, 1)), (
        "each selected record published exactly once across the killed run and the rerun"
    )
    for m in redriven:
        assert m.partition() == int(selected[m.value()]["source-partition"]), "same partition"
        assert header_map(m.headers())["attempt"] == "1"

    # The routing bug is still deployed: the redriven records fail again ...
    since = time.time()
    result = await run_inline(Settings(**buggy), timeout=90)
    assert result.exit_code == 0, result.error
    second = [header_map(m.headers()) for m in read_all(kafka_bootstrap, dlq, idle_s=1)]
    failed_again = [h for h in second if h.get("redrive-count") == "1"]
    assert len(failed_again) == 40 and all(h["attempt"] == "2" for h in failed_again)
    # ... and the loop guard refuses to send them round again.
    since_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 1))
    loop = ["dlq", "redrive", "--job", "fix-again", "--kind", "unknown-event", "--since",
            since_iso, "--max-redrives", "1"]
    refused = cli_json(fixed, *loop, "--execute")
    assert refused["redriven"] == {}
    assert refused["refused"] == {"redriven 1 times already (limit --max-redrives 1)": 40}
    assert sum(1 for m in read_all(kafka_bootstrap, topic, idle_s=1)
               if header_map(m.headers()).get("redrive-count")) == 40, "nothing published"

    # replay works on a group reading the DLQ too: rewinding a job's progress group makes the
    # job (same selection, kept in its offsets' metadata) cover those records again.
    rewind = ["replay", "--group", "capillary-aep-redrive.fix-routes", "--topic", dlq,
              "--to-earliest"]
    plan = cli_json(fixed, *rewind, "--execute")
    assert plan["applied"] and plan["replays"] == end
    redo = cli_json(fixed, *job)
    assert redo["resumed"] and redo["would_redrive"] == {topic: 40}
