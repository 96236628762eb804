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


_INSTORE_FIELDS = {"phone": "mobile", "external_id": "externalId", "card_number": "card_number"}


# The last event's map: an event feeding two targets (points, tier) needs the same one twice.
# Keyed by identity (events are read-only, and the reference held keeps the id from reuse);
# the two entities then share one dict, which nothing modifies after mapping.
_last_map: tuple[CanonicalEvent | None, MappingContext | None, str, dict[str, Any]] = (
    None,
    None,
    "",
    {},
)


def identity_map(event: CanonicalEvent, ctx: MappingContext, cid: str) -> dict[str, Any]:
    """Every configured identity the event carries, in ``ctx.identities`` order.

    The configured primary identity is ``primary: true``; when the event does not carry it,
    the customerId is primary (every event has one). Namespaces that coincide (a
    misconfiguration) are merged rather than overwritten.
    """
    global _last_map
    last_event, last_ctx, last_cid, last = _last_map
    if last_event is event and last_ctx is ctx and last_cid == cid:
        return last
    found = _identity_map(event, ctx, cid)
    _last_map = (event, ctx, cid, found)
    return found


def _identity_map(event: CanonicalEvent, ctx: MappingContext, cid: str) -> dict[str, Any]:
    identifiers = event.data.get("customerIdentifiers")
    instore = identifiers.get("instore") if type(identifiers) is dict else None
    if type(instore) is not dict:
        instore = None
    state = ctx.authenticated_state
    if ctx.primary_identity == "customer_id" and ctx.distinct_namespaces:
        # The usual configuration: the customerId (always there) is primary and each identity
        # has its own namespace, so one pass builds the map.
        idmap: dict[str, list[dict[str, Any]]] = {}
        for slot in ctx.identities:
            kind = slot.kind
            if kind == "customer_id":
                value: str | None = cid
            elif not instore:
                continue
            elif kind == "email":
                value = _email(instore)
            else:
                value = text(instore.get(_INSTORE_FIELDS[kind]))
            if value is None:
                continue
            if slot.hashed:
                value = sha256_identity(value)
            idmap[slot.namespace] = [
                {"id": value, "primary": kind == "customer_id", "authenticatedState": state}
            ]
        return idmap
    found: list[tuple[str, str, str]] = []  # (kind, namespace, id)
    for slot in ctx.identities:
        if slot.kind == "customer_id":
            value = cid
        elif instore:
            value = _value(slot.kind, cid, instore)
        else:
            continue
        if value is None:
            continue
        found.append((slot.kind, slot.namespace, sha256_identity(value) if slot.hashed else value))
    primary = ctx.primary_identity
    if not any(kind == primary for kind, _, _ in found):
        primary = "customer_id"
    merged: dict[str, list[dict[str, Any]]] = {}
    for kind, namespace, value in found:
        merged.setdefault(namespace, []).append(
            {"id": value, "primary": kind == primary, "authenticatedState": state}
        )
    return merged


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


def clean_event_details(event: CanonicalEvent, cid: str) -> dict[str, Any]:
    """:func:`event_details` without its empty values (for mappers returning ``Clean``)."""
    details: dict[str, Any] = {
        "eventId": event.event_id,
        "eventName": event.name,
        "orgId": event.org_id,
    }
    if event.ref_id is not None:
        details["refId"] = event.ref_id
    details["createdAt"] = rfc3339_ms(event.created_at_ms)
    details["customerId"] = cid
    return details


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
