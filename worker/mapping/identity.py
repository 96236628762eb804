"""Identity and provenance parts every entity carries: identityMap and the tenant details."""

from __future__ import annotations

import hashlib
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


def _email(instore: dict[str, Any]) -> str | None:
    found = text(instore.get("email"))
    if found is None or "@" not in found:
        return None
    return found.lower()


def email(event: CanonicalEvent, ctx: MappingContext) -> str | None:
    """``customerIdentifiers.instore.email`` (stripped, lower-cased), when enrichment sent it.

    None when the organisation hashes emails: a clear address must not travel in another field.
    """
    if "email" in ctx.hashed_identities:
        return None
    return _email(_instore(event))


def mobile(event: CanonicalEvent, ctx: MappingContext) -> str | None:
    """``customerIdentifiers.instore.mobile`` as sent; None when phones are hashed."""
    if "phone" in ctx.hashed_identities:
        return None
    return text(_instore(event).get("mobile"))


def _value(kind: str, cid: str, instore: dict[str, Any]) -> str | None:
    if kind == "customer_id":
        return cid
    if kind == "email":
        return _email(instore)
    if kind == "phone":
        return text(instore.get("mobile"))
    if kind == "external_id":
        return text(instore.get("externalId"))
    return text(instore.get("card_number"))


def sha256_identity(value: str) -> str:
    """The hashed form of an identity: sha256 hex of the trimmed, lower-cased value."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def identity_map(event: CanonicalEvent, ctx: MappingContext, cid: str) -> dict[str, Any]:
    """Every configured identity the event carries, in ``ctx.identities`` order.

    The configured primary identity is ``primary: true``; when the event does not carry it,
    the customerId is primary (every event has one). Namespaces that coincide (a
    misconfiguration) are merged rather than overwritten.
    """
    instore = _instore(event)
    found: list[tuple[str, str, str]] = []  # (kind, namespace, id)
    for slot in ctx.identities:
        value = _value(slot.kind, cid, instore) if instore or slot.kind == "customer_id" else None
        if value is None:
            continue
        found.append((slot.kind, slot.namespace, sha256_identity(value) if slot.hashed else value))
    primary = ctx.primary_identity
    if not any(kind == primary for kind, _, _ in found):
        primary = "customer_id"
    state = ctx.authenticated_state
    idmap: dict[str, list[dict[str, Any]]] = {}
    for kind, namespace, value in found:
        idmap.setdefault(namespace, []).append(
            {"id": value, "primary": kind == primary, "authenticatedState": state}
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
