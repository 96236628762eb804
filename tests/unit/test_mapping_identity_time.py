"""Identity configuration (namespaces, primary, state, hashing) and time (business time,
source time zone, dates, future timestamps clamped and counted)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from worker.config import ConfigError, MappingSettings, load_settings
from worker.events import CanonicalEvent, decode
from worker.mapping import MappingContext, MappingError, build_entity
from worker.mapping.convert import rfc3339_ms
from worker.schemas import DEFAULT_ROOT, SchemaStore

FIXTURES = DEFAULT_ROOT / "capillary" / "fixtures" / "valid"
EVENT_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
NOW_S = 1_900_000_000.0  # 2030-03-17: after every fixture


def load(name: str, fixture: str) -> CanonicalEvent:
    return decode((FIXTURES / name / fixture).read_bytes())


def changed(event: CanonicalEvent, *, created_at_ms: int | None = None, **data: Any) -> CanonicalEvent:
    new = copy.deepcopy(event.data)
    new.update(data)
    created = event.created_at_ms if created_at_ms is None else created_at_ms
    return CanonicalEvent(
        event.name, event.event_id, event.org_id, created, event.ref_id, new, event.envelope
    )


def ctx(**kwargs: Any) -> MappingContext:
    kwargs.setdefault("clock", lambda: NOW_S)
    return MappingContext(**kwargs)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --------------------------------------------------------------------------- identity


def test_every_identity_with_its_namespace() -> None:
    context = ctx(external_id_namespace="CapExternalId", card_number_namespace="LoyaltyCard")
    idmap = build_entity(load("customerAdded", "api-wrapper.json"), "profile_customer", "t", context)[
        "identityMap"
    ]
    assert {ns: [i["id"] for i in ids] for ns, ids in idmap.items()} == {
        "CapillaryCustomerId": ["164875382"],
        "Email": ["rosma.dewi@example.com"],
        "Phone": ["6282396092287"],
        "CapExternalId": ["MC-0001872"],
        "LoyaltyCard": ["7788123400019876"],
    }
    primaries = [ns for ns, ids in idmap.items() if ids[0]["primary"]]
    assert primaries == ["CapillaryCustomerId"]
    assert {i["authenticatedState"] for ids in idmap.values() for i in ids} == {"authenticated"}


def test_disabled_namespaces_are_not_sent() -> None:
    context = ctx(email_namespace=None, phone_namespace=None)
    idmap = build_entity(load("customerAdded", "wrapped.json"), "profile_customer", "t", context)[
        "identityMap"
    ]
    assert list(idmap) == ["CapillaryCustomerId"]


def test_primary_identity_and_authenticated_state_are_configurable() -> None:
    context = ctx(primary_identity="email", authenticated_state="ambiguous")
    idmap = build_entity(load("pointsRedeemed", "flat.json"), "experience_event", "t", context)[
        "identityMap"
    ]
    assert idmap["Email"] == [
        {"id": "meera.s@example.in", "primary": True, "authenticatedState": "ambiguous"}
    ]
    assert idmap["CapillaryCustomerId"][0]["primary"] is False


def test_primary_falls_back_to_customer_id_when_the_event_lacks_it() -> None:
    # no identifier enrichment: no email in the event
    event = load("customerAdded", "flat-no-enrichment.json")
    idmap = build_entity(event, "profile_customer", "t", ctx(primary_identity="email"))[
        "identityMap"
    ]
    assert idmap == {
        "CapillaryCustomerId": [
            {"id": idmap["CapillaryCustomerId"][0]["id"], "primary": True,
             "authenticatedState": "authenticated"}
        ]
    }  # fmt: skip


def test_hashed_identities_are_sha256_of_trimmed_lower_case(store: SchemaStore) -> None:
    context = ctx(hashed_identities=frozenset({"email", "phone"}), primary_identity="email")
    event = load("customerUpdated", "wrapped-quirks.json")  # "email ": " Rosma.Dewi@Example.com "
    result = build_entity(event, "profile_customer", "t", context)
    assert result["identityMap"]["Email"] == [
        {"id": sha("rosma.dewi@example.com"), "primary": True, "authenticatedState": "authenticated"}
    ]
    assert result["identityMap"]["Phone"][0]["id"] == sha("6282396092287")
    assert result["identityMap"]["CapillaryCustomerId"][0]["id"] == "164875382"  # not hashed
    # the clear values travel nowhere else in the record
    assert "personalEmail" not in result and "mobilePhone" not in result
    text = repr(result)
    assert "rosma.dewi" not in text.lower() and "6282396092287" not in text
    assert store.xdm(PROFILE_SCHEMA).violations(result) == []


def test_hashing_the_customer_id_is_possible_too() -> None:
    context = ctx(hashed_identities=frozenset({"customer_id"}))
    idmap = build_entity(load("tierRenewed", "wrapped.json"), "profile_tier", "t", context)[
        "identityMap"
    ]
    assert idmap["CapillaryCustomerId"][0]["id"] == sha("164875382")


def test_identity_settings_reach_the_context_and_are_validated(tmp_path: Any) -> None:
    settings = MappingSettings(
        email_namespace="HashedEmail", hashed_identities=["email"], primary_identity="email",
        card_number_namespace="Card", authenticated_state="loggedOut", max_future_skew_s=60,
    )  # fmt: skip
    context = MappingContext.from_settings(settings)
    assert context.hashed_identities == {"email"}
    assert context.max_future_skew_ms == 60_000
    assert [s.namespace for s in context.identities] == [
        "CapillaryCustomerId", "HashedEmail", "Phone", "Card"
    ]
    with pytest.raises(ValueError, match="primary_identity"):
        MappingSettings(primary_identity="external_id")  # no namespace configured
    config = tmp_path / "worker.toml"
    config.write_text(
        '[aep]\norg_id = "X@AdobeOrg"\n[[routes]]\nname = "a"\nfamily = "experience_event"\n'
        'inlet_url = "https://dcs.example/collection/x"\ndataset_id = "d"\nschema_id = "s"\n'
        'flow_id = "f"\nauthenticated = false\n[mapping]\nhashed_identities = ["fax"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert "mapping.hashed_identities" in str(info.value)


def test_an_empty_namespace_turns_that_identity_off(tmp_path: Any) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(
        '[aep]\norg_id = "X@AdobeOrg"\n[[routes]]\nname = "a"\nfamily = "experience_event"\n'
        'inlet_url = "https://dcs.example/collection/x"\ndataset_id = "d"\nschema_id = "s"\n'
        'flow_id = "f"\nauthenticated = false\n[mapping]\nphone_namespace = ""\n'
    )
    context = MappingContext.from_settings(load_settings(config).mapping)
    assert [slot.kind for slot in context.identities] == ["customer_id", "email"]
    idmap = build_entity(load("customerAdded", "wrapped.json"), "profile_customer", "t", context)[
        "identityMap"
    ]
    assert set(idmap) == {"CapillaryCustomerId", "Email"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"primary_identity": "card_number"},  # not configured
        {"primary_identity": "nope"},
        {"authenticated_state": "maybe"},
        {"hashed_identities": frozenset({"fax"})},
        {"customer_namespace": " "},
        {"max_future_skew_ms": -1},
    ],
)
def test_context_refuses_bad_identity_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MappingContext(**kwargs)


# --------------------------------------------------------------------------- time


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def test_business_time_is_entered_at_else_created_at() -> None:
    context = ctx()
    points = load("pointsRedeemed", "flat.json")
    assert build_entity(points, "experience_event", "t", context)["timestamp"] == (
        "2024-07-08T12:05:49.027Z"  # createdAt: no enteredAt
    )
    entered = changed(points, enteredAt=1720440000000)
    assert build_entity(entered, "experience_event", "t", context)["timestamp"] == (
        "2024-07-08T12:00:00.000Z"
    )
    local = changed(points, enteredAt="2024-07-08 17:30:00")
    kolkata = ctx(source_timezone="Asia/Kolkata")
    assert build_entity(local, "experience_event", "t", kolkata)["timestamp"] == (
        "2024-07-08T12:00:00.000Z"
    )
    with pytest.raises(MappingError) as info:
        build_entity(changed(points, enteredAt="yesterday-ish"), "experience_event", "t", context)
    assert (info.value.kind, info.value.path) == ("bad-value", "/enteredAt")


def test_future_business_time_is_clamped_to_created_at_and_counted() -> None:
    context = ctx(max_future_skew_ms=60_000)
    bill = load("transactionAdded", "wrapped.json")
    created = bill.created_at_ms
    ahead = changed(bill, enteredAt=int(NOW_S * 1000) + 3_600_000)  # an hour in the future
    assert build_entity(ahead, "experience_event", "t", context)["timestamp"] == (
        "2023-05-12T07:00:00.089Z"  # createdAt
    )
    assert context.clamps.take() == 1 and context.clamps.take() == 0
    within = changed(bill, enteredAt=int(NOW_S * 1000) + 30_000)  # inside the skew: kept
    assert build_entity(within, "experience_event", "t", context)["timestamp"].startswith("2030")
    assert context.clamps.count == 0
    past = build_entity(bill, "experience_event", "t", context)["timestamp"]
    assert past == "2023-05-12T08:29:20.000Z"  # after createdAt, yet in the past: untouched
    assert past > rfc3339_ms(created) and context.clamps.count == 0


def test_created_at_in_the_future_is_clamped_to_now() -> None:
    context = ctx(max_future_skew_ms=0)
    future = changed(load("tierRenewed", "wrapped.json"), created_at_ms=int(NOW_S * 1000) + 10_000)
    assert build_entity(future, "experience_event", "t", context)["timestamp"] == (
        "2030-03-17T17:46:40.000Z"  # NOW_S
    )
    assert context.clamps.take() == 1
    # profile records carry no event timestamp: nothing clamped, createdAt kept for the audit
    record = build_entity(future, "profile_tier", "t", context)
    assert record["extSourceSystemAudit"]["lastUpdatedDate"] == "2030-03-17T17:46:50.000Z"
    assert context.clamps.take() == 0


class _Record:
    """A Kafka message's ``timestamp()``: (type, epoch ms); type 0 is "not available"."""

    def __init__(self, ts_type: int, ts: int) -> None:
        self._ts = (ts_type, ts)

    def timestamp(self) -> tuple[int, int]:
        return self._ts


