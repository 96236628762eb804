"""Property: events generated from each input schema map to valid XDM, or to a MappingError
with a reason, never to an unhandled exception; and the same event always gives the same bytes.

The strategies are derived from the draft-07 schemas themselves (``from_schema`` below covers
the keywords those files use: ``type`` lists, ``properties``/``required``, ``items``,
``oneOf``, local ``$ref``, ``minimum``/``maximum``, ``pattern``, ``maxLength``), plus unknown
extra keys, since the schemas allow additional properties everywhere. (hypothesis-jsonschema
0.23.1 fails on the hypothesis version locked here.)
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from worker.events import CanonicalEvent, DecodeError, decode
from worker.mapping import (
    DEFAULT_FAMILIES,
    MAPPERS,
    MAPPING_ERROR_KINDS,
    MappingContext,
    MappingError,
    build_entity,
)
from worker.schemas import DEFAULT_ROOT, SchemaStore

CAPILLARY = DEFAULT_ROOT / "capillary"
EVENT_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
STORE = SchemaStore()
EVENTS = sorted(DEFAULT_FAMILIES)
MAX_SAFE = 2**53

# Strings that exercise the mapping's parsers: dates, instants, placeholders, blanks.
_TEXTS = st.sampled_from(
    ["", " ", "0", "42", " 17 ", "RETURN", "regular", "tierExpiryDate", "2024-07-08",
     "2024-02-30", "2024-07-08T10:00:00", "2024-07-08 10:00:00+05:30", "9999-12-31T23:59:59-05:00",
     "x@example.com", " Mixed.Case@Example.COM ", "inr", "ÄÖÜ", "\u00a0"]
)  # fmt: skip
_ANY_TEXT = st.one_of(_TEXTS, st.text(max_size=12))
_NUMBERS = st.one_of(
    st.integers(-MAX_SAFE, MAX_SAFE),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-10**6, 10**6).map(float),  # integral floats (SPEC 1.2)
    st.sampled_from([0, 0.0, -0.0, 1e300, 946684800000, 4102444800000, 253402300799999]),
)
_EXTRA = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _ANY_TEXT,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_ANY_TEXT, inner, max_size=2),
    max_leaves=4,
)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _of_type(kind: str, node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = node.get("minimum"), node.get("maximum")
        if low is None and high is None:
            ints = st.integers(-MAX_SAFE, MAX_SAFE)
        else:
            ints = st.integers(low if low is not None else -MAX_SAFE, high if high is not None else MAX_SAFE)
        return st.one_of(ints, ints.filter(lambda i: abs(i) < MAX_SAFE).map(float))
    if kind == "number":
        return _NUMBERS
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) < 64)
        if "maxLength" in node:
            return st.text(max_size=node["maxLength"])
        return _ANY_TEXT
    if kind == "array":
        items = node.get("items")
        element = from_schema(items, root) if isinstance(items, dict) else _EXTRA
        return st.lists(element, max_size=3)
    if kind == "object":
        return _object(node, root)
    raise AssertionError(f"schema type {kind} not covered by the strategy")


_EXTRA_KEYS = st.dictionaries(st.text(max_size=6), _EXTRA, max_size=2)


def _object(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    # Sub-strategies are built once, here: building them inside each draw is very slow.
    required = set(node.get("required", ()))
    fields = [
        (name, name in required, from_schema(sub, root))
        for name, sub in node.get("properties", {}).items()
    ]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, needed, strategy in fields:
            if needed or draw(st.booleans()):
                out[name] = draw(strategy)
        for key, value in draw(_EXTRA_KEYS).items():
            out.setdefault(key, value)  # tolerated: additionalProperties are allowed
        return out

    return build()


def from_schema(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    node = _resolve(node, root)
    if "oneOf" in node:
        return st.one_of([from_schema(branch, root) for branch in node["oneOf"]])
    kinds = node.get("type")
    if kinds is None:
        return _EXTRA
    if isinstance(kinds, str):
        kinds = [kinds]
    return st.one_of([_of_type(kind, node, root) for kind in kinds])


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((CAPILLARY / f"{name}.schema.json").read_bytes())
    return doc


STRATEGIES = {name: from_schema(_schema(name), _schema(name)) for name in EVENTS}
CTX = MappingContext(clock=lambda: 1_900_000_000.0, max_future_skew_ms=300_000)
CTX_HASHED = MappingContext(
    clock=lambda: 1_900_000_000.0, external_id_namespace="ExtId", card_number_namespace="Card",
    hashed_identities=frozenset({"email", "phone", "card_number"}), primary_identity="phone",
    source_timezone="America/St_Johns",
)  # fmt: skip


def _check(event: CanonicalEvent, ctx: MappingContext) -> None:
    for name, family in MAPPERS:
        if name != event.name:
            continue
        try:
            first = build_entity(event, family, f"target-{family}", ctx)
        except MappingError as err:
            assert err.kind in MAPPING_ERROR_KINDS and err.kind != "mapper-bug", err
            assert err.message, "a mapping error says why"
            continue
        schema = EVENT_SCHEMA if family == "experience_event" else PROFILE_SCHEMA
        assert STORE.xdm(schema).violations(first) == [], (family, first)
        second = build_entity(event, family, f"target-{family}", ctx)
        assert orjson.dumps(first) == orjson.dumps(second)


@pytest.mark.parametrize("name", EVENTS)
def test_schema_generated_events_map_to_valid_xdm_or_a_mapping_error(name: str) -> None:
    validator = STORE.capillary(name)
    assert validator is not None

    @settings(
        max_examples=40, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )  # fmt: skip
    @given(data=STRATEGIES[name], created=st.integers(946684800000, 4102444800000))
    def run(data: dict[str, Any], created: int) -> None:
        assume(validator.is_valid(data))
        event = CanonicalEvent(name, "e-1", 1655, created, "1655_1", data, "flat")
        _check(event, CTX)
        _check(event, CTX_HASHED)
        # and through the real decoder, in a flat envelope
        envelope = {"eventName": name, "eventId": "e-1", "orgId": 1655, "createdAt": created,
                    "data": data}  # fmt: skip
        try:
            decoded = decode(orjson.dumps(envelope))
        except DecodeError:
            return
        if validator.is_valid(decoded.data):
            _check(decoded, CTX)

    run()
