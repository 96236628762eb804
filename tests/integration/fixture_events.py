"""Kafka message values made from the valid/invalid fixtures, each with a fresh eventId."""

from __future__ import annotations

import itertools
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


def valid_events(n: int, names: tuple[str, ...] = FOUR) -> list[tuple[str, bytes, bytes]]:
    """n (eventId, key, value) triples cycling through every valid fixture of these events."""
    docs = [d for name in names for d in _load("valid", name)]
    out = []
    for i, doc in zip(range(n), itertools.cycle(docs)):
        event_id = str(uuid.UUID(int=uuid.uuid4().int))
        copy = orjson.loads(orjson.dumps(doc))
        _set_event_id(copy, event_id)
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
