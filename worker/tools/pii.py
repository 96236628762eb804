"""Masking of emails and phone numbers in what the operator tools print (pure).

Capillary payloads carry identifiers in several shapes: named fields
(``customerIdentifiers.instore.mobile``, ``email``), key/value pairs
(``identifiers[]{key: "mobile", value}``, ``updatedFields[]{fieldName: "email",
previousValue, currentValue}``) and free text. All three are masked: named fields and pairs by
their name, whatever the value looks like; free text by pattern (any email address, and phone
numbers written with a leading ``+``). Masks keep just enough to tell records apart at a
glance: ``j***@***.com``, ``***10``.
"""

from __future__ import annotations

import re
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# A '+' and 7-15 digits, optionally separated by spaces, dots, dashes or parentheses.
_PHONE = re.compile(r"\+\(?\d(?:[\s.\-()]*\d){6,14}")
_EMAIL_NAMES = ("email", "mail")
_PHONE_NAMES = ("mobile", "phone", "msisdn", "cellnumber", "cell_number")
# Sibling keys naming what the value fields of a key/value pair hold.
_NAME_KEYS = ("key", "type", "fieldName", "name", "identifierType", "identifier")
_VALUE_KEYS = ("value", "previousValue", "currentValue", "identifierValue", "oldValue", "newValue")
# Raw, undecodable text: "mobile": "..." / "email": 123 inside broken JSON.
_RAW_FIELD = re.compile(
    r'("[^"]*(?:email|mail|mobile|phone|msisdn)[^"]*"\s*:\s*)("(?:[^"\\]|\\.)*"|[\d+][\d\s.\-()]*)',
    re.IGNORECASE,
)


def _kind(name: str) -> str | None:
    low = name.strip().lower()
    if any(n in low for n in _EMAIL_NAMES):
        return "email"
    if any(n in low for n in _PHONE_NAMES):
        return "phone"
    return None


def mask_email(text: str) -> str:
    local, _, domain = text.partition("@")
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    return f"{local[:1]}***@***" + (f".{tld}" if tld else "")


def mask_phone(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return "***" + digits[-2:] if len(digits) > 4 else "***"


def mask_text(text: str) -> str:
    """Free text: every email address and every '+'-prefixed phone number masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if "+" in text:
        text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return text


def _mask_as(kind: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        return mask(value, force=kind)
    text = str(value)
    if not text.strip():
        return value
    if kind == "email":
        return mask_email(text) if "@" in text else "***"
    return mask_phone(text)


def mask(obj: Any, *, force: str | None = None) -> Any:
    """A copy of a decoded JSON value with PII masked (``force``: everything in it is one kind)."""
    if isinstance(obj, dict):
        pair_kind = next(
            (k for k in (_kind(str(obj[n])) for n in _NAME_KEYS
                         if isinstance(obj.get(n), str)) if k),
            None,
        )
        out: dict[str, Any] = {}
        for key, value in obj.items():
            kind = force or _kind(key) or (pair_kind if key in _VALUE_KEYS else None)
            out[key] = _mask_as(kind, value) if kind else mask(value)
        return out
    if isinstance(obj, list):
        return [_mask_as(force, v) if force else mask(v) for v in obj]
    if isinstance(obj, str):
        return _mask_as(force, obj) if force else mask_text(obj)
    if force and isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return _mask_as(force, obj)
    return obj


def mask_raw(text: str) -> str:
    """Text that is not valid JSON: named fields by their name, the rest by pattern."""

    def field(m: re.Match[str]) -> str:
        kind = _kind(m.group(1).strip().strip(":").strip().strip('"')) or "phone"
        masked = _mask_as(kind, m.group(2).strip('"'))
        return f'{m.group(1)}"{masked}"'

    return mask_text(_RAW_FIELD.sub(field, text))
