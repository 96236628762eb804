"""The poison corpus: every kind of bad record the issue lists, each with the outcome the worker
must give it (dead-lettered with this ``error-kind``, or filtered by the default policy).

Built from real samples where it matters (a 2 MB *valid-looking* event rather than 2 MB of
noise; an envelope whose ``data`` is a 100,000-element array), so the records travel as far
into the pipeline as such input would.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.chaos.ledger import Expect
from worker.tools.samples import generate_samples

Poison = tuple[str, bytes | None, bytes | None, Expect]  # (label, key, value, expected)


def _dlq(kind: str, stage: str) -> Expect:
    return Expect("dlq", kind, stage)


def _nulls(node: Any) -> Any:
    """Every scalar replaced by null, containers kept (nulls in every field)."""
    if isinstance(node, dict):
        return {k: _nulls(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_nulls(v) for v in node]
    return None


def _inner(doc: dict[str, Any]) -> dict[str, Any]:
    inner = doc.get("attributes", doc)
    assert isinstance(inner, dict)
    return inner


def corpus(round_: int) -> list[Poison]:
    """One copy of the corpus; labels carry ``round_`` so copies stay distinct."""
    base = {s.event_name: s for s in generate_samples(40, seed=9000 + round_)}
    points, bill = base["pointsIssued"], base["transactionAdded"]
    doc = orjson.loads(points.value)

    big = orjson.loads(bill.value)
    # A 2 MB bill number: decodes and validates, but its ExperienceEvent is far beyond the
    # Profile store's 10 KB, so it is dead-lettered before it is sent.
    _inner(big)["data"]["billNumber"] = "B" * 2_000_000
    no_id = orjson.loads(points.value)
    no_id.pop("eventId")
    unknown = orjson.loads(points.value)
    _inner(unknown)["eventName"] = "badgeEarned"
    unknown.pop("eventType", None)
    array = orjson.loads(points.value)
    _inner(array)["data"] = list(range(100_000))
    deep = b'{"eventName":"pointsIssued","eventId":"deep","data":' + b'{"a":' * 10_000
    deep += b"1" + b"}" * 10_001
    k = f"poison-{round_}"
    items: list[tuple[str, bytes | None, Expect]] = [
        ("invalid-utf8", b'{"eventName": "pointsIssued", "eventId": "\xff\xfe\xfd"}',
         _dlq("invalid-utf8", "decode")),
        ("invalid-json", points.value[: len(points.value) // 2], _dlq("invalid-json", "decode")),
        ("not-an-object", b'["pointsIssued", 1, 2]', _dlq("not-an-object", "decode")),
        ("empty", b"", _dlq("empty", "decode")),
        ("tombstone", None, Expect("filter")),
        ("2mb", orjson.dumps(big), _dlq("profile-size-limit", "transform")),
        ("missing-event-id", orjson.dumps(no_id), _dlq("missing-field", "decode")),
        ("unknown-event", orjson.dumps(unknown), _dlq("unknown-event", "validate")),
        ("all-null", orjson.dumps(_nulls(doc)), _dlq("missing-field", "decode")),
        ("deep-10000", deep, _dlq("too-deep", "decode")),
        ("array-100000", orjson.dumps(array), _dlq("bad-field-type", "decode")),
        ("schema-registry", b"\x00\x00\x00\x01\x2a" + points.value,
         _dlq("schema-registry-framed", "decode")),
    ]
    return [(f"{k}-{name}", k.encode(), value, e) for name, value, e in items]

