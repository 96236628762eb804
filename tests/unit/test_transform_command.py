"""``capillary-aep transform``: events in (file or stdin; JSON, array or JSON Lines), XDM out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner, Result

from worker.cli import main
from worker.commands.transform import read_events
from worker.mapping import DEFAULT_FAMILIES
from worker.schemas import DEFAULT_ROOT, SchemaStore

FIXTURES = DEFAULT_ROOT / "capillary" / "fixtures"
VALID = sorted((FIXTURES / "valid").glob("*/*.json"))
EVENT_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"


def jsonl(paths: list[Path]) -> bytes:
    return b"".join(orjson.dumps(orjson.loads(p.read_bytes())) + b"\n" for p in paths)


def run(args: list[str], stdin: bytes) -> tuple[Result, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["transform", *args], input=stdin)
    lines = [orjson.loads(line) for line in result.stdout_bytes.splitlines()]
    return result, lines


def test_every_valid_fixture_transforms_to_valid_xdm() -> None:
    result, lines = run([], jsonl(VALID))
    assert result.exit_code == 0, result.output
    expected = sum(len(DEFAULT_FAMILIES[p.parent.name]) for p in VALID)
    assert len(lines) == expected and all("entity" in line for line in lines)
    store = SchemaStore()
    for line in lines:
        schema = EVENT_SCHEMA if line["family"] == "experience_event" else PROFILE_SCHEMA
        assert store.xdm(schema).violations(line["entity"]) == []
    assert {line["input"] for line in lines} == set(range(1, len(VALID) + 1))
    assert f"{len(VALID)} events, {expected} messages, 0 errors" in result.stderr


def test_pii_is_masked_unless_asked() -> None:
    event = (FIXTURES / "valid" / "customerAdded" / "wrapped.json").read_bytes()
    result, lines = run([], event)
    assert result.exit_code == 0
    text = result.stdout
    for secret in ("rosma.dewi@example.com", "6282396092287", "Rosma", "Dewi"):
        assert secret not in text
    entity = lines[0]["entity"]
    assert entity["identityMap"]["CapillaryCustomerId"][0]["id"] == "164875382"
    assert entity["personalEmail"]["address"] == "r***@***.com"
    shown, lines = run(["--show-pii"], event)
    assert "rosma.dewi@example.com" in shown.stdout
    assert lines[0]["entity"]["person"]["name"] == {"firstName": "Rosma", "lastName": "Dewi"}


def test_errors_say_where_and_why_and_fail_the_run() -> None:
    bad = FIXTURES / "invalid" / "transactionAdded" / "amount-as-string.json"
    good = FIXTURES / "valid" / "pointsIssued" / "flat.json"
    unknown = b'{"eventName": "badgeEarned", "eventId": "u", "orgId": 1, "createdAt": 1, "data": {}}'
    stdin = jsonl([good, bad]) + b'{"eventName": "pointsIssued",\n' + unknown + b"\n"
    result, lines = run([], stdin)
    assert result.exit_code == 1
    errors = {line["input"]: line["error"] for line in lines if "error" in line}
    assert errors[2] == {
        "stage": "validate", "kind": "type", "path": "/data/amount",
        "reason": "/amount: type (types=['number'])",
    }  # fmt: skip
    assert errors[3]["stage"] == "decode" and errors[3]["kind"] == "invalid-json"
    assert errors[4]["kind"] == "unknown-event"
    assert [line["input"] for line in lines if "entity" in line] == [1, 1]
    assert "4 events, 2 messages, 3 errors" in result.stderr


def test_mapping_errors_name_the_target() -> None:
    doc = orjson.loads((FIXTURES / "valid" / "pointsRedeemed" / "flat.json").read_bytes())
    doc["data"]["redemptionFromEarningPrograms"] = None  # no balance: no points profile
    result, lines = run([], orjson.dumps(doc))
    assert result.exit_code == 1
    assert [line["target"] for line in lines] == ["experience_event", "profile_points"]
    assert lines[1]["error"]["stage"] == "transform"
    assert lines[1]["error"]["kind"] == "missing-field"


def test_input_shapes(tmp_path: Path) -> None:
    docs = [orjson.loads(p.read_bytes()) for p in VALID[:3]]
    array = tmp_path / "events.json"
    array.write_bytes(orjson.dumps(docs, option=orjson.OPT_INDENT_2))
    from_array = CliRunner().invoke(main, ["transform", str(array)])
    from_lines = CliRunner().invoke(main, ["transform", "-"], input=jsonl(VALID[:3]))
    assert from_array.exit_code == from_lines.exit_code == 0
    assert from_array.stdout_bytes == from_lines.stdout_bytes  # same events, same bytes
    assert [pos for pos, _ in read_events(orjson.dumps(docs[0], option=orjson.OPT_INDENT_2))] == [1]
    assert [pos for pos, _ in read_events(b'{"a": 1}\n\n{"b": 2}\n')] == [1, 3]


def test_same_input_same_bytes() -> None:
    stdin = jsonl(VALID)
    first = CliRunner().invoke(main, ["transform"], input=stdin)
    second = CliRunner().invoke(main, ["transform"], input=stdin)
    assert first.stdout_bytes == second.stdout_bytes


CONFIG = """
[aep]
org_id = "ABC123@AdobeOrg"
[mapping]
email_namespace = "HashedEmail"
hashed_identities = ["email"]
[[routes]]
name = "loyalty-events"
family = "experience_event"
inlet_url = "https://dcs.adobedc.net/collection/abc"
dataset_id = "ds-events"
schema_id = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
flow_id = "flow-1"
authenticated = false
events = ["pointsIssued"]
[[routes]]
name = "points"
family = "profile_points"
inlet_url = "https://dcs.adobedc.net/collection/abc"
dataset_id = "ds-points"
schema_id = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
flow_id = "flow-2"
authenticated = false
"""


def test_config_routes_give_the_exact_messages(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(CONFIG)
    events = [FIXTURES / "valid" / "pointsIssued" / "wrapped-org-prefixed.json",
              FIXTURES / "valid" / "tierRenewed" / "wrapped.json"]  # fmt: skip
    result, lines = run(["--config", str(config), "--show-pii"], jsonl(events))
    assert result.exit_code == 1  # tierRenewed has no route here
    messages = [line for line in lines if "message" in line]
    assert [m["target"] for m in messages] == ["loyalty-events", "points"]
    header = messages[0]["message"]["header"]
    assert header["datasetId"] == "ds-events" and header["imsOrgId"] == "ABC123@AdobeOrg"
    entity = messages[0]["message"]["body"]["xdmEntity"]
    assert list(entity["identityMap"]) == ["CapillaryCustomerId", "HashedEmail", "Phone"]
    assert "@" not in entity["identityMap"]["HashedEmail"][0]["id"]  # hashed by [mapping]
    assert lines[-1]["error"]["kind"] == "unknown-event" and lines[-1]["event"] == "tierRenewed"
    masked, _ = run(["--config", str(config)], jsonl(events[:1]))
    assert "919817074381" in result.stdout and "919817074381" not in masked.stdout


def test_bad_config_and_misuse_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(CONFIG.replace('hashed_identities = ["email"]', 'hashed_identities = ["fax"]'))
    result, _ = run(["--config", str(config)], b"{}")
    assert result.exit_code == 2 and "mapping.hashed_identities" in result.stderr
    missing = CliRunner().invoke(main, ["transform", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "Usage" in missing.output
    assert CliRunner().invoke(main, ["transform", "--nope"], input=b"").exit_code == 2


def test_empty_input_fails() -> None:
    result, lines = run([], b"\n\n")
    assert result.exit_code == 1 and lines == []
    assert "no event in the input" in result.stderr


def test_help() -> None:
    result = CliRunner().invoke(main, ["transform", "--help"])
    assert result.exit_code == 0 and "JSON Lines" in result.output
