"""worker.mapping: fixtures map to valid XDM, deterministically, with SPEC-conformant details."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.events import CanonicalEvent, decode
from worker.mapping import (
    DEFAULT_FAMILIES,
    FAMILIES,
    MAPPERS,
    MAPPING_ERROR_KINDS,
    MappingContext,
    MappingError,
    build_entity,
    prune,
    xdm_id,
)
from worker.schemas import DEFAULT_ROOT, SchemaStore

FIXTURES = DEFAULT_ROOT / "capillary" / "fixtures" / "valid"
EVENT_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
CTX = MappingContext()

VALID = sorted(FIXTURES.glob("*/*.json"))
CASES = [(path, family) for path in VALID for family in DEFAULT_FAMILIES[path.parent.name]]
# Mappers a route may ask for besides the defaults (e.g. pointsExpired -> profile_points).
OPT_IN = [
    (path, family)
    for path in VALID
    for (name, family) in sorted(MAPPERS)
    if name == path.parent.name and family not in DEFAULT_FAMILIES[name]
]


def _id(case: Any) -> str:
    if isinstance(case, Path):
        return f"{case.parent.name}/{case.name}"
    return str(case)


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def load(name: str, fixture: str) -> CanonicalEvent:
    return decode((FIXTURES / name / fixture).read_bytes())


def schema_for(family: str) -> str:
    return EVENT_SCHEMA if family == "experience_event" else PROFILE_SCHEMA


def entity(event: CanonicalEvent, family: str, ctx: MappingContext = CTX) -> dict[str, Any]:
    return build_entity(event, family, f"target-{family}", ctx)


def with_data(event: CanonicalEvent, **changes: Any) -> CanonicalEvent:
    data = copy.deepcopy(event.data)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return CanonicalEvent(
        event.name,
        event.event_id,
        event.org_id,
        event.created_at_ms,
        event.ref_id,
        data,
        event.envelope,
    )


# --------------------------------------------------------------------------- registry


def test_registry_shape() -> None:
    assert FAMILIES == ("experience_event", "profile_customer", "profile_points", "profile_tier")
    ee, customer, points, tier = FAMILIES
    expected = {
        "customerAdded": (customer,),
        "customerUpdated": (customer,),
        "transactionAdded": (ee,),
        "transactionUpdated": (ee,),
        "pointsIssued": (ee, points),
        "pointsRedeemed": (ee, points),
        "pointsExpired": (ee,),
        "pointsExpiryReminder": (ee,),
        "pointsExpiryChange": (ee,),
        "tierUpgraded": (ee, tier),
        "tierDowngraded": (ee, tier),
        "tierRenewed": (ee, tier),
        "tierDowngradeReminder": (ee,),
        "promotionEarned": (ee,),
        "rewardIssued": (ee,),
    }
    assert expected == DEFAULT_FAMILIES
    for name, families in DEFAULT_FAMILIES.items():
        for family in families:
            assert (name, family) in MAPPERS
    assert all(family in FAMILIES for _, family in MAPPERS)


def test_every_fixture_event_has_a_default_mapping() -> None:
    assert {path.parent.name for path in VALID} == set(DEFAULT_FAMILIES)


# --------------------------------------------------------------------------- every fixture


@pytest.mark.parametrize(("path", "family"), CASES, ids=_id)
def test_fixture_maps_to_valid_xdm(store: SchemaStore, path: Path, family: str) -> None:
    event = decode(path.read_bytes())
    result = entity(event, family)
    validator = store.xdm(schema_for(family))
    assert validator.violations(result) == []
    assert result["_id"] == xdm_id(event, f"target-{family}")
    assert result == prune(result), "null or empty values left in the entity"
    ids = result["identityMap"]["CapillaryCustomerId"]
    assert ids == [{"id": ids[0]["id"], "primary": True, "authenticatedState": "authenticated"}]
    assert re.fullmatch(r"\d+", ids[0]["id"])
    details = result["_capillary"]
    if family == "experience_event":
        assert RFC3339_MS.match(result["timestamp"])
        assert RFC3339_MS.match(details["createdAt"])
        assert (details["eventId"], details["eventName"], details["orgId"]) == (
            event.event_id,
            event.name,
            event.org_id,
        )
        assert result["eventType"]
    else:
        assert result["extSourceSystemAudit"]["lastUpdatedDate"] == details["lastEventCreatedAt"]
        assert details["lastEventId"] == event.event_id


@pytest.mark.parametrize(("path", "family"), CASES, ids=_id)
def test_fixture_mapping_is_deterministic(path: Path, family: str) -> None:
    raw = path.read_bytes()
    first = orjson.dumps(entity(decode(raw), family))
    second = orjson.dumps(entity(decode(raw), family))
    assert first == second
    other = MappingContext()
    assert orjson.dumps(entity(decode(raw), family, other)) == first


@pytest.mark.parametrize(("path", "family"), OPT_IN, ids=_id)
def test_opt_in_mappers_map_or_name_the_missing_field(
    store: SchemaStore, path: Path, family: str
) -> None:
    event = decode(path.read_bytes())
    try:
        result = entity(event, family)
    except MappingError as err:
        assert err.kind == "missing-field" and err.path, err
        return
    assert store.xdm(schema_for(family)).violations(result) == []


def test_every_event_has_fixtures_and_a_mapping() -> None:
    names = {path.parent.name for path in VALID}
    assert len(names) == 15
    assert names == set(DEFAULT_FAMILIES) == {name for name, _ in MAPPERS}


# --------------------------------------------------------------------------- _id


def test_xdm_id_formula_and_targets() -> None:
    event = load("pointsIssued", "flat.json")
    expected = hashlib.sha256(
        f"{event.org_id}|pointsIssued|{event.event_id}|ds-loyalty-events".encode()
    ).hexdigest()
    assert xdm_id(event, "ds-loyalty-events") == expected
    a = build_entity(event, "experience_event", "events-a", CTX)
    b = build_entity(event, "experience_event", "events-b", CTX)
    c = build_entity(event, "profile_points", "profile-points", CTX)
    assert len({a["_id"], b["_id"], c["_id"]}) == 3
    assert {k: v for k, v in a.items() if k != "_id"} == {k: v for k, v in b.items() if k != "_id"}


def test_redelivery_in_other_envelope_has_same_id() -> None:
    flat_event = load("pointsIssued", "flat.json")
    doc = orjson.loads((FIXTURES / "pointsIssued" / "flat.json").read_bytes())
    wrapped_doc = {
        "eventId": doc["eventId"],
        "eventType": f"{doc['orgId']}_pointsIssued",
        "actionType": "START",
        "attributes": {k: v for k, v in doc.items() if k != "eventId"},
    }
    wrapped_event = decode(orjson.dumps(wrapped_doc))
    assert wrapped_event.envelope == "wrapped"
    assert entity(wrapped_event, "experience_event") == entity(flat_event, "experience_event")


# --------------------------------------------------------------------------- customerAdded


def test_customer_added_profile() -> None:
    result = entity(load("customerAdded", "wrapped.json"), "profile_customer")
    assert result["person"] == {"name": {"firstName": "Rosma", "lastName": "Dewi"}}
    assert result["identityMap"]["Email"] == [
        {"id": "rosma.dewi@example.com", "primary": False, "authenticatedState": "authenticated"}
    ]
    assert result["identityMap"]["Phone"][0]["id"] == "6282396092287"
    assert result["personalEmail"] == {"address": "rosma.dewi@example.com"}
    assert result["loyalty"] == {
        "loyaltyID": ["164875382"],
        "status": "active",
        "joinDate": "2023-05-12T09:29:58.000Z",
    }
    assert result["extSourceSystemAudit"] == {"lastUpdatedDate": "2023-05-12T06:59:59.971Z"}
    assert result["_capillary"]["storeCode"] == "kanmo.idn.mothercare.rpm"
    assert result["_capillary"]["loyaltyType"] == "LOYALTY"


def test_customer_without_enrichment_has_only_the_customer_identity() -> None:
    result = entity(load("customerAdded", "flat-no-enrichment.json"), "profile_customer")
    assert list(result["identityMap"]) == ["CapillaryCustomerId"]
    assert "personalEmail" not in result and "mobilePhone" not in result
    assert "person" not in result  # no names sent: pruned away


def test_local_date_time_uses_source_timezone() -> None:
    event = load("customerAdded", "wrapped-quirks.json")
    utc = entity(event, "profile_customer")
    kolkata = entity(event, "profile_customer", MappingContext(source_timezone="Asia/Kolkata"))
    assert utc["loyalty"]["joinDate"] == "2024-07-08T17:15:49.000Z"
    assert kolkata["loyalty"]["joinDate"] == "2024-07-08T11:45:49.000Z"


def test_configurable_namespaces() -> None:
    ctx = MappingContext(customer_namespace="CapId", email_namespace="EM", phone_namespace="PH")
    result = entity(load("customerAdded", "wrapped.json"), "profile_customer", ctx)
    assert set(result["identityMap"]) == {"CapId", "EM", "PH"}


# --------------------------------------------------------------------------- transactionAdded


def test_purchase_event() -> None:
    result = entity(load("transactionAdded", "wrapped.json"), "experience_event")
    assert result["eventType"] == "commerce.purchases"
    assert result["timestamp"] == "2023-05-12T08:29:20.000Z"  # enteredAt, not createdAt
    assert result["_capillary"]["createdAt"] == "2023-05-12T07:00:00.089Z"
    assert result["commerce"] == {
        "order": {
            "purchaseID": "2_134577_12591538_487122",
            "currencyCode": "IDR",
            "priceTotal": 89000.0,
            "discountAmount": 10000.0,
        },
        "commerceScope": {"storeCode": "kanmo.idn.elc.pim"},
        "purchases": {"value": 1},
    }
    assert result["_capillary"]["transactionId"] == "65658570"
    assert result["_capillary"]["grossAmount"] == 99000.0


def test_return_event_is_a_credit_memo_not_a_purchase() -> None:
    result = entity(load("transactionAdded", "flat-return.json"), "experience_event")
    assert result["eventType"] == "commerce.backofficeCreditMemoIssued"
    order = result["commerce"]["order"]
    assert "purchases" not in result["commerce"]
    assert "priceTotal" not in order
    assert order["refunds"] == [
        {
            "transactionID": "65659901",
            "refundAmount": 29000.0,
            "refundReason": "return",
            "currencyCode": "IDR",
        }
    ]
    assert result["_capillary"]["billType"] == "RETURN"


def test_negative_return_amount_is_reported_positive() -> None:
    event = with_data(load("transactionAdded", "flat-return.json"), amount=-29000.0)
    refund = entity(event, "experience_event")["commerce"]["order"]["refunds"][0]
    assert refund["refundAmount"] == 29000.0


def test_transaction_quirks() -> None:
    result = entity(load("transactionAdded", "flat-quirks.json"), "experience_event")
    assert result["timestamp"] == "2024-07-08T06:15:49.123Z"  # +05:30 offset honoured
    assert result["commerce"]["order"]["currencyCode"] == "INR"  # " inr"
    assert result["commerce"]["order"]["discountAmount"] == 0  # zero is a value
    assert result["_capillary"]["transactionId"] == "884653716"  # 884653716.0
    assert result["_capillary"]["billType"] == "REGULAR"  # "regular"
    assert "Phone" not in result["identityMap"]  # empty mobile
    assert result["identityMap"]["Email"][0]["id"] == "dev.rao@example.in"  # "email " key


def test_transaction_without_currency_or_store() -> None:
    result = entity(
        load("transactionAdded", "wrapped-local-time-no-currency.json"), "experience_event"
    )
    assert "currencyCode" not in result["commerce"]["order"]
    assert "commerceScope" not in result["commerce"]
    assert result["timestamp"] == "2024-07-08T10:30:00.000Z"


# --------------------------------------------------------------------------- pointsIssued


def test_points_issued_event_splits_regular_and_promotional_points() -> None:
    result = entity(load("pointsIssued", "wrapped-org-prefixed.json"), "experience_event")
    assert result["eventType"] == "loyalty.pointsIssued"
    assert result["timestamp"] == result["_capillary"]["createdAt"]
    assert result["loyalty"]["pointsGained"] == [
        {"value": 100.0, "loyaltyProgramId": "978", "transactionId": "175771018"},
        {
            "value": 20.0,
            "loyaltyProgramId": "978",
            "transactionId": "175771018",
            "promotionId": "MONSOON24",
        },
    ]
    assert result["_capillary"]["promotionalPoints"] == 20.0
    assert result["_capillary"]["triggeringActivity"] == "TransactionAdd"


def test_points_breakdown_that_does_not_add_up_falls_back_to_the_total() -> None:
    event = with_data(load("pointsIssued", "wrapped-org-prefixed.json"), totalPointsIssued=500)
    gained = entity(event, "experience_event")["loyalty"]["pointsGained"]
    assert gained == [{"value": 500, "loyaltyProgramId": "978", "transactionId": "175771018"}]


def test_points_profile_family() -> None:
    result = entity(load("pointsIssued", "flat.json"), "profile_points")
    assert result["loyalty"] == {"points": 1520.0, "lifetimePoints": 4870.0}
    event = with_data(load("pointsIssued", "flat.json"), programCurrentPoints=None)
    with pytest.raises(MappingError) as info:
        entity(event, "profile_points")
    assert (info.value.kind, info.value.path) == ("missing-field", "/programCurrentPoints")


# --------------------------------------------------------------------------- tierUpgraded


def test_tier_upgraded_with_names_in_the_event() -> None:
    result = entity(load("tierUpgraded", "flat.json"), "profile_tier")
    assert result["loyalty"] == {
        "tier": "GOLD",
        "upgradeDate": "2024-08-19T09:00:34.369Z",
        "tierExpiryDate": "2124-08-19",
    }
    assert result["_capillary"]["tierNumber"] == 2
    assert result["_capillary"]["previousTierNumber"] == 1


def test_tier_name_only_from_event_or_static_config() -> None:
    event = load("tierUpgraded", "wrapped-quirks-no-tier-names.json")
    plain = entity(event, "profile_tier")
    assert "tier" not in plain["loyalty"]
    assert plain["_capillary"]["tierNumber"] == 3
    named = entity(event, "profile_tier", MappingContext(tier_names={3: "Platinum"}))
    assert named["loyalty"]["tier"] == "Platinum"
    # mapping an event with names first never leaks them into a later event (no cache)
    entity(load("tierUpgraded", "flat.json"), "profile_tier")
    assert entity(event, "profile_tier") == plain


def test_event_tier_names_win_over_config() -> None:
    ctx = MappingContext(tier_names={2: "Configured Gold"})
    assert (
        entity(load("tierUpgraded", "flat.json"), "profile_tier", ctx)["loyalty"]["tier"] == "GOLD"
    )


def test_tier_expiry_placeholder_skipped_and_millis_fallback() -> None:
    quirks = entity(load("tierUpgraded", "wrapped-quirks-no-tier-names.json"), "profile_tier")
    assert "tierExpiryDate" not in quirks["loyalty"]  # "tierExpiryDate" placeholder
    millis = load("tierUpgraded", "wrapped-expiry-millis-only.json")
    # 4917801599999 = 2125-11-02T23:59:59.999Z = 2125-11-03T05:29:59.999+05:30
    assert entity(millis, "profile_tier")["loyalty"]["tierExpiryDate"] == "2125-11-02"
    kolkata = MappingContext(source_timezone="Asia/Kolkata")
    assert entity(millis, "profile_tier", kolkata)["loyalty"]["tierExpiryDate"] == "2125-11-03"
    for bad in ("2124-02-30", "19-08-2124", "", "tierExpiryDate", None):
        event = with_data(load("tierUpgraded", "flat.json"), tierExpiryDate=bad)
        event = with_data(event, tierExpiryDateInMillis=...)
        assert "tierExpiryDate" not in entity(event, "profile_tier")["loyalty"], bad


def test_tier_upgraded_experience_event_is_available(store: SchemaStore) -> None:
    result = entity(load("tierUpgraded", "flat.json"), "experience_event")
    assert result["eventType"] == "loyalty.tierUpgraded"
    assert store.xdm(EVENT_SCHEMA).violations(result) == []


# --------------------------------------------------------------------------- errors


def test_unknown_family_or_event() -> None:
    event = load("tierUpgraded", "flat.json")
    with pytest.raises(MappingError) as info:
        build_entity(event, "profile_customer", "t", CTX)
    assert info.value.kind == "no-mapper"


@pytest.mark.parametrize(
    ("name", "fixture", "family", "change", "kind", "path"),
    [
        ("transactionAdded", "wrapped.json", "experience_event",
         {"customerIdentifiers": {"customerId": None}}, "missing-field",
         "/customerIdentifiers/customerId"),
        ("transactionAdded", "wrapped.json", "experience_event",
         {"enteredAt": "not a date"}, "bad-value", "/enteredAt"),
        ("transactionAdded", "wrapped.json", "experience_event",
         {"enteredAt": None}, "missing-field", "/enteredAt"),
        ("transactionAdded", "wrapped.json", "experience_event",
         {"amount": "12"}, "missing-field", "/amount"),
        ("transactionAdded", "wrapped.json", "experience_event",
         {"billNumber": " "}, "missing-field", "/billNumber"),
        ("pointsIssued", "flat.json", "experience_event",
         {"totalPointsIssued": None}, "missing-field", "/totalPointsIssued"),
        ("tierUpgraded", "flat.json", "profile_tier",
         {"upgradedTierNumber": "two"}, "missing-field", "/upgradedTierNumber"),
        ("customerAdded", "wrapped.json", "profile_customer",
         {"enteredAt": 10**20}, "bad-value", "/enteredAt"),
    ],
)  # fmt: skip
def test_mapping_errors_are_value_free(
    name: str, fixture: str, family: str, change: dict[str, Any], kind: str, path: str
) -> None:
    event = with_data(load(name, fixture), **change)
    with pytest.raises(MappingError) as info:
        entity(event, family)
    err = info.value
    assert (err.kind, err.path) == (kind, path)
    assert err.kind in MAPPING_ERROR_KINDS
    assert "not a date" not in str(err) and "@" not in str(err)


def test_mapper_bug_is_reported_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
        raise KeyError("secret@example.com")

    monkeypatch.setitem(MAPPERS, ("tierUpgraded", "profile_tier"), broken)
    with pytest.raises(MappingError) as info:
        entity(load("tierUpgraded", "flat.json"), "profile_tier")
    assert info.value.kind == "mapper-bug"
    assert "secret" not in str(info.value)


def test_context_validation() -> None:
    with pytest.raises(ValueError, match="IANA"):
        MappingContext(source_timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="tenant"):
        MappingContext(tenant="capillary")
    with pytest.raises(ValueError, match="namespace"):
        MappingContext(email_namespace=" ")
    ctx = MappingContext(tier_names={1: "Silver"})
    assert ctx.tier_names is not None and ctx.tier_names[1] == "Silver"


# --------------------------------------------------------------------------- prune


def test_prune_examples() -> None:
    assert prune({"a": None, "b": "", "c": {}, "d": [], "e": 0, "f": False, "g": "x"}) == {
        "e": 0,
        "f": False,
        "g": "x",
    }
    assert prune({"a": {"b": {"c": None}}, "l": [None, "", {}, [], 1, {"x": None}]}) == {"l": [1]}
    assert prune([{"a": ""}]) == []
    assert prune(3) == 3


_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=False)
_tree = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=25,
)


def _has_empty(node: Any) -> bool:
    if isinstance(node, dict):
        return any(v is None or v in ("", {}, []) or _has_empty(v) for v in node.values())
    if isinstance(node, list):
        return any(
            v is None or (v in ("", {}, []) and not isinstance(v, bool)) or _has_empty(v)
            for v in node
        )
    return False


@settings(max_examples=300, deadline=None)
@given(_tree)
def test_prune_property(tree: Any) -> None:
    once = prune(tree)
    assert prune(once) == once  # idempotent
    assert not _has_empty(once)


@settings(max_examples=100, deadline=None)
@given(
    customer=st.integers(1, 10**12),
    amount=st.floats(0, 10**7, allow_nan=False),
    discount=st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)),
    entered=st.integers(946684800000, 4102444799999),
    email=st.one_of(st.none(), st.just(""), st.emails()),
    bill_type=st.sampled_from(["REGULAR", "RETURN", "NOT_INTERESTED", "regular", " RETURN "]),
)
def test_transaction_property_valid_xdm(
    store: SchemaStore,
    customer: int,
    amount: float,
    discount: float | None,
    entered: int,
    email: str | None,
    bill_type: str,
) -> None:
    event = with_data(
        load("transactionAdded", "wrapped.json"),
        customerIdentifiers={"customerId": float(customer), "instore": {"email": email}},
        amount=amount,
        discount=discount,
        enteredAt=entered,
        billType=bill_type,
    )
    result = entity(event, "experience_event")
    assert store.xdm(EVENT_SCHEMA).violations(result) == []
    assert result["identityMap"]["CapillaryCustomerId"][0]["id"] == str(customer)
    assert orjson.dumps(result) == orjson.dumps(entity(event, "experience_event"))


_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "2024-07-08", "2024-07-08T10:00:00", "RETURN", "x@example.com"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_schema_valid_input_always_maps_to_valid_xdm(store: SchemaStore, data: Any) -> None:
    """The contract between the input schemas and the mappers: whatever passes the Capillary
    schema maps to an entity the XDM schema accepts (or a MappingError, never a crash)."""
    path = data.draw(st.sampled_from(VALID), label="fixture")
    event = decode(path.read_bytes())
    mutated = copy.deepcopy(event.data)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = data.draw(st.sampled_from(_paths(mutated)), label="path")
        parent: Any = mutated
        for step in where[:-1]:
            parent = parent[step]
        parent[where[-1]] = data.draw(_json_value, label="value")
    validator = store.capillary(event.name)
    assert validator is not None
    if not validator.is_valid(mutated):
        return
    changed = CanonicalEvent(
        event.name, event.event_id, event.org_id, event.created_at_ms, event.ref_id, mutated,
        event.envelope,
    )  # fmt: skip
    for name, family in MAPPERS:
        if name != event.name:
            continue
        try:
            result = entity(changed, family)
        except MappingError as err:
            assert err.kind in MAPPING_ERROR_KINDS and err.kind != "mapper-bug"
            continue
        assert store.xdm(schema_for(family)).violations(result) == [], (family, mutated)
