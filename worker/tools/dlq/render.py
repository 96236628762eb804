"""A dead letter for people and for JSONL: headers, decoded payload, PII masked by default."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from worker.tools.dlq.record import DlqRecord
from worker.tools.pii import mask, mask_raw, mask_text
from worker.tools.timespec import format_ms


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def payload(value: bytes | None, show_pii: bool) -> dict[str, Any]:
    """The value as JSON if it parses, else as text, else as base64 (binary)."""
    if value is None:
        return {"tombstone": True}
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        text = _text(value)
        if text is None:
            # Binary (Avro, framed): shown only on request, it can hold anything.
            if show_pii:
                return {"base64": base64.b64encode(value).decode()}
            return {"binary": f"{len(value)} bytes (hidden; --show-pii shows them as base64)"}
        return {"text": text if show_pii else mask_raw(text)}
    return {"json": doc if show_pii else mask(doc)}


def render(rec: DlqRecord, show_pii: bool = False) -> dict[str, Any]:
    key = None if rec.key is None else (_text(rec.key) or base64.b64encode(rec.key).decode())
    original: dict[str, str] = {}
    for k, v in rec.original_headers():
        value = _text(v) or f"<{len(v)} bytes>"
        original[k] = value if show_pii else mask_text(value)
    doc: dict[str, Any] = {
        "dlq": {
            "partition": rec.partition,
            "offset": rec.offset,
            "time": format_ms(rec.timestamp_ms),
        },
        "headers": dict(rec.info),
        "original_headers": original,
        "key": key if show_pii or key is None else mask_text(key),
        "payload": payload(rec.value, show_pii),
    }
    if show_pii and rec.value is not None:
        doc["value_base64"] = base64.b64encode(rec.value).decode()
    return doc


def headline(rec: DlqRecord) -> str:
    """One line: where it came from and why it failed."""
    src = f"{rec.source_topic}[{rec.get('source-partition')}]@{rec.get('source-offset')}"
    what = rec.get("event-name") or "?"
    target = f" -> {rec.get('target')}" if rec.get("target") else ""
    status = f" (AEP {rec.get('aep-status')})" if rec.get("aep-status") else ""
    return (
        f"dlq[{rec.partition}]@{rec.offset} {format_ms(rec.timestamp_ms)}  {src}  {what}{target}"
        f"  {rec.stage}/{rec.get('error-kind')}{status}: {rec.get('reason')}"
    )

