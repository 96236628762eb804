"""worker.events: envelope decoding, SPEC 1.2 quirks, value-free errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.events import DECODE_ERROR_KINDS, CanonicalEvent, DecodeError, customer_id, decode

EMAIL = "secret.person@example.com"
MOBILE = "919876543210"


def _data(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "totalPointsIssued": 120,
        "customerIdentifiers": {
            "customerId": 379499720,
            "instore": {"mobile": MOBILE, "email": EMAIL},
        },
    }
    data.update(extra)
    return data


def flat(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "eventName": "pointsIssued",
        "eventId": "0b9f6c1e-3c0c-4c4e-9a3e-1f2d3c4b5a69",
        "orgId": 150956,
        "refId": "150956_684494987",
        "apiRequestId": "9f86d081884c7d65",
        "createdAt": 1719999999123,
        "loyaltyEventId": None,
        "data": _data(),
    }
    doc.update(over)
    return doc


def wrapped(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "eventId": "0b9f6c1e-3c0c-4c4e-9a3e-1f2d3c4b5a69",
        "eventLogId": 34804692,
        "eventType": "150956_pointsIssued",
        "consumerGroupId": None,
        "actionType": "START",
        "timeStamp": 1719999999263,
        "attributes": {
            "eventName": "pointsIssued",
            "orgId": 150956,
            "refId": "150956_684494987",
            "apiRequestId": "9f86d081884c7d65",
            "createdAt": 1719999999251,
            "loyaltyEventId": "tJVGuVbhdB",
            "data": _data(),
        },
    }
    doc.update(over)
    return doc


def enc(doc: Any) -> bytes:
    return orjson.dumps(doc)


def failure(value: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(value)
    err = info.value
    assert err.kind in DECODE_ERROR_KINDS
    text = f"{err} {err!r}"
    assert EMAIL not in text and MOBILE not in text
    return err


# --------------------------------------------------------------------------- envelopes


def test_flat_envelope() -> None:
    event = decode(enc(flat()))
    assert event == CanonicalEvent(
        name="pointsIssued",
        event_id="0b9f6c1e-3c0c-4c4e-9a3e-1f2d3c4b5a69",
        org_id=150956,
        created_at_ms=1719999999123,
        ref_id="150956_684494987",
        data=_data(),
        envelope="flat",
    )


def test_wrapped_envelope() -> None:
    event = decode(enc(wrapped()))
    assert event.name == "pointsIssued"
    assert event.envelope == "wrapped"
    assert event.org_id == 150956
    assert event.created_at_ms == 1719999999251  # attributes.createdAt, not timeStamp
    assert event.ref_id == "150956_684494987"
    assert event.data == _data()


def test_wrapped_name_and_org_from_event_type_when_attributes_lack_them() -> None:
    doc = wrapped()
    del doc["attributes"]["eventName"]
    del doc["attributes"]["orgId"]
    event = decode(enc(doc))
    assert (event.name, event.org_id) == ("pointsIssued", 150956)


def test_wrapped_event_type_without_org_prefix() -> None:
    doc = wrapped(eventType="pointsIssued")
    del doc["attributes"]["eventName"]
    assert decode(enc(doc)).name == "pointsIssued"


def test_wrapped_created_at_falls_back_to_timestamp() -> None:
    doc = wrapped()
    del doc["attributes"]["createdAt"]
    assert decode(enc(doc)).created_at_ms == 1719999999263


def test_api_style_wrapper_of_customer_updated() -> None:
    inner = flat(eventName="customerUpdated")
    event = decode(enc({"data": inner, "errors": None, "warnings": None}))
    assert event.name == "customerUpdated"
    assert event.envelope == "flat"
    inner_wrapped = wrapped(eventType="150956_customerUpdated")
    inner_wrapped["attributes"]["eventName"] = "customerUpdated"
    event = decode(enc({"data": inner_wrapped, "errors": None, "warnings": None}))
    assert (event.name, event.envelope) == ("customerUpdated", "wrapped")


def test_api_wrapper_errors_point_inside() -> None:
    inner = flat()
    del inner["eventId"]
    err = failure(enc({"data": inner, "errors": None, "warnings": None}))
    assert (err.kind, err.path) == ("missing-field", "/data/eventId")


def test_pretty_printed_and_bom() -> None:
    pretty = orjson.dumps(flat(), option=orjson.OPT_INDENT_2)
    assert decode(pretty) == decode(enc(flat()))
    assert decode(b"\xef\xbb\xbf" + pretty).event_id == decode(pretty).event_id


def test_double_encoded_json_string() -> None:
    assert decode(orjson.dumps(enc(flat()).decode())).name == "pointsIssued"


# --------------------------------------------------------------------------- quirks


def test_keys_with_stray_spaces_are_normalised_recursively() -> None:
    doc = wrapped()
    doc[" timeStamp"] = doc.pop("timeStamp")
    attrs = doc["attributes"]
    attrs["apiRequestId "] = attrs.pop("apiRequestId")
    attrs[" eventName "] = attrs.pop("eventName")
    data = attrs["data"]
    data["customerIdentifiers"]["instore"]["email "] = data["customerIdentifiers"]["instore"].pop(
        "email"
    )
    data["redemptionFromEarningPrograms"] = [{"programId": 1, "points Redeemed": 10}]
    event = decode(enc(doc))
    assert event.name == "pointsIssued"
    assert event.data["customerIdentifiers"]["instore"]["email"] == EMAIL
    assert event.data["redemptionFromEarningPrograms"] == [{"programId": 1, "pointsRedeemed": 10}]


def test_clean_key_wins_over_dirty_twin() -> None:
    data = _data(**{"amount": 10, "amount ": 99, " other": 1})
    event = decode(enc(flat(data=data)))
    assert event.data["amount"] == 10
    assert event.data["other"] == 1
    assert "amount " not in event.data


def test_values_with_stray_spaces_and_float_ids() -> None:
    doc = flat(
        eventName=" pointsIssued ",
        eventId=" abc-1 ",
        orgId=150956.0,
        createdAt=1720440349027.0,
        refId=" r1 ",
    )
    doc["data"]["customerIdentifiers"]["customerId"] = 379499720.0
    event = decode(enc(doc))
    assert (event.name, event.event_id, event.org_id, event.ref_id) == (
        "pointsIssued",
        "abc-1",
        150956,
        "r1",
    )
    assert event.created_at_ms == 1720440349027 and type(event.created_at_ms) is int
    assert event.data["customerIdentifiers"]["customerId"] == 379499720
    assert type(event.data["customerIdentifiers"]["customerId"]) is int
    assert customer_id(event) == "379499720"


def test_numeric_strings_and_numeric_event_id() -> None:
    event = decode(enc(flat(orgId="150956", createdAt="1719999999123", eventId=12345)))
    assert (event.org_id, event.created_at_ms, event.event_id) == (150956, 1719999999123, "12345")


def test_optional_ref_id() -> None:
    for ref in (None, "", "  "):
        assert decode(enc(flat(refId=ref))).ref_id is None
    doc = flat()
    del doc["refId"]
    assert decode(enc(doc)).ref_id is None


def test_customer_id_helper() -> None:
    assert customer_id(decode(enc(flat()))) == "379499720"
    assert customer_id(decode(enc(flat(data={"customerIdentifiers": None})))) is None


# --------------------------------------------------------------------------- failures


def test_empty() -> None:
    assert failure(b"").kind == "empty"
    assert failure(b"  \n").kind == "empty"


def test_schema_registry_framed() -> None:
    value = b"\x00" + (42).to_bytes(4, "big") + enc(flat())
    err = failure(value)
    assert err.kind == "schema-registry-framed"
    assert "schema id 42" in err.message
    avro = b"\x00\x00\x00\x00\x07" + b"\x02\x0cpoints"
    assert failure(avro).kind == "schema-registry-framed"


@pytest.mark.parametrize(
    "value",
    [b"\x02\x06abc\x10\x00\x01", b"\x1f\x8b\x08\x00\x00\x00\x00\x00", b"\x00\x01", b"\x8a\x01\x02"],
)
def test_binary(value: bytes) -> None:
    assert failure(value).kind == "avro-or-binary"


def test_invalid_utf8() -> None:
    value = enc(flat()).replace(EMAIL.encode(), b"\xff\xfe" + EMAIL.encode())
    assert failure(value).kind == "invalid-utf8"


@pytest.mark.parametrize("value", [b"{", b'{"eventName": }', b"not json", b"NaN", b"{'a': 1}"])
def test_invalid_json(value: bytes) -> None:
    assert failure(value).kind == "invalid-json"


def test_invalid_json_message_is_value_free() -> None:
    value = enc(flat())[:-20] + EMAIL.encode() + b" oops"
    err = failure(value)
    assert err.kind == "invalid-json"


@pytest.mark.parametrize("depth", [1025, 10_000])
def test_too_deep(depth: int) -> None:
    assert failure(b"[" * depth + b"]" * depth).kind == "too-deep"
    deep_data = b'{"eventName":"x","eventId":"e","orgId":1,"createdAt":1,"data":'
    assert failure(deep_data + b'{"a":' * depth + b"1" + b"}" * depth + b"}").kind == "too-deep"


def test_deep_but_parseable_data_does_not_crash() -> None:
    depth = 1000
    nested = b'{"a ":' * depth + b"1" + b"}" * depth
    value = b'{"eventName":"x","eventId":"e","orgId":1,"createdAt":1,"data":' + nested + b"}"
    event = decode(value)
    node: Any = event.data
    for _ in range(depth):
        node = node["a"]
    assert node == 1


@pytest.mark.parametrize("value", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_not_an_object(value: bytes) -> None:
    assert failure(value).kind == "not-an-object"


def test_unknown_envelope() -> None:
    err = failure(enc({"hello": "world", "data": {"x": 1}}))
    assert (err.kind, err.path) == ("unknown-envelope", "")


@pytest.mark.parametrize(
    ("mutate", "kind", "path"),
    [
        (lambda d: d.pop("eventId"), "missing-field", "/eventId"),
        (lambda d: d.update(eventId=""), "missing-field", "/eventId"),
        (lambda d: d.update(eventId={"x": 1}), "bad-field-type", "/eventId"),
        (lambda d: d.pop("orgId"), "missing-field", "/orgId"),
        (lambda d: d.update(orgId="org"), "bad-field-type", "/orgId"),
        (lambda d: d.update(orgId=1.5), "bad-field-type", "/orgId"),
        (lambda d: d.update(orgId=True), "bad-field-type", "/orgId"),
        (lambda d: d.update(createdAt=None), "missing-field", "/createdAt"),
        (lambda d: d.update(createdAt=[1]), "bad-field-type", "/createdAt"),
        (lambda d: d.update(createdAt=-1), "bad-field-type", "/createdAt"),
        (lambda d: d.update(createdAt=10**18), "bad-field-type", "/createdAt"),
        (lambda d: d.update(createdAt=float("1e300")), "bad-field-type", "/createdAt"),
        (lambda d: d.update(data=None), "missing-field", "/data"),
        (lambda d: d.update(data=[1]), "bad-field-type", "/data"),
        (lambda d: d.pop("data"), "missing-field", "/data"),
        (lambda d: d.update(eventName=""), "missing-field", "/eventName"),
    ],
)
def test_flat_field_errors(mutate: Any, kind: str, path: str) -> None:
    doc = flat()
    mutate(doc)
    err = failure(enc(doc))
    assert (err.kind, err.path) == (kind, path)


@pytest.mark.parametrize(
    ("mutate", "kind", "path"),
    [
        (lambda d: d.update(attributes=None), "missing-field", "/attributes"),
        (lambda d: d.update(attributes="x"), "bad-field-type", "/attributes"),
        (lambda d: d.pop("eventId"), "missing-field", "/eventId"),
        (lambda d: d["attributes"].pop("data"), "missing-field", "/attributes/data"),
        (lambda d: d["attributes"].update(orgId="x"), "bad-field-type", "/attributes/orgId"),
        (
            lambda d: (d["attributes"].pop("eventName"), d.pop("eventType")),
            "missing-field",
            "/attributes/eventName",
        ),
        (
            lambda d: (d["attributes"].pop("orgId"), d.update(eventType="pointsIssued")),
            "missing-field",
            "/attributes/orgId",
        ),
        (
            lambda d: (d["attributes"].pop("createdAt"), d.pop("timeStamp")),
            "missing-field",
            "/attributes/createdAt",
        ),
    ],
)
def test_wrapped_field_errors(mutate: Any, kind: str, path: str) -> None:
    doc = wrapped()
    mutate(doc)
    err = failure(enc(doc))
    assert (err.kind, err.path) == (kind, path)


def test_error_str_is_value_free_and_informative() -> None:
    doc = flat(orgId=EMAIL)
    err = failure(enc(doc))
    assert str(err) == "bad-field-type at /orgId: envelope field orgId must be an integer"


# --------------------------------------------------------------------------- property tests

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(value: bytes) -> None:
    try:
        event = decode(value)
    except DecodeError as err:
        assert err.kind in DECODE_ERROR_KINDS
    else:
        assert isinstance(event, CanonicalEvent)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_never_crashes(doc: Any) -> None:
    try:
        decode(orjson.dumps(doc))
    except DecodeError as err:
        assert err.kind in DECODE_ERROR_KINDS


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_arbitrary_data_is_accepted_with_keys_free_of_whitespace(data: dict[str, Any]) -> None:
    event = decode(orjson.dumps(flat(data=data)))

    def keys_clean(node: Any) -> bool:
        if isinstance(node, dict):
            return all("".join(k.split()) == k and keys_clean(v) for k, v in node.items())
        if isinstance(node, list):
            return all(keys_clean(v) for v in node)
        return True

    assert keys_clean(event.data)


_key_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(" \t\n\u00a0\u0085\u2003\u3000"),
    max_size=8,
)
_keyed_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_key_text, inner, max_size=4),
    max_leaves=20,
)


def _serializations(doc: Any) -> list[bytes]:
    """The same document as orjson, Jackson-like (spaces after separators) and pretty JSON."""
    import json

    return [
        orjson.dumps(doc),
        json.dumps(doc, ensure_ascii=False).encode(),
        json.dumps(doc, ensure_ascii=True).encode(),
        json.dumps(doc, ensure_ascii=False, indent=2).encode(),
    ]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_key_text, _keyed_json, max_size=6))
def test_the_dirty_key_scan_never_misses_a_key_the_walk_would_fix(data: dict[str, Any]) -> None:
    """Decode skips the key walk when the raw bytes show no key that can hold whitespace: for
    any document and serialization, that gives exactly what always walking gives."""
    from worker import events

    for value in _serializations(flat(data=data)):
        walked = orjson.loads(value)
        events._normalise_keys(walked)
        if walked != orjson.loads(value):
            assert events._may_have_dirty_keys(value)
        assert decode(value).data == walked["data"]


def test_the_dirty_key_scan_lets_clean_events_skip_the_walk() -> None:
    from worker import events

    # Spaces in values (compact or pretty JSON) alone do not force the walk...
    assert not events._may_have_dirty_keys(orjson.dumps(flat(data=_data(note="two words"))))
    assert not events._may_have_dirty_keys(b'{"a": "x y", "b": [1, 2], "c": {"d": " e "}}')
    assert not events._may_have_dirty_keys(b'{\n  "a": "x y",\n  "b": {\n    "c": 1\n  }\n}')
    # ...but a key with a space does, and so do escapes and non-ASCII text (Unicode whitespace).
    assert events._may_have_dirty_keys(b'{"a": 1, " timeStamp": 2}')
    assert events._may_have_dirty_keys(b'{"email ":"x"}')
    assert events._may_have_dirty_keys(b'{"points Redeemed" : 1}')
    assert events._may_have_dirty_keys('{"points\u00a0Redeemed":1}'.encode())
    assert events._may_have_dirty_keys(b'{"a\\tb":1}')
    assert events._may_have_dirty_keys('{"city":"São Paulo"}'.encode())
