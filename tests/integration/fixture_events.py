"""Kafka message values made from the valid/invalid fixtures, each with a fresh eventId."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from worker.events import decode
from worker.mapping import DEFAULT_FAMILIES

FIXTURES = Path(__file__).resolve().parents[2] / "schemas" / "capillary" / "fixtures"
FOUR = ("customerAdded", "transactionAdded", "pointsIssued", "tierUpgraded")


def _load(kind: str, event: str) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted((FIXTURES / kind / event).glob("*.json"))]


def _set_event_id(doc: dict[str, Any], event_id: str) -> None:
    for key in list(doc):
        if key.strip() == "eventId":
            doc[key] = event_id
            return
    if isinstance(doc.get("data"), dict):  # API-style wrapper
        _set_event_id(doc["data"], event_id)
        return
    doc["eventId"] = event_id


def _set_customer_id(node: Any, customer_id: int) -> bool:
    """Replace customerIdentifiers.customerId (keeping its JSON type) wherever it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.strip() == "customerIdentifiers" and isinstance(value, dict):
                for k, old in value.items():
                    if k.strip() == "customerId":
                        value[k] = type(old)(customer_id) if type(old) in (int, float, str) else customer_id
                        return True
            if _set_customer_id(value, customer_id):
                return True
    return False


def valid_events(n: int, names: tuple[str, ...] = FOUR) -> list[tuple[str, bytes, bytes]]:
    """n (eventId, key, value) triples cycling through every valid fixture of these events.

    Each event gets a customer of its own: profile updates of one customer supersede each other
    (worker/profile_order.py), so "every fan-out delivered" needs distinct identities.
    """
    docs = [d for name in names for d in _load("valid", name)]
    out = []
    for i, doc in zip(range(n), itertools.cycle(docs)):
        event_id = str(uuid.UUID(int=uuid.uuid4().int))
        copy = orjson.loads(orjson.dumps(doc))
        _set_event_id(copy, event_id)
        _set_customer_id(copy, random.randrange(10**10, 10**11))
        out.append((event_id, f"cust-{i % 97}".encode(), orjson.dumps(copy)))
    return out


def invalid_schema_events(names: tuple[str, ...] = FOUR) -> list[tuple[str, bytes]]:
    """(fixture name, value) for every invalid fixture (schema violations)."""
    out = []
    for name in names:
        for p in sorted((FIXTURES / "invalid" / name).glob("*.json")):
            doc = orjson.loads(p.read_bytes())
            _set_event_id(doc, str(uuid.uuid4()))
            out.append((f"{name}/{p.stem}", orjson.dumps(doc)))
    return out


def expected_deliveries(
    events: Iterable[tuple[str, bytes, bytes]], routed_families: Iterable[str]
) -> list[str]:
    """Each eventId once per target it feeds: an event fans out to every default family of
    its name that a route serves (e.g. tierUpgraded -> an ExperienceEvent and the tier profile)."""
    routed = set(routed_families)
    return [
        event_id
        for event_id, _, value in events
        for family in DEFAULT_FAMILIES[decode(value).name]
        if family in routed
    ]
