"""Dry run decisions (no broker) and the users' own exported XDM schemas they validate against."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from tests.integration.org_events import flat_event
from worker.cli import main
from worker.config import Settings
from worker.dry_run import DryRun
from worker.routing import RoutingError
from worker.schemas import SchemaLoadError, SchemaStore

ROOT = Path(__file__).resolve().parents[2]
USER_XDM = ROOT / "tests" / "fixtures" / "user_xdm"
ACME_EVENTS = "https://ns.adobe.com/acme/schemas/5f1d3c2b9a8e7d6c"
EMAIL = "meera.s@example.in"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)


def acme_settings(**sections: Any) -> Settings:
    return Settings(
        kafka={"topics": ["in"]},
        aep={"org_id": "ACME0123456789@AdobeOrg", "client_id": "c", "client_secret": "s"},
        xdm={"schemas_dir": str(USER_XDM), "tenant_id": "acme"},
        routes=[{
            "name": "acme-events", "family": "experience_event",
            "inlet_url": "https://dcs.adobedc.net/collection/acme", "dataset_id": "ds-acme",
            "schema_id": "5f1d3c2b9a8e7d6c", "flow_id": "flow-acme",
            "events": ["pointsIssued", "pointsRedeemed", "transactionAdded"],
        }],
        **sections,
    )


def lines(out: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_user_schemas_load_after_ours_and_resolve_standard_refs_offline() -> None:
    store = SchemaStore(user_xdm=USER_XDM)
    assert ACME_EVENTS in store.user_schema_ids
    assert "https://ns.adobe.com/xdm/context/experienceevent" in store.xdm_schema_ids
    validator = store.xdm(ACME_EVENTS)
    assert validator.first_violation({"_id": "x"}) is not None


def test_user_schema_directory_with_an_unknown_ref_is_a_load_error(tmp_path: Path) -> None:
    doc = orjson.loads((USER_XDM / "acme-loyalty-events.schema.json").read_bytes())
    (tmp_path / "s.json").write_bytes(orjson.dumps(doc))  # its field group is missing
    with pytest.raises(SchemaLoadError):
        SchemaStore(user_xdm=tmp_path).xdm(ACME_EVENTS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SchemaLoadError, match="no XDM schema"):
        SchemaStore(user_xdm=empty)


def test_dry_run_writes_the_messages_validated_against_the_users_schemas() -> None:
    out = io.BytesIO()
    dry = DryRun(acme_settings(), out)
    _, _, points = flat_event("pointsIssued", org_id=1, customer_id=11, created_at=1_719_792_000_000)
    _, _, redeemed = flat_event("pointsRedeemed", org_id=1, customer_id=12,
                                created_at=1_719_792_000_000)
    dry.process("in", 0, 0, points)
    dry.process("in", 0, 1, redeemed)  # its eventType is not in the user's enum
    dry.process("in", 0, 2, b"{not json")
    dry.process("in", 0, 3, None)  # a tombstone: filtered by default
    sent, refused, broken, tomb = lines(out)
    assert sent["target"] == "acme-events" and sent["url"].endswith("/collection/batch/acme")
    header = sent["message"]["header"]
    assert header["schemaRef"]["id"] == ACME_EVENTS and header["imsOrgId"].startswith("ACME")
    entity = sent["message"]["body"]["xdmEntity"]
    assert entity["_acme"]["orgId"] == 1 and "_capillary" not in entity
    assert refused["deadLetter"]["stage"] == "validate"
    assert refused["deadLetter"]["errorClass"] == "XdmViolation"
    assert refused["deadLetter"]["path"] == "/eventType"
    assert broken["deadLetter"]["stage"] == "decode"
    assert tomb == {"source": {"topic": "in", "partition": 0, "offset": 3}, "filtered": "tombstone"}
    assert dry.summary.records == 4 and dry.summary.messages == 1 and not dry.summary.ok
    assert dry.summary.dead_letters == {"validate/enum": 1, "decode/invalid-json": 1}


def test_dry_run_masks_pii_unless_asked_and_prints_exact_bytes_then() -> None:
    _, _, value = flat_event("pointsRedeemed", org_id=1, customer_id=12, created_at=1)
    settings = Settings(
        kafka={"topics": ["in"]},
        aep={"org_id": "X@AdobeOrg", "client_id": "c", "client_secret": "s"},
        routes=[{
            "name": "events", "family": "experience_event",
            "inlet_url": "https://dcs.adobedc.net/collection/x", "dataset_id": "ds",
            "schema_id": "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
            "flow_id": "f", "events": ["pointsRedeemed"],
        }],
        policy={"allowed_org_ids": [1]},
    )
    masked = io.BytesIO()
    DryRun(settings, masked).process("in", 0, 0, value)
    assert EMAIL.encode() in value and EMAIL.encode() not in masked.getvalue()
    exact = io.BytesIO()
    dry = DryRun(settings, exact, show_pii=True)
    dry.process("in", 0, 0, value)
    assert EMAIL.encode() in exact.getvalue()
    assert dry.summary.ok and dry.summary.messages == 1
    _, _, other_org = flat_event("pointsRedeemed", org_id=2, customer_id=12, created_at=1)
    dry.process("in", 0, 1, other_org)
    assert lines(exact)[-1]["filtered"] == "org-not-allowed"
    assert "dry run: 2 records, 1 messages to send" in dry.summary.line()


@pytest.mark.parametrize(
    "args",
    [["--output", "x.jsonl"], ["--show-pii"], ["--max-records", "3"],
     ["--dry-run", "--exit-when-drained"], ["--dry-run", "--max-records", "0"]],
)
def test_dry_run_options_misused_print_usage_and_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == 2 and "Usage:" in result.output


def test_a_route_whose_schema_is_unknown_stops_the_dry_run_before_consuming() -> None:
    settings = acme_settings()
    bad = settings.model_copy(update={"xdm": settings.xdm.model_copy(update={"schemas_dir": None})})
    with pytest.raises(RoutingError, match=r"routes\[acme-events\]\.schema_id"):
        DryRun(bad, io.BytesIO())
