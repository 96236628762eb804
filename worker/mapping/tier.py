"""Tier events -> the tier profile fragment (family ``profile_tier``) and loyalty events.

tierUpgraded, tierDowngraded and tierRenewed state the member's tier after them: each feeds the
tier profile family and an ExperienceEvent ``loyalty.<eventName>``. tierDowngradeReminder
changes nothing yet: an ExperienceEvent only.

Capillary tier events carry tier *numbers*; a name is sent only when the event itself lists it
(``loyaltyProgramDetails.tiers[]``, which may be null) or static configuration gives it
(``MappingContext.tier_names``). Never from a cache of earlier events: the same event must
always produce the same output (DESIGN 7).

The tier family: ``loyalty.tier`` (name, when known), ``loyalty.tierExpiryDate`` (a date),
``loyalty.upgradeDate`` (upgrades only: "when the person was upgraded to the current tier"),
and ``_capillary.tierNumber`` (always), ``previousTierNumber``, ``upgradeType`` /
``renewType``.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext, MappingError
from worker.mapping.convert import (
    any_date,
    business_timestamp,
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
    clean_event_details,
    customer_id,
    identity_map,
    profile_details,
)

# event name -> the data field holding the member's tier number after the event
TIER_FIELD = {
    "tierUpgraded": "upgradedTierNumber",
    "tierDowngraded": "downgradedTierNumber",
    "tierRenewed": "currentTierNumber",
    "tierDowngradeReminder": "currentTierNumber",
}


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


def _tier_number(event: CanonicalEvent) -> int:
    field = TIER_FIELD[event.name]
    found = id_int(event.data.get(field))
    if found is None:
        raise MappingError("missing-field", f"/{field}", "the tier number is required")
    return found


def _tier_details(data: dict[str, Any], details: dict[str, Any], number: int) -> dict[str, Any]:
    """Adds the tier fields to ``details``, without empty values."""
    details["tierNumber"] = number
    if (previous := id_int(data.get("previousTierNumber"))) is not None:
        details["previousTierNumber"] = previous
    if (program := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program
    if (upgrade := text(data.get("upgradeType"))) is not None:
        details["upgradeType"] = upgrade
    if (renew := text(data.get("renewType"))) is not None:
        details["renewType"] = renew
    return details


def tier_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    number = _tier_number(event)
    entity = Clean(identityMap=identity_map(event, ctx, cid))
    loyalty: dict[str, Any] = {}
    if (name := tier_name(data, number, ctx)) is not None:
        loyalty["tier"] = name
    if event.name == "tierUpgraded":
        loyalty["upgradeDate"] = rfc3339_ms(event.created_at_ms)
    if (expiry := tier_expiry(data, ctx)) is not None:
        loyalty["tierExpiryDate"] = expiry
    if loyalty:
        entity["loyalty"] = loyalty
    entity["extSourceSystemAudit"] = audit(event)
    entity[ctx.tenant] = _tier_details(data, profile_details(event, cid), number)
    return entity


def tier_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    number = _tier_number(event)
    details = _tier_details(data, clean_event_details(event, cid), number)
    if (name := tier_name(data, number, ctx)) is not None:
        details["tierName"] = name
    if event.name == "tierDowngradeReminder":
        scheduled = any_date(data.get("scheduledDowngradeDate"), ctx)
        if scheduled is not None:
            details["scheduledDowngradeDate"] = scheduled
    elif (expiry := tier_expiry(data, ctx)) is not None:
        details["tierExpiryDate"] = expiry
    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": f"loyalty.{event.name}",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
        }
    )


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("tierUpgraded", "profile_tier"): tier_profile,
    ("tierUpgraded", "experience_event"): tier_event,
    ("tierDowngraded", "profile_tier"): tier_profile,
    ("tierDowngraded", "experience_event"): tier_event,
    ("tierRenewed", "profile_tier"): tier_profile,
    ("tierRenewed", "experience_event"): tier_event,
    ("tierDowngradeReminder", "experience_event"): tier_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "tierUpgraded": ("experience_event", "profile_tier"),
    "tierDowngraded": ("experience_event", "profile_tier"),
    "tierRenewed": ("experience_event", "profile_tier"),
    "tierDowngradeReminder": ("experience_event",),
}
