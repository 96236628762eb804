"""W3C traceparent parsing: valid headers round-trip, anything else is None, never an error."""

from __future__ import annotations

import structlog
from hypothesis import given
from hypothesis import strategies as st

from worker.tracing import bound, from_headers, parse_traceparent

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEX = "0123456789abcdef"


def test_valid_header_parsed() -> None:
    ctx = parse_traceparent(VALID.encode())
    assert ctx is not None
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert ctx.parent_id == "00f067aa0ba902b7"
    assert ctx.sampled is True
    assert parse_traceparent(VALID.replace("-01", "-00")).sampled is False  # type: ignore[union-attr]


def test_future_version_may_carry_more_fields_but_00_may_not() -> None:
    assert parse_traceparent("cc" + VALID[2:] + "-what-the-future-holds") is not None
    assert parse_traceparent(VALID + "-extra") is None


def test_invalid_headers_are_none() -> None:
    for bad in (
        None, "", "garbage", VALID.upper(), "ff" + VALID[2:],
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
        VALID[:-1], b"\xff\xfe",
    ):
        assert parse_traceparent(bad) is None, bad


def test_header_name_is_case_insensitive_and_dict_headers_work() -> None:
    assert from_headers([("other", b"x"), ("TraceParent", VALID.encode())]) is not None
    assert from_headers({"traceparent": VALID}) is not None
    assert from_headers([("other", b"x")]) is None
    assert from_headers(None) is None


@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    ctx = parse_traceparent(raw)
    if ctx is not None:
        assert len(ctx.trace_id) == 32 and len(ctx.parent_id) == 16


@given(
    st.text(HEX, min_size=32, max_size=32).filter(lambda s: set(s) != {"0"}),
    st.text(HEX, min_size=16, max_size=16).filter(lambda s: set(s) != {"0"}),
    st.integers(0, 255),
)
def test_every_valid_version_00_header_round_trips(trace: str, parent: str, flags: int) -> None:
    ctx = parse_traceparent(f"00-{trace}-{parent}-{flags:02x}")
    assert ctx is not None
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled) == (trace, parent, bool(flags & 1))


def test_bound_puts_ids_on_log_lines_and_removes_them_after() -> None:
    log = structlog.get_logger("t")
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        with bound(parse_traceparent(VALID), offset=7):
            log.warning("inside")
        log.warning("outside")
    inside, outside = logs
    assert inside["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert inside["parent_span_id"] == "00f067aa0ba902b7" and inside["offset"] == 7
    assert "trace_id" not in outside and "offset" not in outside
