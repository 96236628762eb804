"""schemas/capillary: every valid fixture decodes and validates, every invalid one fails."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from worker.events import DecodeError, decode
from worker.schemas import DEFAULT_ROOT, SchemaStore

CAPILLARY = DEFAULT_ROOT / "capillary"
FIXTURES = CAPILLARY / "fixtures"


def _fixtures(kind: str) -> list[Path]:
    return sorted((FIXTURES / kind).glob("*/*.json"))


VALID = _fixtures("valid")
INVALID = _fixtures("invalid")


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_every_schema_is_draft07_about_data_and_has_fixtures(store: SchemaStore) -> None:
    names = store.capillary_event_names
    assert {"customerAdded", "transactionAdded", "pointsIssued", "tierUpgraded"} <= set(names)
    for name in names:
        doc = orjson.loads((CAPILLARY / f"{name}.schema.json").read_bytes())
        assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert "`data` object of the canonical event" in doc["description"]
        assert doc["type"] == "object"
        assert "customerIdentifiers" in doc["required"]
        assert list((FIXTURES / "valid" / name).glob("*.json")), f"no valid fixture for {name}"
        assert list((FIXTURES / "invalid" / name).glob("*.json")), f"no invalid fixture for {name}"


def test_both_envelopes_are_covered_for_every_event() -> None:
    for folder in sorted((FIXTURES / "valid").iterdir()):
        envelopes = {decode(path.read_bytes()).envelope for path in folder.glob("*.json")}
        assert envelopes == {"flat", "wrapped"}, folder.name


@pytest.mark.parametrize("path", VALID, ids=_id)
def test_valid_fixture_decodes_and_validates(store: SchemaStore, path: Path) -> None:
    event = decode(path.read_bytes())
    assert event.name == path.parent.name
    validator = store.capillary(event.name)
    assert validator is not None
    assert validator.first_violation(event.data) is None, validator.violations(event.data)


@pytest.mark.parametrize("path", INVALID, ids=_id)
def test_invalid_fixture_fails(store: SchemaStore, path: Path) -> None:
    raw = path.read_bytes()
    try:
        event = decode(raw)
    except DecodeError:
        return
    assert event.name == path.parent.name
    validator = store.capillary(event.name)
    assert validator is not None
    violation = validator.first_violation(event.data)
    assert violation is not None, f"{_id(path)} unexpectedly valid"
    # value-free: nothing quoted from the payload's identifiers
    text = str(violation)
    for secret in (b"@example", b"6282396092287", b"919817074381"):
        if secret in raw:
            assert secret.decode() not in text


@pytest.mark.parametrize(
    ("fixture", "path"),
    [
        ("customerAdded/missing-customer-id.json", "/customerIdentifiers"),
        ("customerAdded/entered-at-in-seconds.json", "/enteredAt"),
        ("transactionAdded/amount-as-string.json", "/amount"),
        ("transactionAdded/missing-bill-number.json", ""),
        ("transactionAdded/bad-currency.json", "/currencyCode"),
        ("pointsIssued/points-as-string.json", "/totalPointsIssued"),
        ("tierUpgraded/tier-number-as-string.json", "/upgradedTierNumber"),
    ],
)
def test_invalid_fixture_points_at_the_field(store: SchemaStore, fixture: str, path: str) -> None:
    event = decode((FIXTURES / "invalid" / fixture).read_bytes())
    validator = store.capillary(event.name)
    assert validator is not None
    violation = validator.first_violation(event.data)
    assert violation is not None
    assert violation.path == path


def test_tolerant_of_unused_fields(store: SchemaStore) -> None:
    event = decode((FIXTURES / "valid" / "transactionAdded" / "wrapped.json").read_bytes())
    data = dict(event.data)
    data["somethingNew"] = {"nested": [1, None, "x"]}
    data["customFields"] = None
    validator = store.capillary("transactionAdded")
    assert validator is not None and validator.is_valid(data)
