"""DLQ tools without Kafka: filters, summary dedupe, rendering, redrive headers."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import given
from hypothesis import strategies as st

from worker.dlq import PREFIX, DeadLetter, SourceRecord, build_headers
from worker.tools.dlq.filters import RecordFilter
from worker.tools.dlq.record import DlqRecord
from worker.tools.dlq.redrive import RedriveOptions, redrive_headers
from worker.tools.dlq.render import render
from worker.tools.dlq.summary import summarize

EMAIL = "ravi.k@example.in"


def dead_letter(
    offset: int, stage: str = "decode", kind: str = "invalid-json", *, source_offset: int = 7,
    event: str = "", target: str = "", ts: int = 1_000, value: bytes | None = b"{bad",
    headers: list[tuple[str, bytes]] | None = None,
) -> DlqRecord:
    src = SourceRecord("orders", 1, source_offset, 5, b"k", value, headers or [("trace", b"t")])
    why = DeadLetter(stage, "X", kind, f"because {kind}", event_name=event, target=target)  # type: ignore[arg-type]
    return DlqRecord.of(0, offset, ts, b"k", value, build_headers(src, why))


def test_every_criterion_narrows() -> None:
    rec = dead_letter(3, "transform", "bad-date", event="tierUpgraded", target="profile-tier")
    assert RecordFilter().matches(rec)
    hits = [
        RecordFilter(stages=frozenset({"transform"})),
        RecordFilter(reason="BAD-DATE"),
        RecordFilter(reason="because"),
        RecordFilter(kinds=frozenset({"bad-date"})),
        RecordFilter(event_names=frozenset({"tierUpgraded"})),
        RecordFilter(targets=frozenset({"profile-tier"})),
        RecordFilter(source_topic="orders", source_partition=1, source_offsets=(7, 7)),
        RecordFilter(since_ms=1_000, until_ms=1_001),
    ]
    misses = [
        RecordFilter(stages=frozenset({"decode"})),
        RecordFilter(reason="timeout"),
        RecordFilter(kinds=frozenset({"bad"})),
        RecordFilter(event_names=frozenset({"pointsIssued"})),
        RecordFilter(targets=frozenset({"loyalty-events"})),
        RecordFilter(source_topic="other"),
        RecordFilter(source_partition=0),
        RecordFilter(source_offsets=(8, 100)),
        RecordFilter(since_ms=1_001),
        RecordFilter(until_ms=1_000),
    ]
    assert all(f.matches(rec) for f in hits)
    assert not any(f.matches(rec) for f in misses)


def test_a_redrive_job_keeps_its_selection_whatever_the_time_window_says() -> None:
    base = RedriveOptions("job", "dlq", RecordFilter(kinds=frozenset({"x"}), since_ms=1))
    later = dataclasses.replace(base, filter=dataclasses.replace(base.filter, since_ms=99))
    assert base.fingerprint() == later.fingerprint()
    other = dataclasses.replace(base, filter=RecordFilter(kinds=frozenset({"y"})))
    assert base.fingerprint() != other.fingerprint()
    assert base.fingerprint() != dataclasses.replace(base, to_topic="t").fingerprint()


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["decode", "validate"])),
                max_size=40))
def test_summary_counts_each_source_record_and_stage_once(
    failures: list[tuple[int, str]]
) -> None:
    records = [dead_letter(i, stage, source_offset=so, ts=100 + i)
               for i, (so, stage) in enumerate(failures)]
    summary = summarize(records)
    assert summary.records == len(failures)
    assert summary.unique == len(set(failures))
    assert sum(summary.counts["stage"].values()) == summary.unique
    if failures:
        assert (summary.first_ms, summary.last_ms) == (100, 100 + len(failures) - 1)


def test_render_masks_by_default_and_keeps_raw_on_request() -> None:
    value = orjson.dumps({"eventName": "x", "data": {"email": EMAIL}})
    rec = dead_letter(1, value=value, headers=[("contact", EMAIL.encode())])
    masked = orjson.dumps(render(rec)).decode()
    assert EMAIL not in masked and "r***@***.in" in masked
    raw = render(rec, show_pii=True)
    assert raw["payload"]["json"]["data"]["email"] == EMAIL
    assert raw["original_headers"] == {"contact": EMAIL}
    assert render(rec)["original_headers"] == {"contact": "r***@***.in"}
    tomb = render(dead_letter(2, value=None))
    assert tomb["payload"] == {"tombstone": True}


def test_redrive_headers_keep_the_original_ones_and_count_redrives() -> None:
    first = dead_letter(1)
    headers = dict(redrive_headers(first))
    assert headers["trace"] == b"t"
    assert headers[PREFIX + "redrive-count"] == b"1" and headers[PREFIX + "attempt"] == b"1"
    assert not {k for k in headers if k.startswith(PREFIX)} - {
        PREFIX + "redrive-count", PREFIX + "attempt"}, "the DLQ's own headers are not re-sent"
    # failed again after the redrive: the worker kept the count, the next redrive raises it
    again = DlqRecord.of(0, 9, 1, b"k", b"{bad", build_headers(
        SourceRecord("orders", 1, 40, 5, b"k", b"{bad", redrive_headers(first)),
        DeadLetter("decode", "DecodeError", "invalid-json", "still"),
    ))
    assert again.redrive_count == 1 and again.get("attempt") == "2"
    assert dict(redrive_headers(again))[PREFIX + "redrive-count"] == b"2"
