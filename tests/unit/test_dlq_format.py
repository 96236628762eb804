"""Dead-letter headers, truncation and the guard (pure)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from worker.config import DlqGuardSettings
from worker.dlq import (
    PREFIX,
    DeadLetter,
    SourceRecord,
    build_headers,
    header_map,
    record_size,
    truncate,
)
from worker.dlq_guard import DlqGuard


def _src(headers: list[tuple[str, bytes]] | None = None) -> SourceRecord:
    return SourceRecord("in", 2, 41, 1719999999123, b"k", b"value", headers or [("trace", b"t1")])


def test_headers_carry_where_and_why_but_no_value() -> None:
    why = DeadLetter("validate", "SchemaViolation", "type", "/data/amount: type", path="/data/amount",
                     target="events", event_name="pointsIssued", aep_status=400, aep_batch_id="b1")
    h = header_map(build_headers(_src(), why))
    assert h["stage"] == "validate" and h["error-kind"] == "type"
    assert h["error-path"] == "/data/amount" and h["target"] == "events"
    assert h["source-topic"] == "in" and h["source-partition"] == "2" and h["source-offset"] == "41"
    assert h["source-timestamp"] == "1719999999123" and h["aep-status"] == "400"
    assert h["attempt"] == "1" and h["worker-version"]


def test_redriven_record_overwrites_headers_and_counts_attempts() -> None:
    first = build_headers(_src(), DeadLetter("decode", "DecodeError", "invalid-json", "bad"))
    second = build_headers(_src(first), DeadLetter("deliver", "AepRejected", "aep-400", "no"))
    names = [k for k, _ in second]
    assert len(names) == len(set(names)), "no duplicated headers"
    h = header_map(second)
    assert h["attempt"] == "2" and h["stage"] == "deliver"
    assert ("trace", b"t1") in second, "original headers kept"


@given(size=st.integers(0, 300_000), limit=st.integers(10_000, 200_000))
def test_truncate_fits_and_describes_original(size: int, limit: int) -> None:
    value = bytes(i % 251 for i in range(size))
    headers = build_headers(_src(), DeadLetter("decode", "DecodeError", "too-deep", "x"))
    cut, new_headers = truncate(b"k", value, headers, limit)
    assert record_size(b"k", cut, new_headers) <= limit
    assert value.startswith(cut or b"")
    h = header_map(new_headers)
    assert h["payload-truncated"] == "true" and h["payload-length"] == str(size)
    assert h["payload-sha256"] == hashlib.sha256(value).hexdigest()
    assert all(k.startswith(PREFIX) or k == "trace" for k, _ in new_headers)


def test_guard_trips_on_consecutive_and_stays_tripped() -> None:
    guard = DlqGuard(DlqGuardSettings(max_consecutive=5, min_records=1000, window=1000))
    assert all(guard.allow_invalid() for _ in range(4))
    assert not guard.allow_invalid()
    assert guard.tripped and "in a row" in guard.reason
    guard.valid()
    assert not guard.allow_invalid(), "only an operator clears it"


def test_guard_trips_on_ratio_over_window() -> None:
    guard = DlqGuard(DlqGuardSettings(max_invalid_ratio=0.3, window=100, min_records=50,
                                      max_consecutive=1000))
    results = []
    for i in range(200):
        if i % 2:
            results.append(guard.allow_invalid())
        else:
            guard.valid()
    assert guard.tripped and results.count(False) >= 1
    assert "ratio" in guard.reason


def test_guard_tolerates_a_low_invalid_share_forever() -> None:
    guard = DlqGuard(DlqGuardSettings(max_invalid_ratio=0.5, window=100, min_records=10,
                                      max_consecutive=3))
    for i in range(10_000):
        if i % 10 == 0:
            assert guard.allow_invalid()
        else:
            guard.valid()
    assert not guard.tripped and 0.05 < guard.invalid_ratio < 0.15
