"""The dead-letter record: original key, value and headers, plus our headers under one prefix.

Our headers say where and why a record failed, never the offending value (error text can carry
PII). A redriven record that fails again gets its headers overwritten, not duplicated, and its
attempt count raised.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Literal

from worker import __version__

PREFIX = "capillary-aep."
Stage = Literal["decode", "validate", "transform", "deliver"]
Header = tuple[str, bytes]
# Room kept for the record's framing and our own headers when truncating to the topic limit.
FRAMING_ALLOWANCE = 2048


@dataclass(slots=True)
class DeadLetter:
    """Why one source record (or one target of it) is dead-lettered."""

    stage: Stage
    error_class: str  # e.g. DecodeError, SchemaViolation, MappingError, AepRejected
    error_kind: str  # stable short code, e.g. invalid-json, required, too-large
    reason: str  # value-free explanation
    path: str = ""  # JSON pointer of the offending field
    target: str = ""
    event_name: str = ""
    aep_status: int | None = None
    aep_batch_id: str | None = None
    aep_xaction_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def _int_header(headers: list[Header], name: str) -> int:
    for key, value in headers:
        if key == PREFIX + name:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def build_headers(src: SourceRecord, why: DeadLetter, now: float | None = None) -> list[Header]:
    kept = [(k, v if v is not None else b"") for k, v in src.headers if not k.startswith(PREFIX)]
    ours: dict[str, str] = {
        "stage": why.stage,
        "error-class": why.error_class,
        "error-kind": why.error_kind,
        "reason": why.reason[:500],
        "source-topic": src.topic,
        "source-partition": str(src.partition),
        "source-offset": str(src.offset),
        "attempt": str(_int_header(src.headers, "attempt") + 1),
        "worker-version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now or time.time())),
    }
    redrives = _int_header(src.headers, "redrive-count")
    if redrives:  # a redriven record failing again keeps its count: the redrive loop guard
        ours["redrive-count"] = str(redrives)
    if why.path:
        ours["error-path"] = why.path[:300]
    if src.timestamp_ms is not None:
        ours["source-timestamp"] = str(src.timestamp_ms)
    if why.target:
        ours["target"] = why.target
    if why.event_name:
        ours["event-name"] = why.event_name
    if why.aep_status is not None:
        ours["aep-status"] = str(why.aep_status)
    if why.aep_batch_id:
        ours["aep-batch-id"] = why.aep_batch_id
    if why.aep_xaction_id:
        ours["aep-xaction-id"] = why.aep_xaction_id
    ours.update(why.extra)
    return kept + [(PREFIX + k, v.encode()) for k, v in ours.items()]


def record_size(key: bytes | None, value: bytes | None, headers: list[Header]) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k) + len(v) + 8 for k, v in headers)
        + 100
    )


def truncate(
    key: bytes | None, value: bytes | None, headers: list[Header], limit: int
) -> tuple[bytes | None, list[Header]]:
    """Cut the value so the record fits ``limit`` bytes; say so in headers (length, sha256)."""
    original = value or b""
    extra: list[Header] = [
        (PREFIX + "payload-truncated", b"true"),
        (PREFIX + "payload-length", str(len(original)).encode()),
        (PREFIX + "payload-sha256", hashlib.sha256(original).hexdigest().encode()),
    ]
    headers = [h for h in headers if h[0] not in {e[0] for e in extra}] + extra
    room = limit - record_size(key, b"", headers) - FRAMING_ALLOWANCE
    return original[: max(room, 0)], headers


def header_map(headers: list[Header] | None) -> dict[str, str]:
    """Our headers only, decoded (for operator tools and tests)."""
    out: dict[str, str] = {}
    for k, v in headers or []:
        if k.startswith(PREFIX):
            out[k.removeprefix(PREFIX)] = (v or b"").decode("utf-8", "replace")
    return out
