"""Realistic Capillary sample events, and the ``produce-samples`` command that sends them to Kafka.

``generate_samples`` is pure and deterministic for a seed: the same arguments give the same
bytes, so load tests, benchmarks and bug reports can be replayed exactly. Values look like
Capillary's published samples (orgs, stores, tills, bills, programs, tiers) with sizes of about
0.5-1.5 KB; both envelopes occur, and some valid samples carry the SPEC 1.2 quirks (keys with
stray spaces, float ids, ``" START"``, ``null`` objects, placeholder and empty strings). Every
identifier is synthetic (``example.*`` mail domains, made-up numbers).

Invalid samples (``invalid_share``) are spread evenly through the stream and come in kinds:
``invalid-json`` (truncated), ``schema-violation`` (a required field missing or mistyped),
``unknown-event`` (an event name the worker does not support), ``schema-registry-framed``
(Confluent wire format) and ``missing-event-id`` (an envelope without ``eventId``).
"""

from __future__ import annotations

import random
import string
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import click
import orjson

__all__ = [
    "INVALID_KINDS",
    "SUPPORTED_EVENTS",
    "Sample",
    "generate_samples",
    "produce_samples_command",
]

# 2024-07-01T00:00:00Z: samples are in the past (AEP wants ExperienceEvent timestamps there).
BASE_TIME_MS: Final = 1_719_792_000_000
INVALID_KINDS: Final = (
    "invalid-json",
    "schema-violation",
    "unknown-event",
    "schema-registry-framed",
    "missing-event-id",
)
UNKNOWN_EVENT_NAMES: Final = ("badgeEarned", "giftCardIssued", "referralCompleted")


@dataclass(frozen=True, slots=True)
class Sample:
    key: bytes  # the customer id, UTF-8
    value: bytes  # the Kafka message value
    event_name: str
    event_id: str
    valid: bool
    kind: str = "valid"  # "valid" or one of INVALID_KINDS


# --------------------------------------------------------------------------- reference data


@dataclass(frozen=True, slots=True)
class _Org:
    org_id: int
    currency: str
    phone_prefix: str
    mail_domain: str
    program_id: int
    program_name: str
    stores: tuple[tuple[str, str, str], ...]  # (code, name, externalId)


_ORGS: Final = (
    _Org(
        150956, "INR", "91", "example.in", 978, "Kanmo Rewards",
        (
            ("blr.indiranagar", "Indiranagar 100ft Road", "BLR-IND-01"),
            ("mum.phoenix.lowerparel", "Phoenix Palladium Lower Parel", "MUM-PHX-02"),
            ("del.selectcity.saket", "Select Citywalk Saket", "DEL-SCW-03"),
        ),
    ),
    _Org(
        150698, "IDR", "62", "example.co.id", 1204, "Mothercare Club",
        (
            ("kanmo.idn.mothercare.rpm", "Mothercare RSIA Paramount Makassar", "MOTHERCARERPM"),
            ("kanmo.idn.elc.pim", "ELC Pondok Indah Mall", "ELCPIM"),
        ),
    ),
    _Org(
        100458, "SGD", "65", "example.sg", 311, "Lion City Points",
        (
            ("sg.vivocity", "VivoCity", "SG-VIVO"),
            ("sg.ion.orchard", "ION Orchard", "SG-ION"),
        ),
    ),
    _Org(
        50261, "AED", "971", "example.ae", 2725, "Desert Stars",
        (("dxb.mall.of.emirates", "Mall of the Emirates", "DXB-MOE"),),
    ),
)  # fmt: skip
_TIERS: Final = ((1, "Silver"), (2, "Gold"), (3, "Platinum"), (4, "Diamond"))
_FIRST: Final = (
    "Aarav", "Ananya", "Rosma", "Budi", "Siti", "Wei Ling", "Mei", "Omar", "Fatima", "Arjun",
    "Priya", "Dewi", "Rahul", "Nur", "Kavya", "Hassan", "Lakshmi", "Agus", "Chloe", "Vikram",
)  # fmt: skip
_LAST: Final = (
    "Sharma", "Dewi", "Santoso", "Tan", "Lim", "Al Mansoori", "Iyer", "Wijaya", "Rao", "Nair",
    "Kumar", "Halim", "Ong", "Khan", "Menon", "Pratama", "Goh", "Reddy", "Saputra", "Chua",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Customer:
    customer_id: int
    org: _Org
    first: str
    last: str
    email: str
    mobile: str
    external_id: str
    card_number: str
    store: tuple[str, str, str]


def _customer(seed: int, index: int) -> _Customer:
    rng = random.Random(f"capillary-sample-customer:{seed}:{index}")
    org = _ORGS[index % len(_ORGS)]
    first = rng.choice(_FIRST)
    last = rng.choice(_LAST)
    handle = f"{first}.{last}".lower().replace(" ", "")
    return _Customer(
        customer_id=100_000_000 + (index * 7919 + seed * 104_729) % 899_999_999,
        org=org,
        first=first,
        last=last,
        email=f"{handle}{rng.randrange(1, 999)}@{org.mail_domain}",
        mobile=org.phone_prefix
        + "".join(rng.choices(string.digits, k=9 if org.org_id != 150956 else 10)),
        external_id=f"EXT{rng.randrange(10**7, 10**8)}",
        card_number="".join(rng.choices(string.digits, k=16)),
        store=rng.choice(org.stores),
    )


# --------------------------------------------------------------------------- event data


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("0123456789abcdef", k=n))


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def _identifiers(rng: random.Random, c: _Customer) -> dict[str, Any]:
    out: dict[str, Any] = {"customerId": c.customer_id}
    if rng.random() < 0.75:  # Capillary's identifier enrichment is on for most webhooks
        out["instore"] = {
            "mobile": c.mobile,
            "email": c.email,
            "externalId": c.external_id,
            "card_number": c.card_number,
        }
    return out


