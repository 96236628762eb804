"""Tier events -> the tier profile fragment (family ``profile_tier``) and, optionally, an event.

tierUpgraded today; tierDowngraded, tierRenewed and tierDowngradeReminder join here later.

Capillary tier events carry tier *numbers*; a name is sent only when the event itself lists it
(``loyaltyProgramDetails.tiers[]``, which may be null) or static configuration gives it
(``MappingContext.tier_names``). Never from a cache of earlier events: the same event must
always produce the same output (DESIGN 7).
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Mapper, MappingContext, MappingError
from worker.mapping.convert import (
    calendar_date,
    id_int,
    items,
    local_date,
    obj,
    rfc3339_ms,
    text,
)
from worker.mapping.identity import (
    audit,
    customer_id,
    event_details,
    identity_map,
    profile_details,
)


def tier_name(data: dict[str, Any], number: int, ctx: MappingContext) -> str | None:
    """The tier's name from the event's own tier list, else from static configuration."""
    for item in items(obj(data.get("loyaltyProgramDetails")).get("tiers")):
        tier = obj(item)
        if id_int(tier.get("tierNumber")) == number:
            found = text(tier.get("tierName"))
            if found is not None:
                return found
    if ctx.tier_names is not None:
        return text(ctx.tier_names.get(number))
    return None


def tier_expiry(data: dict[str, Any], ctx: MappingContext) -> str | None:
    """``tierExpiryDate`` when it is a real date; else the date of ``tierExpiryDateInMillis`` in
    the source time zone; placeholders (``"tierExpiryDate"``) give nothing."""
    return calendar_date(data.get("tierExpiryDate")) or local_date(
        data.get("tierExpiryDateInMillis"), ctx
    )


def _new_tier(data: dict[str, Any], field: str) -> int:
    found = id_int(data.get(field))
    if found is None:
        raise MappingError("missing-field", f"/{field}", "the new tier number is required")
    return found


def tier_upgraded_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    number = _new_tier(data, "upgradedTierNumber")

    details = profile_details(event, cid)
    details["tierNumber"] = number
    details["previousTierNumber"] = id_int(data.get("previousTierNumber"))
    details["upgradeType"] = text(data.get("upgradeType"))
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    return {
        "identityMap": identity_map(event, ctx, cid),
        "loyalty": {
            "tier": tier_name(data, number, ctx),
            "upgradeDate": rfc3339_ms(event.created_at_ms),
            "tierExpiryDate": tier_expiry(data, ctx),
        },
        "extSourceSystemAudit": audit(event),
        ctx.tenant: details,
    }


def tier_upgraded_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Not a default: routes may ask for it to keep a tier history as ExperienceEvents."""
    data = event.data
    cid = customer_id(event)
    number = _new_tier(data, "upgradedTierNumber")
    details = event_details(event, cid)
    details["tierNumber"] = number
    details["previousTierNumber"] = id_int(data.get("previousTierNumber"))
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    return {
        "timestamp": rfc3339_ms(event.created_at_ms),
        "eventType": "loyalty.tierUpgraded",
        "identityMap": identity_map(event, ctx, cid),
        ctx.tenant: details,
    }


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("tierUpgraded", "profile_tier"): tier_upgraded_profile,
    ("tierUpgraded", "experience_event"): tier_upgraded_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "tierUpgraded": ("profile_tier",),
}
