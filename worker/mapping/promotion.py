"""promotionEarned -> a loyalty ExperienceEvent ``loyalty.promotionEarned``.

The promotion's identity and dates go under the tenant object (the Loyalty Event Details group
has no promotion fields besides the ``promotionId`` of points entries, and no points move here).
Dates become XDM dates: a ``YYYY-MM-DD`` as sent, an instant as its calendar date in the source
time zone.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext, MappingError
from worker.mapping.convert import any_date, business_timestamp, id_int, id_text, text
from worker.mapping.identity import clean_event_details, customer_id, identity_map


def promotion_earned_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    promotion = id_text(data.get("promotionId"))
    if promotion is None:
        raise MappingError("missing-field", "/promotionId", "the promotion id is required")
    details = clean_event_details(event, cid)
    if (program_id := id_int(data.get("loyaltyProgramId"))) is not None:
        details["loyaltyProgramId"] = program_id
    details["promotionId"] = promotion
    optional = (
        ("promotionName", text(data.get("promotionName"))),
        ("promotionEarnedDate", any_date(data.get("promotionEarnedDate"), ctx)),
        ("promotionExpiryDate", any_date(data.get("promotionEarnedExpiryDate"), ctx)),
        ("earnedId", id_text(data.get("earnedId"))),
        ("issualId", id_text(data.get("issualId"))),
    )
    for key, value in optional:
        if value is not None:
            details[key] = value
    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": "loyalty.promotionEarned",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
        }
    )


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("promotionEarned", "experience_event"): promotion_earned_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "promotionEarned": ("experience_event",),
}
