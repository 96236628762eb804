"""W3C Trace Context (``traceparent``) carried from input records into logs and dead letters.

A producer that traces its writes puts ``traceparent: 00-<trace-id>-<parent-id>-<flags>`` on
the Kafka record. The worker does not start spans of its own; it keeps the caller's ids so a
record's error or dead-letter log line, and its dead-letter record, can be found from the
trace. The dead letter keeps the original header anyway (all original headers are kept) and
gets ``capillary-aep.trace-id`` for filtering.

Parsing follows the W3C rules strictly enough that a malformed header never reaches a log as
if it were an id: lowercase hex only, no all-zero ids, version ``ff`` invalid, version ``00``
exactly 55 characters, later versions may append ``-...`` fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

TRACEPARENT = "traceparent"
_PATTERN = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str
    sampled: bool

    def log_fields(self) -> dict[str, str]:
        return {"trace_id": self.trace_id, "parent_span_id": self.parent_id}


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """The context of a ``traceparent`` value, or None when absent or malformed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()
    m = _PATTERN.fullmatch(value)
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest is not None:
        return None
    return TraceContext(trace_id, parent_id, bool(int(flags, 16) & 1))


def from_headers(
    headers: Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None,
) -> TraceContext | None:
    """The trace context of a Kafka record's headers (name matched case-insensitively)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name.lower() == TRACEPARENT:
            return parse_traceparent(value)
    return None


@contextmanager
def bound(ctx: TraceContext | None, **fields: object) -> Iterator[None]:
    """Bind the trace ids (and ``fields``) to every log line emitted inside the block."""
    extra: dict[str, object] = dict(fields)
    if ctx is not None:
        extra.update(ctx.log_fields())
    with structlog.contextvars.bound_contextvars(**extra):
        yield