def test_created_at_in_the_future_is_clamped_to_the_kafka_timestamp_whatever_the_clock() -> None:
    """A redelivery maps the same bytes: the record's timestamp travels with it, "now" does not."""
    appended = int(NOW_S * 1000) - 5_000
    future = changed(load("tierRenewed", "wrapped.json"), created_at_ms=int(NOW_S * 1000) + 3_600_000)
    stamps = []
    for later_s in (0, 60, 86_400):  # first delivery, a minute later, a day later
        context = ctx(max_future_skew_ms=0, clock=lambda later_s=later_s: NOW_S + later_s)
        context.clamps.record = _Record(1, appended)
        stamps.append(build_entity(future, "experience_event", "t", context)["timestamp"])
        assert context.clamps.take() == 1
    assert stamps == [rfc3339_ms(appended)] * 3
    # No usable timestamp on the record (not available, or itself ahead): now, as before.
    for record in (_Record(0, -1), _Record(1, int(NOW_S * 1000) + 3_600_000)):
        context = ctx(max_future_skew_ms=0)
        context.clamps.record = record
        assert build_entity(future, "experience_event", "t", context)["timestamp"] == (
            "2030-03-17T17:46:40.000Z"  # NOW_S
        )


def test_past_events_map_identically_whatever_the_clock() -> None:
    event = load("promotionEarned", "flat.json")
    early = build_entity(event, "experience_event", "t", ctx(clock=lambda: 1_730_000_000.0))
    late = build_entity(event, "experience_event", "t", ctx(clock=lambda: 4_000_000_000.0))
    assert early == late


