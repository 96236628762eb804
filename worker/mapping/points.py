"""Points events -> loyalty ExperienceEvents and the points-balance profile fragment.

pointsIssued, pointsRedeemed, pointsExpired, pointsExpiryReminder, pointsExpiryChange.

There is no standard loyalty ``eventType`` in XDM: points events use ``loyalty.<eventName>``
(SPEC 4). Their ``timestamp`` is ``enteredAt`` when the event has one, else Capillary's
``createdAt``. Points gained and spent go to the Loyalty Event Details field group
(``loyalty.pointsGained[]``, ``loyalty.pointsRedemption[]``); what it has no field for (expired
points, reminders, expiry changes) goes under the tenant object.

The points-balance profile family (``profile_points``) is ``loyalty.points`` (the balance,
required) and ``loyalty.lifetimePoints`` (when the event carries it), for events that state
the balance after themselves: pointsIssued and pointsRedeemed by default; pointsExpired only on
routes that ask for it, since Capillary does not always send its balance.
"""

from __future__ import annotations

import math
from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext, MappingError
from worker.mapping.convert import (
    any_date,
    business_timestamp,
    id_int,
    id_text,
    items,
    number,
    obj,
    text,
)
from worker.mapping.identity import (
    audit,
    clean_event_details,
    customer_id,
    event_details,
    identity_map,
    profile_details,
)


def _required_points(data: dict[str, Any], field: str, what: str) -> float | int:
    found = number(data.get(field))
    if found is None:
        raise MappingError("missing-field", f"/{field}", f"{what} must be a number")
    return found


def _transaction_id(data: dict[str, Any]) -> str | None:
    """The bill behind the points, from ``triggeringActivity.identifiers[{key: TransactionId}]``."""
    for item in items(obj(data.get("triggeringActivity")).get("identifiers")):
        entry = obj(item)
        key = text(entry.get("key"))
        if key is not None and key.replace("_", "").lower() == "transactionid":
            return text(entry.get("value"))
    return None


def _adds_up(parts: list[dict[str, Any]], total: float | int) -> bool:
    return bool(parts) and math.isclose(
        sum(p["value"] for p in parts), total, rel_tol=1e-9, abs_tol=1e-9
    )


def _gain(
    value: float | int, program: str | None, transaction: str | None, promotion: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": value}
    if program is not None:
        entry["loyaltyProgramId"] = program
    if transaction is not None:
        entry["transactionId"] = transaction
    if promotion is not None:
        entry["promotionId"] = promotion
    return entry


def _points_gained(
    data: dict[str, Any], total: float | int, program: str | None, transaction: str | None
) -> list[dict[str, Any]]:
    """One entry per source of points (regular, each promotion) when they add up to the total,
    otherwise a single entry with the total: the sum of ``pointsGained[].value`` is always
    ``totalPointsIssued``. Entries carry no empty values."""
    parts: list[dict[str, Any]] = []
    regular = number(data.get("regularPointsIssued"))
    if regular:
        parts.append(_gain(regular, program, transaction))
    for item in items(data.get("promotionalPointsIssued")):
        promo = obj(item)
        value = number(promo.get("promotionPoints"))
        if value:
            parts.append(_gain(value, program, transaction, text(promo.get("promotionIdentifier"))))
    if _adds_up(parts, total):
        return parts
    return [_gain(total, program, transaction)]


def _loyalty_event(
    event: CanonicalEvent, ctx: MappingContext, cid: str, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "timestamp": business_timestamp(event, ctx),
        "eventType": f"loyalty.{event.name}",
        "identityMap": identity_map(event, ctx, cid),
        ctx.tenant: details,
    }


def points_issued_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    total = _required_points(data, "totalPointsIssued", "points issued")
    program = id_text(data.get("loyaltyProgramId"))
    transaction = _transaction_id(data)
    promotional = [
        number(obj(p).get("promotionPoints")) for p in items(data.get("promotionalPointsIssued"))
    ]

    details = clean_event_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    if transaction is not None:
        details["transactionId"] = transaction
    if (points := number(data.get("programCurrentPoints"))) is not None:
        details["programCurrentPoints"] = points
    if (points := number(data.get("programLifetimePoints"))) is not None:
        details["programLifetimePoints"] = points
    if (points := number(data.get("regularPointsIssued"))) is not None:
        details["regularPoints"] = points
    if any(promotional):
        details["promotionalPoints"] = sum(p for p in promotional if p)
    if (activity := text(obj(data.get("triggeringActivity")).get("name"))) is not None:
        details["triggeringActivity"] = activity

    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": f"loyalty.{event.name}",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
            "loyalty": {"pointsGained": _points_gained(data, total, program, transaction)},
        }
    )


def _redemptions(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj(item) for item in items(data.get("redemptionFromEarningPrograms"))]