def _entered_by(rng: random.Random, c: _Customer) -> dict[str, Any]:
    code, name, external = c.store
    till = f"{code}.till{rng.randrange(1, 9)}"
    return {
        "id": 200_000_000 + rng.randrange(10**6),
        "till": {"code": till, "name": till},
        "store": {
            "code": code,
            "name": name,
            "externalId": external,
            "externalId1": "",
            "externalId2": "",
        },
    }


def _program(c: _Customer, with_tiers: bool = True) -> dict[str, Any]:
    tiers = [{"tierNumber": n, "tierName": name} for n, name in _TIERS]
    return {
        "id": c.org.program_id,
        "name": c.org.program_name,
        "isDefault": True,
        "pointsToCurrencyRatio": 1.0,
        "tiers": tiers if with_tiers else None,
    }


def _customer_added(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    return {
        "loyaltyType": "LOYALTY" if rng.random() < 0.95 else "NON_LOYALTY",
        "source": rng.choice(("instore", "instore", "ecommerce", "mobile_app")),
        "firstName": c.first,
        "lastName": c.last,
        "enteredAt": created - rng.randrange(50, 5_000),
        "enteredBy": _entered_by(rng, c),
        "customerIdentifiers": _identifiers(rng, c),
        "extendedFields": {"gender": rng.choice(("Male", "Female", "")), "city": ""},
    }


def _transaction_added(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    bill_type = rng.choices(("REGULAR", "RETURN", "NOT_INTERESTED"), (90, 7, 3))[0]
    gross = round(rng.uniform(5, 900) * (1000 if c.org.currency == "IDR" else 1), 2)
    discount = round(gross * rng.choice((0, 0, 0.05, 0.1, 0.2)), 2)
    late = rng.random() < 0.05  # a late upload: business time well before createdAt
    entered = created - (
        rng.randrange(3_600_000, 172_800_000) if late else rng.randrange(100, 20_000)
    )
    lines = rng.randrange(1, 8)
    return {
        "amount": round(gross - discount, 2),
        "grossAmount": gross,
        "discount": discount,
        "billNumber": f"{c.store[2]}-{rng.randrange(10**6, 10**7)}",
        "billClientId": f"POS-{rng.randrange(1000, 9999)}-{rng.randrange(10**5, 10**6)}",
        "enteredAt": entered,
        "transactionId": rng.randrange(60_000_000, 900_000_000),
        "billType": bill_type,
        "lineItemCount": lines,
        "currencyCode": c.org.currency,
        "deliveryStatus": rng.choice((None, None, None, "PLACED", "SHIPPED", "DELIVERED")),
        "enteredBy": _entered_by(rng, c),
        "customerIdentifiers": _identifiers(rng, c),
    }


def _points_issued(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    regular = float(rng.randrange(5, 500))
    promos: list[dict[str, Any]] = [
        {
            "promotionIdentifier": rng.choice(("MONSOON24", "BDAY-BONUS", "WEEKEND2X", "APPONLY")),
            "promotionType": rng.choice(("BILL", "LINEITEM", "CUSTOMER")),
            "promotionPoints": float(rng.randrange(5, 100)),
            "promotionPointsExpiryDate": created + 90 * 86_400_000,
        }
        for _ in range(rng.choice((0, 0, 1, 2)))
    ]
    total = regular + sum(float(p["promotionPoints"]) for p in promos)
    lifetime = float(rng.randrange(int(total), int(total) + 20_000))
    transaction = rng.randrange(60_000_000, 900_000_000)
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "entityInformation": {"entityType": "USER", "entityId": c.customer_id},
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.8),
        "programCurrentPoints": float(rng.randrange(int(total), int(lifetime) + 1)),
        "programLifetimePoints": lifetime,
        "totalPointsIssued": total,
        "regularPointsIssued": regular,
        "regularPointsBreakup": [{"points": regular, "expiryAt": created + 365 * 86_400_000}],
        "promotionalPointsIssued": promos,
        "triggeringActivity": {
            "name": "TransactionAdd",
            "identifiers": [
                {"key": "TransactionId", "value": str(transaction)},
                {"key": "BillNumber", "value": f"{c.store[2]}-{rng.randrange(10**6, 10**7)}"},
            ],
        },
    }


def _tier_upgraded(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    new = rng.randrange(2, len(_TIERS) + 1)
    name = _TIERS[new - 1][1]
    expiry_ms = created + rng.randrange(180, 730) * 86_400_000
    expiry = time.strftime("%Y-%m-%d", time.gmtime(expiry_ms // 1000))
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "entityInformation": {"entityType": "USER", "entityId": c.customer_id},
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.7),
        "previousTierNumber": new - 1,
        "upgradedTierNumber": new,
        "upgradeType": rng.choice(("STRATEGY", "STRATEGY", "MANUAL")),
        "tierExpiryDate": expiry,
        "tierExpiryDateInMillis": expiry_ms,
        "notes": f"Upgrading to Slab : Slab[{new}]: Name [{name.upper()}] "
        f"Description [{name.lower()}] , Criteria: Primary",
        "currentDateStoreTz": time.strftime("%Y-%m-%d", time.gmtime(created // 1000)),
    }


def _customer_updated(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    data = _customer_added(rng, c, created)
    data["enteredAt"] = created - rng.randrange(50, 2_000)  # when the update was recorded
    fields = ("email", "mobile", "lastName", "city", "dateOfBirth")
    changed = rng.sample(fields, rng.randrange(1, 3))
    data["updatedFields"] = [
        {"fieldName": name, "previousValue": "", "currentValue": "",
         "fieldType": "IDENTIFIER" if name in ("email", "mobile") else "STANDARD"}
        for name in changed
    ]  # fmt: skip
    suspended = rng.random() < 0.05
    data["customerStatus"] = {
        "previousStatus": "ACTIVE", "currentStatus": "SUSPENDED" if suspended else "ACTIVE",
        "previousLabel": "Active", "currentLabel": "Fraud review" if suspended else "Active",
        "reason": "Manual review" if suspended else None,
    }  # fmt: skip
    data["triggeringActivity"] = {"name": "CustomerUpdate", "requestId": _hex(rng, 16)}
    return data


def _transaction_updated(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    data = _transaction_added(rng, c, created)
    data["enteredAt"] = created - rng.randrange(3_600_000, 604_800_000)  # the original bill
    data["deliveryStatus"] = rng.choice(("PROCESSED", "SHIPPED", "DELIVERED", "RETURNED"))
    data["billType"] = "REGULAR"
    return data


def _points_redeemed(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    points = float(rng.randrange(50, 1_000))
    balance = float(rng.randrange(0, 20_000))
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.8),
        "totalPointsRedeemed": points,
        "redeemedPointsCurrencyValue": round(points / 10, 2),
        "redemptionSummaryId": rng.randrange(10**7, 10**8),
        "redemptionBillNumber": f"{c.store[2]}-{rng.randrange(10**6, 10**7)}",
        "isGroupRedemption": False,
        "redemptionFromEarningPrograms": [
            {
                "programId": c.org.program_id,
                "pointsRedeemed": points,
                "programCurrentPoints": balance,
            }
        ],
    }


def _points_expired(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.5),
        "pointsExpired": float(rng.randrange(5, 800)),
    }


def _points_expiry_reminder(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    expiry_ms = created + rng.randrange(7, 45) * 86_400_000
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.5),
        "pointsScheduledForExpiry": float(rng.randrange(5, 800)),
        "scheduledExpiryDate": time.strftime("%Y-%m-%d", time.gmtime(expiry_ms // 1000)),
    }


def _points_expiry_change(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    kinds = rng.sample(("REGULAR", "PROMOTIONAL"), rng.randrange(1, 3))
    points = [float(rng.randrange(5, 300)) for _ in kinds]
    split = [
        {"pointsAwardedId": rng.randrange(10**7, 10**8), "programId": c.org.program_id,
         "points": value, "pointsType": kind}
        for kind, value in zip(kinds, points, strict=True)
    ]  # fmt: skip
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=False),
        "totalPoinstDeducted": sum(points),  # sic, as Capillary spells it
        "programPointsSplit": split,
        "reason": rng.choice(("Expiry strategy changed", "Manual extension", "Program migration")),
    }


def _tier_change(
    rng: random.Random, c: _Customer, created: int, field: str, new: int
) -> dict[str, Any]:
    expiry_ms = created + rng.randrange(180, 730) * 86_400_000
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "entityInformation": {"entityType": "USER", "entityId": c.customer_id},
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=rng.random() < 0.7),
        field: new,
        "tierExpiryDate": time.strftime("%Y-%m-%d", time.gmtime(expiry_ms // 1000)),
        "tierExpiryDateInMillis": expiry_ms,
    }


def _tier_downgraded(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    new = rng.randrange(1, len(_TIERS))
    data = _tier_change(rng, c, created, "downgradedTierNumber", new)
    data["previousTierNumber"] = new + 1
    data["notes"] = f"Downgrading to Slab : Slab[{new}]: Name [{_TIERS[new - 1][1].upper()}]"
    return data


def _tier_renewed(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    data = _tier_change(rng, c, created, "currentTierNumber", rng.randrange(1, len(_TIERS) + 1))
    data["renewType"] = rng.choice(("STRATEGY", "MANUAL"))
    return data


def _tier_downgrade_reminder(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    data = _tier_change(rng, c, created, "currentTierNumber", rng.randrange(2, len(_TIERS) + 1))
    when = created + rng.randrange(7, 30) * 86_400_000
    data["scheduledDowngradeDate"] = time.strftime("%Y-%m-%d", time.gmtime(when // 1000))
    del data["tierExpiryDate"], data["tierExpiryDateInMillis"]
    return data


def _promotion_earned(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    promotion, name = rng.choice(
        ((44120, "Monsoon double points"), (44121, "Birthday bonus"), (44135, "App-only weekend"))
    )
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "loyaltyProgramDetails": _program(c, with_tiers=False),
        "promotionId": promotion,
        "promotionName": name,
        "promotionEarnedDate": created - rng.randrange(100, 5_000),
        "promotionEarnedExpiryDate": time.strftime(
            "%Y-%m-%d", time.gmtime((created + 90 * 86_400_000) // 1000)
        ),
        "earnedId": rng.randrange(10**6, 10**7),
        "issualId": f"ISS-{rng.randrange(1000, 9999)}",
    }


def _reward_issued(rng: random.Random, c: _Customer, created: int) -> dict[str, Any]:
    start = created - created % 86_400_000
    return {
        "customerIdentifiers": _identifiers(rng, c),
        "loyaltyProgramId": c.org.program_id,
        "rewardId": rng.randrange(300_000, 400_000),
        "rewardName": rng.choice(("Coffee voucher", "10% off next bill", "Free delivery")),
        "type": rng.choice(("VOUCHER", "GIFT", "DISCOUNT")),
        "redemptionType": "POINTS",
        "startDate": start,
        "endDate": start + rng.randrange(30, 180) * 86_400_000 - 1,
        "intouchPoints": float(rng.randrange(100, 2_000)),
        "transactionId": rng.randrange(60_000_000, 900_000_000),
        "vendorRewardDetails": {"vendorVoucher": f"{_alnum(rng, 4)}-{_alnum(rng, 4)}".upper()},
    }


_GENERATORS: Final[dict[str, Callable[[random.Random, _Customer, int], dict[str, Any]]]] = {
    "customerAdded": _customer_added,
    "customerUpdated": _customer_updated,
    "transactionAdded": _transaction_added,
    "transactionUpdated": _transaction_updated,
    "pointsIssued": _points_issued,
    "pointsRedeemed": _points_redeemed,
    "pointsExpired": _points_expired,
    "pointsExpiryReminder": _points_expiry_reminder,
    "pointsExpiryChange": _points_expiry_change,
    "tierUpgraded": _tier_upgraded,
    "tierDowngraded": _tier_downgraded,
    "tierRenewed": _tier_renewed,
    "tierDowngradeReminder": _tier_downgrade_reminder,
    "promotionEarned": _promotion_earned,
    "rewardIssued": _reward_issued,
}
SUPPORTED_EVENTS: Final = tuple(_GENERATORS)
# Relative frequencies, roughly as in a retail loyalty program's traffic.
_WEIGHTS: Final = {
    "customerAdded": 6,
    "customerUpdated": 5,
    "transactionAdded": 40,
    "transactionUpdated": 4,
    "pointsIssued": 25,
    "pointsRedeemed": 6,
    "pointsExpired": 2,
    "pointsExpiryReminder": 2,
    "pointsExpiryChange": 1,
    "tierUpgraded": 3,
    "tierDowngraded": 1,
    "tierRenewed": 1,
    "tierDowngradeReminder": 1,
    "promotionEarned": 2,
    "rewardIssued": 1,
}


# --------------------------------------------------------------------------- envelopes, quirks


def _envelope(
    rng: random.Random, name: str, event_id: str, org: int, created: int, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The message document and the object that holds eventName/apiRequestId (for quirks)."""
    common: dict[str, Any] = {
        "eventName": name,
        "orgId": org,
        "refId": f"{org}_{_alnum(rng, 10)}",
        "apiRequestId": _hex(rng, 32),
        "createdAt": created,
        "loyaltyEventId": _alnum(rng, 10) if name != "customerAdded" else None,
    }
    if rng.random() < 0.5:
        doc = {"eventId": event_id, **common}
        if rng.random() < 0.3:
            doc["traceAttributes"] = {"traceId": _hex(rng, 32), "spanId": _hex(rng, 16)}
        doc["data"] = data
        return doc, doc
    attributes = {**common, "data": data}
    doc = {
        "eventId": event_id,
        "eventLogId": rng.randrange(10**7, 10**8),
        "eventType": f"{org}_{name}" if rng.random() < 0.7 else name,
        "consumerGroupId": None,
        "actionType": "START",
        "timeStamp": created + rng.randrange(5, 300),
        "attributes": attributes,
    }
    return doc, attributes


def _rename(obj: dict[str, Any], old: str, new: str) -> None:
    if old in obj:
        obj[new] = obj.pop(old)


def _apply_quirks(rng: random.Random, doc: dict[str, Any], inner: dict[str, Any]) -> None:
    """SPEC 1.2 quirks that the worker must accept (the sample stays valid)."""
    data: dict[str, Any] = inner["data"]
    ids = data.get("customerIdentifiers", {})
    quirks: list[Callable[[], None]] = [
        lambda: _rename(inner, "apiRequestId", "apiRequestId "),
        lambda: _rename(doc, "timeStamp", " timeStamp"),
        lambda: _rename(ids.get("instore") or {}, "email", "email "),
        lambda: ids.__setitem__("customerId", float(ids["customerId"])),
        lambda: inner.__setitem__("createdAt", float(inner["createdAt"])),
        lambda: doc.__setitem__("actionType", " START") if "actionType" in doc else None,
        lambda: data.__setitem__("enteredBy", None) if "enteredBy" in data else None,
        lambda: (data.get("loyaltyProgramDetails") or {}).__setitem__("tiers", None),
        lambda: (
            data.__setitem__("tierExpiryDate", "tierExpiryDate")
            if "tierExpiryDate" in data
            else None
        ),
        lambda: data.__setitem__("lastName", "") if "lastName" in data else None,
    ]
    for quirk in rng.sample(quirks, rng.randrange(1, 4)):
        quirk()


# --------------------------------------------------------------------------- invalid samples


def _break(
    rng: random.Random, kind: str, doc: dict[str, Any], inner: dict[str, Any], name: str
) -> bytes:
    data: dict[str, Any] = inner["data"]
    if kind == "schema-violation":
        def drop(field: str) -> Callable[[], None]:
            return lambda: data.pop(field)

        def stringify(field: str) -> Callable[[], None]:
            return lambda: data.__setitem__(field, str(data[field]))

        breakers: dict[str, Sequence[Callable[[], None]]] = {
            "customerAdded": (
                drop("enteredAt"),
                lambda: data.__setitem__("enteredAt", 1_719_792_000),
            ),
            "customerUpdated": (lambda: data.__setitem__("enteredAt", 1_719_792_000),),
            "transactionAdded": (
                stringify("amount"),
                drop("billNumber"),
                lambda: data.__setitem__("currencyCode", "Rupees"),
            ),
            "transactionUpdated": (drop("billNumber"), stringify("amount")),
            "pointsIssued": (stringify("totalPointsIssued"), drop("loyaltyProgramId")),
            "pointsRedeemed": (stringify("totalPointsRedeemed"), drop("totalPointsRedeemed")),
            "pointsExpired": (stringify("pointsExpired"), drop("pointsExpired")),
            "pointsExpiryReminder": (
                drop("scheduledExpiryDate"),
                lambda: data.__setitem__("scheduledExpiryDate", "next month"),
            ),
            "pointsExpiryChange": (stringify("totalPoinstDeducted"),),
            "tierUpgraded": (stringify("upgradedTierNumber"), drop("upgradedTierNumber")),
            "tierDowngraded": (stringify("downgradedTierNumber"), drop("downgradedTierNumber")),
            "tierRenewed": (stringify("currentTierNumber"), drop("currentTierNumber")),
            "tierDowngradeReminder": (stringify("currentTierNumber"),),
            "promotionEarned": (drop("promotionId"),),
            "rewardIssued": (drop("rewardId"), stringify("intouchPoints")),
        }
        rng.choice(breakers[name])()
        if rng.random() < 0.5:
            data["customerIdentifiers"] = {"instore": data["customerIdentifiers"].get("instore")}
        return orjson.dumps(doc)
    if kind == "unknown-event":
        unknown = rng.choice(UNKNOWN_EVENT_NAMES)
        inner["eventName"] = unknown
        if "eventType" in doc:
            doc["eventType"] = f"{inner['orgId']}_{unknown}"
        return orjson.dumps(doc)
    if kind == "missing-event-id":
        doc.pop("eventId", None)
        return orjson.dumps(doc)
    if kind == "schema-registry-framed":
        return b"\x00" + rng.randrange(1, 5000).to_bytes(4, "big") + orjson.dumps(doc)
    # invalid-json: a value cut short, as a broken producer or a bad copy-paste leaves it
    raw = orjson.dumps(doc)
    return raw[: rng.randrange(len(raw) // 4, len(raw) - 1)]


# --------------------------------------------------------------------------- generator


def generate_samples(
    count: int | None,
    *,
    seed: int,
    invalid_share: float = 0.0,
    event_names: Sequence[str] | None = None,
) -> Iterator[Sample]:
    """``count`` samples (``None``: endless), deterministic for ``seed``.

    ``invalid_share`` of them (exactly ``floor(n * share)`` among the first ``n``, evenly spread)
    are invalid, of varied kinds. ``event_names`` limits the events (default: all supported).
    Keys are customer ids; a customer's events share a key, so they share a partition.
    """
    if not 0.0 <= invalid_share <= 1.0:
        raise ValueError("invalid_share must be between 0 and 1")
    names = tuple(event_names) if event_names else SUPPORTED_EVENTS
    unknown = [n for n in names if n not in _GENERATORS]
    if unknown:
        raise ValueError(f"no sample generator for {unknown}; supported: {list(SUPPORTED_EVENTS)}")
    weights = [_WEIGHTS[n] for n in names]
    rng = random.Random(f"capillary-samples:{seed}")
    population = 5_000
    created = BASE_TIME_MS + seed % 1000 * 86_400_000
    customers: dict[int, _Customer] = {}
    index = 0
    while count is None or index < count:
        name = rng.choices(names, weights)[0]
        number = rng.randrange(population)
        customer = customers.get(number)
        if customer is None:
            customer = customers[number] = _customer(seed, number)
        created += rng.randrange(1, 2_000)
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        data = _GENERATORS[name](rng, customer, created)
        doc, inner = _envelope(rng, name, event_id, customer.org.org_id, created, data)
        key = str(customer.customer_id).encode()
        invalid = int((index + 1) * invalid_share) > int(index * invalid_share)
        index += 1
        if invalid:
            kind = rng.choice(INVALID_KINDS)
            value = _break(rng, kind, doc, inner, name)
            shown = inner["eventName"] if kind == "unknown-event" else name
            yield Sample(key, value, shown, event_id, False, kind)
            continue
        if rng.random() < 0.15:
            _apply_quirks(rng, doc, inner)
        if rng.random() < 0.05:
            value = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        else:
            value = orjson.dumps(doc)
        yield Sample(key, value, name, event_id, True)


# --------------------------------------------------------------------------- command


def _parse_config(pairs: Sequence[str]) -> dict[str, str]:
    config: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-X")
        config[key.strip()] = value.strip()
    return config


@click.command("produce-samples")
@click.option(
    "--bootstrap-servers", required=True, help="Kafka bootstrap servers, HOST:PORT[,...]."
)
@click.option("--topic", required=True, help="Topic to produce to.")
@click.option(
    "--count", type=click.IntRange(min=0), default=None, help="How many samples (default 1000)."
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Samples per second."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to produce at --rate.",
)
@click.option(
    "--invalid-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of invalid samples.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed: the same seed gives the same samples.",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(SUPPORTED_EVENTS),
    help="Only these events (repeatable).",
)
@click.option(
    "-X",
    "config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka producer setting (repeatable).",
)
def produce_samples_command(
    bootstrap_servers: str,
    topic: str,
    count: int | None,
    rate: float | None,
    duration: float | None,
    invalid_share: float,
    seed: int,
    events: tuple[str, ...],
    config: tuple[str, ...],
) -> None:
    """Produce realistic Capillary sample events (some invalid, on request) to a Kafka topic."""
    from confluent_kafka import KafkaException, Producer

    if (rate is None) != (duration is None):
        raise click.UsageError("--rate and --duration go together")
    if rate is not None and count is not None:
        raise click.UsageError("use either --count or --rate with --duration")
    total = (
        int(rate * duration)
        if rate is not None and duration is not None
        else (count if count is not None else 1000)
    )

    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "capillary-aep-produce-samples",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "acks": "all",
        "enable.idempotence": True,
    }
    settings.update(_parse_config(config))
    try:
        producer = Producer(settings)
    except KafkaException as exc:
        raise click.ClickException(f"cannot create the producer: {exc}") from None

    delivered = 0
    failures: Counter[str] = Counter()

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            failures[str(err.name() if hasattr(err, "name") else err)] += 1

    kinds: Counter[str] = Counter()
    start = time.monotonic()
    for produced, sample in enumerate(
        generate_samples(total, seed=seed, invalid_share=invalid_share, event_names=events or None)
    ):
        if rate is not None:
            ahead = produced / rate - (time.monotonic() - start)
            if ahead > 0:
                producer.poll(ahead)
        while True:
            try:
                producer.produce(topic, sample.value, sample.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        kinds[sample.kind] += 1
        producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.monotonic() - start

    produced_n = sum(kinds.values())
    valid = kinds.pop("valid", 0)
    click.echo(
        f"produced {produced_n} samples to {topic} in {elapsed:.2f}s "
        f"({produced_n / elapsed if elapsed > 0 else 0:.0f}/s), seed {seed}"
    )
    click.echo(f"  valid    {valid}")
    click.echo(
        f"  invalid  {sum(kinds.values())}"
        + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")" if kinds else "")
    )
    click.echo(f"  delivered {delivered}, failed {sum(failures.values())}, undelivered {remaining}")
    if failures or remaining:
        for reason, n in sorted(failures.items()):
            click.echo(f"  delivery failure {reason}: {n}", err=True)
        sys.exit(1)
