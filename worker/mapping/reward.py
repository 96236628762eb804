"""rewardIssued -> a loyalty ExperienceEvent ``loyalty.rewardIssued``.

The reward goes under the tenant object. ``intouchPoints`` (the reward's price in points) is
kept as ``rewardPoints`` and is not a ``loyalty.pointsRedemption[]`` entry: the points a
member spends arrive as their own pointsRedeemed event, and would otherwise count twice.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext, MappingError
from worker.mapping.convert import business_timestamp, id_text, instant, number, obj, text
from worker.mapping.identity import clean_event_details, customer_id, identity_map


def reward_issued_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    reward = id_text(data.get("rewardId"))
    if reward is None:
        raise MappingError("missing-field", "/rewardId", "the reward id is required")
    details = clean_event_details(event, cid)
    details["rewardId"] = reward
    optional = (
        ("rewardType", text(data.get("type"))),
        ("redemptionType", text(data.get("redemptionType"))),
        ("rewardStartAt", instant(data.get("startDate"), ctx)),
        ("rewardEndAt", instant(data.get("endDate"), ctx)),
        ("rewardPoints", number(data.get("intouchPoints"))),
        ("transactionId", id_text(data.get("transactionId"))),
        ("voucherCode", text(obj(data.get("vendorRewardDetails")).get("vendorVoucher"))),
    )
    for key, value in optional:
        if value is not None:
            details[key] = value
    return Clean(
        {
            "timestamp": business_timestamp(event, ctx),
            "eventType": "loyalty.rewardIssued",
            "identityMap": identity_map(event, ctx, cid),
            ctx.tenant: details,
        }
    )


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("rewardIssued", "experience_event"): reward_issued_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "rewardIssued": ("experience_event",),
}
