"""Customer events -> the customer-details profile fragment (family ``profile_customer``).

customerAdded today; customerUpdated (same shape plus ``updatedFields``) joins here later.
A profile fragment replaces the previous one of its dataset for the identity, so each write
carries the whole customer-details family.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Mapper, MappingContext
from worker.mapping.convert import obj, required_instant, text
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


def customer_profile(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    loyalty_type = text(data.get("loyaltyType"))
    store = obj(obj(data.get("enteredBy")).get("store"))
    joined = required_instant(data.get("enteredAt"), ctx, "/enteredAt")

    details = profile_details(event, cid)
    details["loyaltyType"] = loyalty_type
    details["source"] = text(data.get("source"))
    details["enteredAt"] = joined
    details["storeCode"] = text(store.get("code"))

    address = email(event)
    phone = mobile(event)
    return {
        "identityMap": identity_map(event, ctx, cid),
        "person": {
            "name": {
                "firstName": text(data.get("firstName")),
                "lastName": text(data.get("lastName")),
            }
        },
        "personalEmail": {"address": address} if address else None,
        "mobilePhone": {"number": phone} if phone else None,
        "loyalty": {
            "loyaltyID": [cid],
            "program": text(obj(data.get("loyaltyProgramDetails")).get("name")),
            "status": LOYALTY_STATUS.get(loyalty_type.upper()) if loyalty_type else None,
            "joinDate": joined,
        },
        "extSourceSystemAudit": audit(event),
        ctx.tenant: details,
    }


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("customerAdded", "profile_customer"): customer_profile,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "customerAdded": ("profile_customer",),
}