def points_redeemed_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """One ``pointsRedemption[]`` entry per earning program the points came from when they add
    up to ``totalPointsRedeemed``, else one entry with the total (the sum is always the total).
    Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    total = _required_points(data, "totalPointsRedeemed", "points redeemed")
    program = id_text(data.get("loyaltyProgramId"))
    bill = text(data.get("redemptionBillNumber"))
    parts: list[dict[str, Any]] = []
    for source in _redemptions(data):
        value = number(source.get("pointsRedeemed"))
        if value:
            parts.append(_gain(value, id_text(source.get("programId")) or program, bill))
    if not _adds_up(parts, total):
        parts = [_gain(total, program, bill)]

    details = clean_event_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    details["pointsRedeemed"] = total
    if (worth := number(data.get("redeemedPointsCurrencyValue"))) is not None:
        details["redeemedPointsCurrencyValue"] = worth
    if (summary := id_text(data.get("redemptionSummaryId"))) is not None:
        details["redemptionSummaryId"] = summary
    if bill is not None:
        details["redemptionBillNumber"] = bill
    group = data.get("isGroupRedemption")
    if type(group) is bool:
        details["isGroupRedemption"] = group
    if (balance := _balance(data)) is not None:
        details["programCurrentPoints"] = balance

    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": f"loyalty.{event.name}",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
            "loyalty": {"pointsRedemption": parts},
        }
    )


def _clean_loyalty_event(
    event: CanonicalEvent, ctx: MappingContext, cid: str, details: dict[str, Any]
) -> Clean:
    """:func:`_loyalty_event` for tenant details built without empty values."""
    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": f"loyalty.{event.name}",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
        }
    )


def points_expired_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    details = clean_event_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    details["pointsExpired"] = _required_points(data, "pointsExpired", "points expired")
    if (balance := number(data.get("programCurrentPoints"))) is not None:
        details["programCurrentPoints"] = balance
    return _clean_loyalty_event(event, ctx, cid, details)


def points_expiry_reminder_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    raw = data.get("scheduledExpiryDate")
    expiry = any_date(raw, ctx)
    if expiry is None:
        kind = "missing-field" if raw is None or raw == "" else "bad-value"
        raise MappingError(
            kind, "/scheduledExpiryDate", "the expiry date must be a real date (YYYY-MM-DD)"
        )
    details = clean_event_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    details["pointsScheduledForExpiry"] = _required_points(
        data, "pointsScheduledForExpiry", "points scheduled for expiry"
    )
    details["scheduledExpiryDate"] = expiry
    return _clean_loyalty_event(event, ctx, cid, details)


def points_expiry_change_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """``totalPoinstDeducted`` is Capillary's spelling (sic); the corrected one is read too."""
    data = event.data
    cid = customer_id(event)
    deducted = number(data.get("totalPoinstDeducted"))
    if deducted is None:
        deducted = number(data.get("totalPointsDeducted"))
    split = []
    for item in items(data.get("programPointsSplit")):
        part = obj(item)
        split.append(
            {
                "pointsAwardedId": id_text(part.get("pointsAwardedId")),
                "programId": id_int(part.get("programId")),
                "points": number(part.get("points")),
                "pointsType": text(part.get("pointsType")),
            }
        )
    details = event_details(event, cid)
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    details["pointsDeducted"] = deducted
    details["pointsSplit"] = split
    details["reason"] = text(data.get("reason"))
    return _loyalty_event(event, ctx, cid, details)


def _balance(data: dict[str, Any]) -> float | int | None:
    """The balance after the event: ``programCurrentPoints``, else (pointsRedeemed) that of the
    redemption source in the event's program, or of the only source."""
    found = number(data.get("programCurrentPoints"))
    if found is not None:
        return found
    sources = _redemptions(data)
    program = id_text(data.get("loyaltyProgramId"))
    for source in sources:
        if program is not None and id_text(source.get("programId")) == program:
            return number(source.get("programCurrentPoints"))
    if len(sources) == 1:
        return number(sources[0].get("programCurrentPoints"))
    return None


def points_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """The points-balance family: the balance after the event, and lifetime points when sent.
    Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    balance = _balance(data)
    if balance is None:
        raise MappingError(
            "missing-field", "/programCurrentPoints", "the points balance must be a number"
        )
    details = profile_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    loyalty: dict[str, Any] = {"points": balance}
    if (lifetime := number(data.get("programLifetimePoints"))) is not None:
        loyalty["lifetimePoints"] = lifetime
    return Clean(
        {
            "identityMap": identity_map(event, ctx, cid),
            "loyalty": loyalty,
            "extSourceSystemAudit": audit(event),
            ctx.tenant: details,
        }
    )


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("pointsIssued", "experience_event"): points_issued_event,
    ("pointsIssued", "profile_points"): points_profile,
    ("pointsRedeemed", "experience_event"): points_redeemed_event,
    ("pointsRedeemed", "profile_points"): points_profile,
    ("pointsExpired", "experience_event"): points_expired_event,
    ("pointsExpired", "profile_points"): points_profile,
    ("pointsExpiryReminder", "experience_event"): points_expiry_reminder_event,
    ("pointsExpiryChange", "experience_event"): points_expiry_change_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "pointsIssued": ("experience_event", "profile_points"),
    "pointsRedeemed": ("experience_event", "profile_points"),
    "pointsExpired": ("experience_event",),
    "pointsExpiryReminder": ("experience_event",),
    "pointsExpiryChange": ("experience_event",),
}