def test_date_only_fields_become_xdm_dates(store: SchemaStore) -> None:
    utc, kolkata = ctx(), ctx(source_timezone="Asia/Kolkata")
    reminder = load("pointsExpiryReminder", "wrapped-expiry-millis.json")  # 1725062399000
    # 2024-08-30T23:59:59Z is already 2024-08-31 in Kolkata
    assert build_entity(reminder, "experience_event", "t", utc)["_capillary"][
        "scheduledExpiryDate"
    ] == "2024-08-30"
    assert build_entity(reminder, "experience_event", "t", kolkata)["_capillary"][
        "scheduledExpiryDate"
    ] == "2024-08-31"
    flat = load("pointsExpiryReminder", "flat.json")
    assert build_entity(flat, "experience_event", "t", utc)["_capillary"][
        "scheduledExpiryDate"
    ] == "2024-08-31"
    tier = build_entity(load("tierRenewed", "flat-expiry-millis.json"), "profile_tier", "t", utc)
    assert tier["loyalty"]["tierExpiryDate"] == "2025-12-31"
    placeholder = load("tierDowngradeReminder", "wrapped-placeholder-date.json")
    result = build_entity(placeholder, "experience_event", "t", utc)
    assert "scheduledDowngradeDate" not in result["_capillary"]
    assert store.xdm(EVENT_SCHEMA).violations(result) == []
