"""Points events -> loyalty ExperienceEvents and the points-balance profile fragment.

pointsIssued today; pointsRedeemed (``loyalty.pointsRedemption[]``), pointsExpired,
pointsExpiryReminder and pointsExpiryChange join here later.

There is no standard loyalty ``eventType`` in XDM: points events use ``loyalty.<eventName>``
(SPEC 4). Their ``timestamp`` is Capillary's ``createdAt``: the event carries no other business
time.
"""

from __future__ import annotations

import math
from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Mapper, MappingContext, MappingError
from worker.mapping.convert import id_int, id_text, items, number, obj, rfc3339_ms, text
from worker.mapping.identity import audit, customer_id, event_details, identity_map, profile_details


def _transaction_id(data: dict[str, Any]) -> str | None:
    """The bill behind the points, from ``triggeringActivity.identifiers[{key: TransactionId}]``."""
    for item in items(obj(data.get("triggeringActivity")).get("identifiers")):
        entry = obj(item)
        key = text(entry.get("key"))
        if key is not None and key.replace("_", "").lower() == "transactionid":
            return text(entry.get("value"))
    return None


def _points_gained(
    data: dict[str, Any], total: float | int, program: str | None, transaction: str | None
) -> list[dict[str, Any]]:
    """One entry per source of points (regular, each promotion) when they add up to the total,
    otherwise a single entry with the total: the sum of ``pointsGained[].value`` is always
    ``totalPointsIssued``."""
    parts: list[dict[str, Any]] = []
    regular = number(data.get("regularPointsIssued"))
    if regular:
        parts.append({"value": regular, "loyaltyProgramId": program, "transactionId": transaction})
    for item in items(data.get("promotionalPointsIssued")):
        promo = obj(item)
        value = number(promo.get("promotionPoints"))
        if value:
            parts.append(
                {
                    "value": value,
                    "loyaltyProgramId": program,
                    "transactionId": transaction,
                    "promotionId": text(promo.get("promotionIdentifier")),
                }
            )
    if parts and math.isclose(sum(p["value"] for p in parts), total, rel_tol=1e-9, abs_tol=1e-9):
        return parts
    return [{"value": total, "loyaltyProgramId": program, "transactionId": transaction}]


def points_issued_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    total = number(data.get("totalPointsIssued"))
    if total is None:
        raise MappingError("missing-field", "/totalPointsIssued", "points issued must be a number")
    program = id_text(data.get("loyaltyProgramId"))
    transaction = _transaction_id(data)
    promotional = [
        number(obj(p).get("promotionPoints")) for p in items(data.get("promotionalPointsIssued"))
    ]

    details = event_details(event, cid)
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    details["transactionId"] = transaction
    details["programCurrentPoints"] = number(data.get("programCurrentPoints"))
    details["programLifetimePoints"] = number(data.get("programLifetimePoints"))
    details["regularPoints"] = number(data.get("regularPointsIssued"))
    details["promotionalPoints"] = sum(p for p in promotional if p) if any(promotional) else None
    details["triggeringActivity"] = text(obj(data.get("triggeringActivity")).get("name"))

    return {
        "timestamp": rfc3339_ms(event.created_at_ms),
        "eventType": "loyalty.pointsIssued",
        "identityMap": identity_map(event, ctx, cid),
        "loyalty": {"pointsGained": _points_gained(data, total, program, transaction)},
        ctx.tenant: details,
    }


def points_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """The points-balance family: balance and lifetime points as Capillary reports them."""
    data = event.data
    cid = customer_id(event)
    balance = number(data.get("programCurrentPoints"))
    if balance is None:
        raise MappingError(
            "missing-field", "/programCurrentPoints", "the points balance must be a number"
        )
    details = profile_details(event, cid)
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    return {
        "identityMap": identity_map(event, ctx, cid),
        "loyalty": {
            "points": balance,
            "lifetimePoints": number(data.get("programLifetimePoints")),
        },
        "extSourceSystemAudit": audit(event),
        ctx.tenant: details,
    }


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("pointsIssued", "experience_event"): points_issued_event,
    ("pointsIssued", "profile_points"): points_profile,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "pointsIssued": ("experience_event",),
}
