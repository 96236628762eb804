"""Capillary events for a chosen org, customer and createdAt, made from the flat fixtures."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

FIXTURES = Path(__file__).resolve().parents[2] / "schemas" / "capillary" / "fixtures" / "valid"


def flat_event(
    name: str,
    *,
    org_id: int,
    customer_id: int,
    created_at: int,
    data: dict[str, Any] | None = None,
) -> tuple[str, bytes, bytes]:
    """(eventId, key, value) of a flat-envelope ``name`` event; ``data`` keys override."""
    path = sorted((FIXTURES / name).glob("flat*.json"))[0]
    doc = orjson.loads(path.read_bytes())
    event_id = str(uuid.uuid4())
    doc.update(
        eventId=event_id, orgId=org_id, createdAt=created_at, refId=f"{org_id}_{customer_id}"
    )
    doc["data"]["customerIdentifiers"]["customerId"] = customer_id
    doc["data"].update(data or {})
    return event_id, str(customer_id).encode(), orjson.dumps(doc)
