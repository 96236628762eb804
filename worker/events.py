"""Decode one Kafka message value into a canonical Capillary event (pure, no I/O).

Capillary's Event Notification framework sends one JSON object per business event, in one of
two envelopes (SPEC 1.1)::

    flat:    {"eventName", "eventId", "orgId", "refId", "createdAt", "data", ...}
    wrapped: {"eventId", "eventType": "150956_pointsIssued", "timeStamp", ...,
              "attributes": {"eventName", "orgId", "refId", "createdAt", "data", ...}}

and, for ``customerUpdated``, sometimes inside an API-style ``{"data": {...}, "errors": null,
"warnings": null}``. :func:`decode` turns every one of them into a :class:`CanonicalEvent`, or
raises :class:`DecodeError` with a stable ``kind`` code, a JSON pointer and a message that never
contains a value from the payload (payloads carry emails and phone numbers).

Normalisation of the quirks of SPEC 1.2, and what it costs:

* keys with whitespace (``" timeStamp"``, ``"email "``, ``"points Redeemed"``): a scan of the
  raw bytes rules them out for most events (:func:`_may_have_dirty_keys`); otherwise every key
  in the document is checked, cheaply, against a bounded cache of keys already known to be
  clean (one C-level ``set.issuperset`` per object); only objects that do hold a dirty key are
  rebuilt, with all whitespace removed from their keys (Capillary's field names never contain
  whitespace).
  When both a clean key and a dirty twin exist, the clean key wins.
* numbers sent as floats (``"customerId": 379499720.0``, ``"createdAt": 1720440349027.0``): the
  envelope fields and ``data.customerIdentifiers.customerId`` become ``int``; other fields in
  ``data`` keep the float (JSON Schema treats an integral float as an integer, and the mappers
  read ids through helpers that format integral floats without ``.0``).
* string values with stray spaces (``" START"``) are stripped in the envelope fields; values
  inside ``data`` are left as sent and stripped by the mappers where they use them.
* ``null`` where an object is expected, placeholder strings and empty strings inside ``data`` are
  left for the input schema (tolerant where the mapping does not need the field) and the mappers.

Tombstones (a ``None`` value) are the caller's business: they are not events.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import orjson

__all__ = [
    "DECODE_ERROR_KINDS",
    "CanonicalEvent",
    "DecodeError",
    "customer_id",
    "decode",
]

Envelope = Literal["flat", "wrapped"]


class CanonicalEvent:
    """One Capillary event, whatever envelope it came in. Read-only by convention.

    A plain slotted class: a frozen dataclass's ``__init__`` (``object.__setattr__`` per
    field) cost ~2 µs per event, and a dataclass's generated ``__init__`` stays Python code
    when the module is compiled (worker.compiled)."""

    __slots__ = ("created_at_ms", "data", "envelope", "event_id", "name", "org_id", "ref_id")

    def __init__(
        self, name: str, event_id: str, org_id: int, created_at_ms: int, ref_id: str | None,
        data: dict[str, Any], envelope: Envelope,
    ) -> None:
        self.name = name  # e.g. "pointsIssued" (an "150956_" org prefix of eventType removed)
        self.event_id = event_id  # Capillary's idempotency key
        self.org_id = org_id
        self.created_at_ms = created_at_ms  # epoch milliseconds when Capillary stored the event
        self.ref_id = ref_id
        self.data = data  # the event-specific payload, keys normalised
        self.envelope = envelope

    def _fields(self) -> tuple[Any, ...]:
        return (self.name, self.event_id, self.org_id, self.created_at_ms, self.ref_id,
                self.data, self.envelope)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CanonicalEvent):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (f"CanonicalEvent(name={self.name!r}, event_id={self.event_id!r}, "
                f"org_id={self.org_id}, created_at_ms={self.created_at_ms}, "
                f"ref_id={self.ref_id!r}, envelope={self.envelope!r})")  # fmt: skip


# Stable, short, value-free codes. Tests and dashboards depend on them: add, never rename.
DECODE_ERROR_KINDS: Final = (
    "empty",  # zero bytes, or only whitespace
    "schema-registry-framed",  # Confluent wire format: magic byte 0x00 + 4-byte schema id
    "avro-or-binary",  # some other binary encoding (Avro, protobuf, compressed...)
    "invalid-utf8",  # looks like JSON but is not valid UTF-8
    "invalid-json",  # UTF-8 text that is not JSON
    "too-deep",  # nesting deeper than the parser allows (1024 levels)
    "not-an-object",  # valid JSON, but not an object at the top
    "unknown-envelope",  # an object that is neither envelope
    "missing-field",  # a required envelope field is absent, null or empty
    "bad-field-type",  # a required envelope field has an unusable type or value
)


class DecodeError(Exception):
    """A message value that cannot become a :class:`CanonicalEvent`.

    ``kind`` is one of :data:`DECODE_ERROR_KINDS`; ``path`` is a JSON pointer into the message
    ("" for the whole message). The message never quotes payload values.
    """

    def __init__(self, kind: str, path: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.kind}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"DecodeError(kind={self.kind!r}, path={self.path!r}, message={self.message!r})"


# --------------------------------------------------------------------------- key normalisation

_MAX_CLEAN_KEYS: Final = 20_000
_MAX_EPOCH_MS: Final = 253_402_300_800_000  # 10000-01-01T00:00:00Z: beyond, no RFC 3339 instant
_CLEAN_KEYS: set[str] = set()  # keys seen without whitespace; bounded, a cache only
_CONTAINERS: Final = frozenset((dict, list))


def _strip_ws(key: str) -> str:
    return "".join(key.split())


def _dict_has_dirty_key(node: dict[str, Any]) -> bool:
    """True when a key of this object holds whitespace (results for clean keys are cached)."""
    dirty = False
    for key in node:
        if key in _CLEAN_KEYS:
            continue
        if _strip_ws(key) != key:
            dirty = True
        else:
            if len(_CLEAN_KEYS) >= _MAX_CLEAN_KEYS:
                _CLEAN_KEYS.clear()
            _CLEAN_KEYS.add(key)
    return dirty


def _rebuild(node: dict[str, Any]) -> None:
    """Rewrite ``node`` in place with whitespace removed from its keys (clean twins win)."""
    items = list(node.items())
    original = set(node)
    node.clear()
    for key, value in items:
        fixed = _strip_ws(key)
        if fixed == key:
            node[key] = value
        elif fixed not in original and fixed not in node:
            node[fixed] = value


# A key holding whitespace, in JSON text that is ASCII and has no backslash (so no escapes, and
# every quote is a string delimiter; tabs and line breaks in strings must be escaped), holds a
# last space followed by non-space characters up to its closing quote and a colon. Every dirty
# key matches; a match may also be a false alarm (the walk then finds nothing). Stopping at the
# next space keeps indentation and ", " separators cheap.
_SPACE_IN_KEY: Final = re.compile(rb' [^" ]*"\s*:')


def _may_have_dirty_keys(value: bytes) -> bool:
    """False only when no key of the JSON text ``value`` can hold whitespace: C-level scans of
    the bytes (~1.5 µs on a 1 KB event) instead of the walk of :func:`_normalise_keys` (~5 µs).
    Non-ASCII text (Unicode whitespace is non-ASCII) and escapes always take the walk."""
    return b"\\" in value or not value.isascii() or _SPACE_IN_KEY.search(value) is not None


def _normalise_keys(root: dict[str, Any]) -> None:
    """Walk every object and array under ``root`` (iteratively: depth cannot crash it)."""
    clean = _CLEAN_KEYS
    containers = _CONTAINERS
    stack: list[Any] = [root]
    pop = stack.pop
    push = stack.append
    while stack:
        node = pop()
        if type(node) is dict:
            if not clean.issuperset(node) and _dict_has_dirty_key(node):
                _rebuild(node)
            values: Any = node.values()
        else:
            values = node
        for value in values:
            if type(value) in containers:
                push(value)


# --------------------------------------------------------------------------- field coercion


def _missing(path: str, what: str) -> DecodeError:
    return DecodeError("missing-field", path, f"required envelope field {what} is missing")


def _bad(path: str, what: str, expected: str) -> DecodeError:
    return DecodeError("bad-field-type", path, f"envelope field {what} must be {expected}")


def _text(value: Any, path: str, what: str) -> str:
    """A non-empty string; integral numbers are accepted and formatted without ``.0``."""
    kind = type(value)
    if kind is str:
        text = str(value).strip()
        if text:
            return text
        raise _missing(path, what)
    if value is None:
        raise _missing(path, what)
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    raise _bad(path, what, "a string")


def _integer(value: Any, path: str, what: str, *, truncate: bool = False) -> int:
    """An int; integral floats and digit strings are accepted (``truncate`` allows fractions)."""
    kind = type(value)
    if kind is int:
        return int(value)
    if value is None:
        raise _missing(path, what)
    if kind is float:
        if value.is_integer() or (truncate and value == value and abs(value) != float("inf")):
            return int(value)
        raise _bad(path, what, "an integer")
    if kind is str:
        text = str(value).strip()
        if not text:
            raise _missing(path, what)
        if text.isdigit() and text.isascii():
            return int(text)
        try:
            number = float(text)
        except ValueError:
            raise _bad(path, what, "an integer") from None
        if number.is_integer() or (truncate and number == number and abs(number) != float("inf")):
            return int(number)
    raise _bad(path, what, "an integer")


def _instant(value: Any, path: str, what: str) -> int:
    """Epoch milliseconds between 1970 and 9999 (RFC 3339 cannot express more)."""
    millis = _integer(value, path, what, truncate=True)
    if not 0 <= millis < _MAX_EPOCH_MS:
        raise _bad(path, what, "epoch milliseconds between 1970 and 9999")
    return millis


def _optional_text(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        text = str(value).strip()
        return text or None
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    return None


def _name_from_event_type(value: Any) -> tuple[str | None, int | None]:
    """``"150956_pointsIssued"`` -> ("pointsIssued", 150956); ``"pointsIssued"`` -> (.., None)."""
    if type(value) is not str:
        return None, None
    text = str(value).strip()
    head, sep, tail = text.partition("_")
    if sep and head.isdigit() and head.isascii():
        return (tail.strip() or None), int(head)
    return (text or None), None


# --------------------------------------------------------------------------- parse failures

_GZIP_MAGIC: Final = b"\x1f\x8b"
_JSON_STARTS: Final = frozenset(b'{["-0123456789tfn')
_TEXT_CONTROLS: Final = frozenset(b"\t\n\r")
_BOM: Final = b"\xef\xbb\xbf"


def _looks_binary(value: bytes) -> bool:
    head = value[:64]
    return any(b < 0x20 and b not in _TEXT_CONTROLS for b in head) or head.startswith(_GZIP_MAGIC)


def _parse_failure(value: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    reason = str(exc.msg if hasattr(exc, "msg") else exc).lower()
    if "depth" in reason or "recursion" in reason:
        return DecodeError(
            "too-deep", "", "JSON nesting is deeper than the 1024 levels the parser accepts"
        )
    stripped = value.lstrip()
    first = stripped[0] if stripped else 0
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as err:
        if first in _JSON_STARTS and not _looks_binary(value):
            return DecodeError(
                "invalid-utf8", "", f"value is not valid UTF-8 (first bad byte at {err.start})"
            )
        return _binary_error(value)
    if first not in _JSON_STARTS and _looks_binary(value):
        return _binary_error(value)
    return DecodeError("invalid-json", "", f"value is not valid JSON (parser stopped at {exc.pos})")


def _binary_error(value: bytes) -> DecodeError:
    if value.startswith(_GZIP_MAGIC):
        detail = "gzip-compressed bytes"
    else:
        detail = "binary data (Avro, protobuf or another non-JSON encoding)"
    return DecodeError(
        "avro-or-binary",
        "",
        f"value is {detail}, not UTF-8 JSON: the worker reads Capillary's plain JSON events",
    )


def _framed_error(value: bytes) -> DecodeError:
    schema_id = int.from_bytes(value[1:5], "big")
    return DecodeError(
        "schema-registry-framed",
        "",
        "value is Confluent Schema Registry framed (magic byte 0x00, schema id "
        f"{schema_id}), not plain JSON: produce Capillary events as plain UTF-8 JSON "
        "(StringSerializer/JSON without Schema Registry)",
    )


# --------------------------------------------------------------------------- decode


def _load(value: bytes) -> Any:
    if not value:
        raise DecodeError("empty", "", "message value is empty")
    if value[0] == 0:
        if len(value) >= 5:
            raise _framed_error(value)
        raise _binary_error(value)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if not value.strip():
            raise DecodeError("empty", "", "message value is empty") from None
        if value.startswith(_BOM):
            return _load(value[len(_BOM) :])
        raise _parse_failure(value, exc) from None


def decode(value: bytes) -> CanonicalEvent:
    """Parse and normalise one Kafka message value (``bytes``; tombstones are not passed here)."""
    doc = _load(value)
    from_value = True  # doc is the JSON text of value itself (its keys can be scanned there)
    if type(doc) is str and str(doc).lstrip().startswith("{"):
        # A double-encoded event (a JSON string holding the JSON object): one level is accepted.
        try:
            doc = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise _parse_failure(str(doc).encode(), exc) from None
        from_value = False  # keys of the inner text: always walked
    if type(doc) is not dict:
        raise DecodeError("not-an-object", "", "top-level JSON value is not an object")
    if not from_value or _may_have_dirty_keys(value):
        _normalise_keys(doc)

    prefix = ""
    if "eventId" not in doc and "eventType" not in doc and "eventName" not in doc:
        inner = doc.get("data")
        if type(inner) is dict and (
            "eventId" in inner or "eventName" in inner or "eventType" in inner
        ):
            doc = inner  # API-style {"data": {...event...}, "errors": null, "warnings": null}
            prefix = "/data"

    attributes = doc.get("attributes")
    if attributes is not None or "eventType" in doc:
        return _wrapped(doc, attributes, prefix)
    if "eventName" in doc:
        return _flat(doc, prefix)
    raise DecodeError(
        "unknown-envelope",
        prefix,
        "object is neither Capillary envelope (no eventName, eventType or attributes)",
    )


def _flat(doc: dict[str, Any], prefix: str) -> CanonicalEvent:
    raw = doc.get("eventName")
    if type(raw) is str and (name := raw.strip()) and "_" not in name:
        pass
    else:
        name = _text(raw, f"{prefix}/eventName", "eventName")
        name = _name_from_event_type(name)[0] or name
    raw = doc.get("eventId")
    if not (type(raw) is str and (event_id := raw.strip())):
        event_id = _text(raw, f"{prefix}/eventId", "eventId")
    org_id = doc.get("orgId")
    if type(org_id) is not int:
        org_id = _integer(org_id, f"{prefix}/orgId", "orgId")
    created = doc.get("createdAt")
    if type(created) is not int or not 0 <= created < _MAX_EPOCH_MS:
        created = _instant(created, f"{prefix}/createdAt", "createdAt")
    data = _data(doc.get("data"), f"{prefix}/data")
    return CanonicalEvent(
        name, event_id, org_id, created, _optional_text(doc.get("refId")), data, "flat"
    )


def _wrapped(doc: dict[str, Any], attributes: Any, prefix: str) -> CanonicalEvent:
    apath = f"{prefix}/attributes"
    if type(attributes) is not dict:
        if attributes is None:
            raise _missing(apath, "attributes")
        raise _bad(apath, "attributes", "an object")

    raw = attributes.get("eventName")
    if type(raw) is str and (name := raw.strip()) and "_" not in name:
        pass
    elif raw is None or (type(raw) is str and not raw.strip()):
        type_name = _name_from_event_type(doc.get("eventType"))[0]
        if type_name is None:
            raise _missing(f"{apath}/eventName", "eventName (or eventType)")
        name = type_name
    else:
        name = _text(raw, f"{apath}/eventName", "eventName")
        name = _name_from_event_type(name)[0] or name

    raw = doc.get("eventId")
    if not (type(raw) is str and (event_id := raw.strip())):
        if raw is None:
            raw = attributes.get("eventId")
        event_id = _text(raw, f"{prefix}/eventId", "eventId")

    org_id = attributes.get("orgId")
    if type(org_id) is not int:
        type_org = _name_from_event_type(doc.get("eventType"))[1] if org_id is None else None
        org_id = type_org if type_org is not None else _integer(org_id, f"{apath}/orgId", "orgId")

    created = attributes.get("createdAt")
    if type(created) is not int or not 0 <= created < _MAX_EPOCH_MS:
        if created is None and doc.get("timeStamp") is not None:
            created = _instant(doc.get("timeStamp"), f"{prefix}/timeStamp", "timeStamp")
        else:
            created = _instant(created, f"{apath}/createdAt", "createdAt")

    data = _data(attributes.get("data"), f"{apath}/data")
    return CanonicalEvent(
        name, event_id, org_id, created, _optional_text(attributes.get("refId")), data, "wrapped"
    )


def _data(value: Any, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        if value is None:
            raise _missing(path, "data")
        raise _bad(path, "data", "an object")
    data: dict[str, Any] = value
    identifiers = data.get("customerIdentifiers")
    if type(identifiers) is dict:
        cid = identifiers.get("customerId")
        if type(cid) is float and cid.is_integer():
            identifiers["customerId"] = int(cid)
        elif type(cid) is str and cid != cid.strip():
            identifiers["customerId"] = cid.strip()
    return data


def customer_id(event: CanonicalEvent) -> str | None:
    """Capillary's customer id as text (``data.customerIdentifiers.customerId``), if present."""
    identifiers = event.data.get("customerIdentifiers")
    if type(identifiers) is not dict:
        return None
    return _optional_text(identifiers.get("customerId"))
