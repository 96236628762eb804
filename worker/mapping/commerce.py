"""Transaction events -> commerce ExperienceEvents (family ``experience_event``).

transactionAdded is a purchase or a return; transactionUpdated (same shape, e.g. a new
``deliveryStatus``) is a change to a bill already sent, with its own event type.

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

The ExperienceEvent ``timestamp`` of transactionAdded is the bill's business time
(``enteredAt``), which can be earlier than Capillary's ``createdAt`` (late uploads); ``createdAt``
is kept in ``_capillary``.

transactionUpdated (our reading): ``eventType: commerce.transactionUpdated``, never
``commerce.purchases`` nor ``order.priceTotal``, so a purchase is never counted twice; its
``timestamp`` is ``createdAt``, when the change happened (its ``enteredAt`` is the original
bill's time); the amount it carries goes to ``_capillary.amount``.
"""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import Clean, Mapper, MappingContext, MappingError
from worker.mapping.convert import (
    currency,
    event_timestamp,
    id_int,
    id_text,
    instant,
    number,
    obj,
    required_instant_ms,
    text,
)
from worker.mapping.identity import clean_event_details, customer_id, identity_map

PURCHASE = "commerce.purchases"
RETURN = "commerce.backofficeCreditMemoIssued"
UPDATE = "commerce.transactionUpdated"
RETURN_BILL_TYPES = frozenset({"RETURN", "NOT_INTERESTED_RETURN"})


def _required_text(value: Any, path: str) -> str:
    found = text(value)
    if found is None:
        raise MappingError("missing-field", path, "a non-empty value is required here")
    return found


def _bill_details(event: CanonicalEvent, cid: str, data: dict[str, Any]) -> dict[str, Any]:
    """The tenant fields of a bill, without empty values."""
    entered_by = obj(data.get("enteredBy"))
    store = obj(entered_by.get("store"))
    details = clean_event_details(event, cid)
    if (value := id_text(data.get("transactionId"))) is not None:
        details["transactionId"] = value
    if (count := id_int(data.get("lineItemCount"))) is not None:
        details["lineItemCount"] = count
    if (amount := number(data.get("grossAmount"))) is not None:
        details["grossAmount"] = amount
    if (value := text(data.get("deliveryStatus"))) is not None:
        details["deliveryStatus"] = value
    if (value := text(store.get("externalId"))) is not None:
        details["storeExternalId"] = value
    if (value := text(store.get("name"))) is not None:
        details["storeName"] = value
    if (value := text(obj(entered_by.get("till")).get("code"))) is not None:
        details["tillCode"] = value
    return details


def _store_code(data: dict[str, Any]) -> str | None:
    return text(obj(obj(data.get("enteredBy")).get("store")).get("code"))


def _commerce(
    data: dict[str, Any], bill_number: str, code: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``commerce`` with its ``order`` (returned too, for the caller to complete)."""
    order: dict[str, Any] = {"purchaseID": bill_number}
    if code is not None:
        order["currencyCode"] = code
    commerce: dict[str, Any] = {"order": order}
    store_code = _store_code(data)
    if store_code is not None:
        commerce["commerceScope"] = {"storeCode": store_code}
    return commerce, order


def transaction_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    bill_type = _required_text(data.get("billType"), "/billType").upper()
    bill_number = _required_text(data.get("billNumber"), "/billNumber")
    amount = number(data.get("amount"))
    if amount is None:
        raise MappingError("missing-field", "/amount", "the bill amount must be a number")
    entered = required_instant_ms(data.get("enteredAt"), ctx, "/enteredAt")
    code = currency(data.get("currencyCode"))

    details = _bill_details(event, cid, data)
    details["billNumber"] = bill_number
    details["billType"] = bill_type

    commerce, order = _commerce(data, bill_number, code)
    if bill_type in RETURN_BILL_TYPES:
        event_type = RETURN
        refund: dict[str, Any] = {}
        if "transactionId" in details:
            refund["transactionID"] = details["transactionId"]
        refund["refundAmount"] = abs(amount)
        refund["refundReason"] = "return"
        if code is not None:
            refund["currencyCode"] = code
        order["refunds"] = [refund]
    else:
        event_type = PURCHASE
        commerce["purchases"] = {"value": 1}
        order["priceTotal"] = amount
        discount = number(data.get("discount"))
        if discount is not None:
            order["discountAmount"] = discount

    return Clean(
        timestamp=event_timestamp(entered, event.created_at_ms, ctx),
        eventType=event_type,
        identityMap=identity_map(event, ctx, cid),
        commerce=commerce,
        **{ctx.tenant: details},
    )


def transaction_updated_event(event: CanonicalEvent, ctx: MappingContext) -> dict[str, Any]:
    """A change to a bill: never a purchase measure, never ``priceTotal`` (no double counting).
    Built without empty values (a :class:`Clean` entity: no pruning pass)."""
    data = event.data
    cid = customer_id(event)
    bill_number = _required_text(data.get("billNumber"), "/billNumber")
    bill_type = text(data.get("billType"))

    details = _bill_details(event, cid, data)
    details["billNumber"] = bill_number
    if bill_type:
        details["billType"] = bill_type.upper()
    if (amount := number(data.get("amount"))) is not None:
        details["amount"] = amount
    if (entered := instant(data.get("enteredAt"), ctx)) is not None:
        details["billEnteredAt"] = entered
    code = currency(data.get("currencyCode"))
    commerce, _ = _commerce(data, bill_number, code)
    return Clean(
        {
            "timestamp": event_timestamp(event.created_at_ms, event.created_at_ms, ctx),
            "eventType": UPDATE,
            "identityMap": identity_map(event, ctx, cid),
            "commerce": commerce,
            ctx.tenant: details,
        }
    )


MAPPERS: dict[tuple[str, str], Mapper] = {
    ("transactionAdded", "experience_event"): transaction_event,
    ("transactionUpdated", "experience_event"): transaction_updated_event,
}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "transactionAdded": ("experience_event",),
    "transactionUpdated": ("experience_event",),
}
