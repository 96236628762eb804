"""Golden files: one fixture per event, mapped to every default family, byte for byte.

A golden file is the exact output (``orjson``, indented for review) of the mapping for one
valid fixture. A change to a mapper shows up here as a diff to review; regenerate on purpose
with ``UPDATE_GOLDEN=1 uv run pytest tests/unit/test_mapping_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.events import decode
from worker.mapping import DEFAULT_FAMILIES, MappingContext, build_entity
from worker.schemas import DEFAULT_ROOT, SchemaStore

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = DEFAULT_ROOT / "capillary" / "fixtures" / "valid"
SCHEMAS = {
    "experience_event": "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
    "profile": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
}
# One fixture per event: the one that exercises most of its mapping.
CHOSEN = {
    "customerAdded": "wrapped.json",
    "customerUpdated": "api-wrapper.json",
    "transactionAdded": "wrapped.json",
    "transactionUpdated": "wrapped.json",
    "pointsIssued": "wrapped-org-prefixed.json",
    "pointsRedeemed": "flat.json",
    "pointsExpired": "wrapped-with-balance.json",
    "pointsExpiryReminder": "wrapped-expiry-millis.json",
    "pointsExpiryChange": "flat.json",
    "tierUpgraded": "flat.json",
    "tierDowngraded": "flat.json",
    "tierRenewed": "wrapped.json",
    "tierDowngradeReminder": "flat.json",
    "promotionEarned": "flat.json",
    "rewardIssued": "flat.json",
}
# A fixed clock: golden output must not depend on when the test runs.
CTX = MappingContext(source_timezone="Asia/Kolkata", clock=lambda: 2_000_000_000.0)


def render(name: str) -> bytes:
    event = decode((FIXTURES / name / CHOSEN[name]).read_bytes())
    out: dict[str, Any] = {"fixture": f"{name}/{CHOSEN[name]}", "source_timezone": "Asia/Kolkata"}
    for family in DEFAULT_FAMILIES[name]:
        out[family] = build_entity(event, family, f"target-{family}", CTX)
    return orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n"


def test_one_golden_file_per_event() -> None:
    assert set(CHOSEN) == set(DEFAULT_FAMILIES)
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(CHOSEN)


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.json"
    actual = render(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(actual)
    assert path.read_bytes() == actual, f"mapping of {name} changed: review, then UPDATE_GOLDEN=1"
    assert render(name) == actual  # same input, same bytes


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_golden_output_is_valid_xdm(name: str) -> None:
    store = SchemaStore()
    doc = orjson.loads((GOLDEN / f"{name}.json").read_bytes())
    for family in DEFAULT_FAMILIES[name]:
        schema = SCHEMAS["experience_event" if family == "experience_event" else "profile"]
        assert store.xdm(schema).violations(doc[family]) == [], family
