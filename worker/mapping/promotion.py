"""promotionEarned -> a loyalty ExperienceEvent ``loyalty.promotionEarned``.

The promotion's identity and dates go under the tenant object (the Loyalty Event Details group
has no promotion fields besides the ``promotionId`` of points entries, and no points move here).
Dates become XDM dates: a ``YYYY-MM-DD`` as sent, an instant as its calendar date in the source
time zone.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Mapper, MappingContext, MappingError
from worker.mapping.convert import any_date, business_timestamp, id_int, id_text, text
from worker.mapping.identity import customer_id, event_details, identity_map


def promotion_earned_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    promotion = id_text(data.get("promotionId"))
    if promotion is None:
        raise MappingError("missing-field", "/promotionId", "the promotion id is required")
    details = event_details(event, cid)
    details["loyaltyProgramId"] = id_int(data.get("loyaltyProgramId"))
    details["promotionId"] = promotion
    details["promotionName"] = text(data.get("promotionName"))
    details["promotionEarnedDate"] = any_date(data.get("promotionEarnedDate"), ctx)
    details["promotionExpiryDate"] = any_date(data.get("promotionEarnedExpiryDate"), ctx)
    details["earnedId"] = id_text(data.get("earnedId"))
    details["issualId"] = id_text(data.get("issualId"))
    return {
        "timestamp": business_timestamp(event, ctx),
        "eventType": "loyalty.promotionEarned",
        "identityMap": identity_map(event, ctx, cid),
        ctx.tenant: details,
    }


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("promotionEarned", "experience_event"): promotion_earned_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "promotionEarned": ("experience_event",),
}
