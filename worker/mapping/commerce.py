"""Transaction events -> commerce ExperienceEvents (family ``experience_event``).

transactionAdded today; transactionUpdated (same shape, e.g. a new deliveryStatus) joins later.

Purchases and returns (our reading of XDM, see README "Mapping"):

* a purchase bill (``billType`` REGULAR, NOT_INTERESTED, anything not a return) is
  ``eventType: commerce.purchases`` with ``commerce.purchases.value = 1`` and
  ``commerce.order{purchaseID, priceTotal, currencyCode, discountAmount}``;
* a return bill (``billType`` RETURN or NOT_INTERESTED_RETURN) is
  ``eventType: commerce.backofficeCreditMemoIssued`` (the type AEP lists for "a credit memo has
  been issued to a customer", which Adobe Commerce emits for refunded returns) with the refunded
  amount as a positive ``commerce.order.refunds[]{transactionID, refundAmount, refundReason:
  "return", currencyCode}``, and neither ``commerce.purchases`` nor ``order.priceTotal``:
  returns never count as purchases and revenue is never made negative.

The ExperienceEvent ``timestamp`` is the bill's business time (``enteredAt``), which can be
earlier than Capillary's ``createdAt`` (late uploads); ``createdAt`` is kept in ``_capillary``.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Mapper, MappingContext, MappingError
from worker.mapping.convert import (
    currency,
    id_int,
    id_text,
    number,
    obj,
    required_instant,
    text,
)
from worker.mapping.identity import customer_id, event_details, identity_map

PURCHASE = "commerce.purchases"
RETURN = "commerce.backofficeCreditMemoIssued"
RETURN_BILL_TYPES = frozenset({"RETURN", "NOT_INTERESTED_RETURN"})


def _required_text(value: Any, path: str) -> str:
    found = text(value)
    if found is None:
        raise MappingError("missing-field", path, "a non-empty value is required here")
    return found


def transaction_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    data = event.data
    cid = customer_id(event)
    bill_type = _required_text(data.get("billType"), "/billType").upper()
    bill_number = _required_text(data.get("billNumber"), "/billNumber")
    transaction_id = id_text(data.get("transactionId"))
    amount = number(data.get("amount"))
    if amount is None:
        raise MappingError("missing-field", "/amount", "the bill amount must be a number")
    code = currency(data.get("currencyCode"))
    entered_by = obj(data.get("enteredBy"))
    store = obj(entered_by.get("store"))
    till = obj(entered_by.get("till"))

    details = event_details(event, cid)
    details["transactionId"] = transaction_id
    details["billNumber"] = bill_number
    details["billType"] = bill_type
    details["lineItemCount"] = id_int(data.get("lineItemCount"))
    details["grossAmount"] = number(data.get("grossAmount"))
    details["deliveryStatus"] = text(data.get("deliveryStatus"))
    details["storeExternalId"] = text(store.get("externalId"))
    details["storeName"] = text(store.get("name"))
    details["tillCode"] = text(till.get("code"))

    order: dict[str, Any] = {"purchaseID": bill_number, "currencyCode": code}
    commerce: dict[str, Any] = {
        "order": order,
        "commerceScope": {"storeCode": text(store.get("code"))},
    }
    if bill_type in RETURN_BILL_TYPES:
        event_type = RETURN
        order["refunds"] = [
            {
                "transactionID": transaction_id,
                "refundAmount": abs(amount),
                "refundReason": "return",
                "currencyCode": code,
            }
        ]
    else:
        event_type = PURCHASE
        commerce["purchases"] = {"value": 1}
        order["priceTotal"] = amount
        order["discountAmount"] = number(data.get("discount"))

    return {
        "timestamp": required_instant(data.get("enteredAt"), ctx, "/enteredAt"),
        "eventType": event_type,
        "identityMap": identity_map(event, ctx, cid),
        "commerce": commerce,
        ctx.tenant: details,
    }


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("transactionAdded", "experience_event"): transaction_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "transactionAdded": ("experience_event",),
}
