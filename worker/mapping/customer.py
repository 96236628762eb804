"""Customer events -> the customer-details profile fragment (family ``profile_customer``).

customerAdded (enrolment) and customerUpdated (profile fields changed). A profile fragment
replaces the previous one of its dataset for the identity, so each write carries every
customer-details attribute the event has; an attribute the event lacks is omitted, never
guessed or remembered from an earlier event (DESIGN 7). customerUpdated's ``enteredAt`` is when
the update was recorded, not the enrolment, so it never becomes ``loyalty.joinDate``.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext
from worker.mapping.convert import instant, items, obj, required_instant, text
from worker.mapping.identity import (
    audit,
    customer_id,
    email,
    identity_map,
    mobile,
    profile_details,
)

# Capillary loyaltyType -> XDM loyalty.status ("active, disabled, suspended, ..."). Unknown
# types leave status out; the raw type is always kept in _capillary.loyaltyType.
LOYALTY_STATUS = {
    "LOYALTY": "active",
    "NON_LOYALTY": "inactive",
    "NOT_INTERESTED": "inactive",
}


def _person(event: CanonicalEvent, ctx: MappingContext, cid: str) -> Clean:
    """The attributes both customer events share: identities, name, contact, loyalty id.
    Built without empty values (callers add only non-empty ones)."""
    data = event.data
    loyalty_type = text(data.get("loyaltyType"))
    address = email(event, ctx)
    phone = mobile(event, ctx)
    details = profile_details(event, cid)
    if loyalty_type is not None:
        details["loyaltyType"] = loyalty_type
    if (source := text(data.get("source"))) is not None:
        details["source"] = source
    store = text(obj(obj(data.get("enteredBy")).get("store")).get("code"))
    if store is not None:
        details["storeCode"] = store
    entity = Clean(identityMap=identity_map(event, ctx, cid))
    name: dict[str, Any] = {}
    if (first := text(data.get("firstName"))) is not None:
        name["firstName"] = first
    if (last := text(data.get("lastName"))) is not None:
        name["lastName"] = last
    if name:
        entity["person"] = {"name": name}
    if address:
        entity["personalEmail"] = {"address": address}
    if phone:
        entity["mobilePhone"] = {"number": phone}
    loyalty: dict[str, Any] = {"loyaltyID": [cid]}
    if (program := text(obj(data.get("loyaltyProgramDetails")).get("name"))) is not None:
        loyalty["program"] = program
    if loyalty_type and (status := LOYALTY_STATUS.get(loyalty_type.upper())) is not None:
        loyalty["status"] = status
    entity["loyalty"] = loyalty
    entity["extSourceSystemAudit"] = audit(event)
    entity[ctx.tenant] = details
    return entity


def customer_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    cid = customer_id(event)
    joined = required_instant(event.data.get("enteredAt"), ctx, "/enteredAt")
    entity = _person(event, ctx, cid)
    entity["loyalty"]["joinDate"] = joined
    entity[ctx.tenant]["enteredAt"] = joined
    return entity


def customer_updated_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    entity = _person(event, ctx, cid)
    status = obj(data.get("customerStatus"))
    current = text(status.get("currentStatus"))
    if current is not None:
        # The member's status, as Capillary states it now, wins over the loyalty type.
        entity["loyalty"]["status"] = current.lower()
    details = entity[ctx.tenant]
    if (label := text(status.get("currentLabel"))) is not None:
        details["statusLabel"] = label
    if (reason := text(status.get("reason"))) is not None:
        details["statusReason"] = reason
    if (updated := instant(data.get("enteredAt"), ctx)) is not None:
        details["updatedAt"] = updated
    # Field names only: previous and current values are personal data (and stale ones, too).
    names = [text(obj(item).get("fieldName")) for item in items(data.get("updatedFields"))]
    fields = sorted({n for n in names if n is not None})
    if fields:
        details["updatedFields"] = fields
    return entity


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("customerAdded", "profile_customer"): customer_profile,
    ("customerUpdated", "profile_customer"): customer_updated_profile,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "customerAdded": ("profile_customer",),
    "customerUpdated": ("profile_customer",),
}
