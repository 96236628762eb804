"""Identity and provenance parts every entity carries: identityMap and the tenant details."""

from __future__ import annotations

from typing import Any

from worker.events import CanonicalEvent
from worker.mapping.context import MappingContext, MappingError
from worker.mapping.convert import id_text, obj, rfc3339_ms, text


def customer_id(event: CanonicalEvent) -> str:
    """``data.customerIdentifiers.customerId`` as text; every entity needs it."""
    found = id_text(obj(event.data.get("customerIdentifiers")).get("customerId"))
    if found is None:
        raise MappingError(
            "missing-field",
            "/customerIdentifiers/customerId",
            "the Capillary customer id is required to identify the person",
        )
    return found


def _instore(event: CanonicalEvent) -> dict[str, Any]:
    return obj(obj(event.data.get("customerIdentifiers")).get("instore"))


def email(event: CanonicalEvent) -> str | None:
    """``customerIdentifiers.instore.email`` (stripped, lower-cased), when enrichment sent it."""
    return _email(_instore(event))


def mobile(event: CanonicalEvent) -> str | None:
    """``customerIdentifiers.instore.mobile`` as sent (digits, often with the country code)."""
    return text(_instore(event).get("mobile"))


def _email(instore: dict[str, Any]) -> str | None:
    found = text(instore.get("email"))
    if found is None or "@" not in found:
        return None
    return found.lower()


def identity_map(event: CanonicalEvent, ctx: MappingContext, cid: str) -> dict[str, Any]:
    """customerId (primary, custom namespace), email -> Email, mobile -> Phone; only those present.

    Namespaces that coincide (a misconfiguration) are merged rather than overwritten.
    """
    idmap: dict[str, list[dict[str, Any]]] = {
        ctx.customer_namespace: [
            {"id": cid, "primary": True, "authenticatedState": "authenticated"}
        ]
    }
    instore = _instore(event)
    if not instore:
        return idmap
    for namespace, value in (
        (ctx.email_namespace, _email(instore)),
        (ctx.phone_namespace, text(instore.get("mobile"))),
    ):
        if value is not None:
            idmap.setdefault(namespace, []).append(
                {"id": value, "primary": False, "authenticatedState": "authenticated"}
            )
    return idmap


def event_details(event: CanonicalEvent, cid: str) -> dict[str, Any]:
    """The tenant fields every ExperienceEvent carries (mappers add their own next to them)."""
    return {
        "eventId": event.event_id,
        "eventName": event.name,
        "orgId": event.org_id,
        "refId": event.ref_id,
        "createdAt": rfc3339_ms(event.created_at_ms),
        "customerId": cid,
    }


def profile_details(event: CanonicalEvent, cid: str) -> dict[str, Any]:
    """The tenant fields every profile fragment carries: who, and which event produced it."""
    return {
        "customerId": cid,
        "orgId": event.org_id,
        "lastEventId": event.event_id,
        "lastEventName": event.name,
        "lastEventCreatedAt": rfc3339_ms(event.created_at_ms),
    }


def audit(event: CanonicalEvent) -> dict[str, Any]:
    """extSourceSystemAudit.lastUpdatedDate from createdAt (the merge policy's clock)."""
    return {"lastUpdatedDate": rfc3339_ms(event.created_at_ms)}
