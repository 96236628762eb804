"""Retry-After parsing: delta-seconds and HTTP-date, capped, never negative, garbage ignored."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.aep.responses import DcsResponse, Kind, classify, parse_retry_after

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("+3", 3.0),
        ("0003", 3.0),
    ],
)
def test_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, cap=300, now=clock) == expected


def test_delta_seconds_capped() -> None:
    assert parse_retry_after("86400", cap=60, now=clock) == 60.0
    assert parse_retry_after("inf", cap=60, now=clock) is None  # not a number form
    assert parse_retry_after("1e9", cap=60, now=clock) == 60.0


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-1", "-0.5", "soon", "12 seconds", "nan", "NaN", "1,5", "0x10", "x" * 100],
)
def test_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, cap=300, now=clock) is None


def test_http_date_imf_fixdate() -> None:
    value = formatdate(NOW + 42, usegmt=True)  # "Tue, 14 Nov 2023 22:14:02 GMT"
    assert parse_retry_after(value, cap=300, now=clock) == pytest.approx(42.0)


def test_http_date_rfc850_and_asctime() -> None:
    # 1994-11-06 08:49:37 UTC = 784111777
    now = lambda: 784111777.0 - 10  # noqa: E731
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", cap=300, now=now) == 10.0
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", cap=300, now=now) == 10.0


def test_http_date_with_offset() -> None:
    # 10:00 +0200 is 08:00 UTC
    now = lambda: 784108800.0 - 5  # 1994-11-06 08:00:00 UTC minus 5 s  # noqa: E731
    assert parse_retry_after("Sun, 06 Nov 1994 10:00:00 +0200", cap=300, now=now) == 5.0


def test_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(formatdate(NOW - 3600, usegmt=True), cap=300, now=clock) == 0.0


def test_http_date_capped() -> None:
    assert parse_retry_after(formatdate(NOW + 7200, usegmt=True), cap=30, now=clock) == 30.0


@pytest.mark.parametrize(
    "value", ["Mon, 32 Nov 2023 10:00:00 GMT", "Mon, 13 Foo 2023 10:00:00 GMT", "Mon,"]
)
def test_broken_dates_are_none(value: str) -> None:
    assert parse_retry_after(value, cap=300, now=clock) is None


def test_negative_cap_gives_zero() -> None:
    assert parse_retry_after("10", cap=-1, now=clock) == 0.0


@given(st.text(max_size=80))
def test_never_raises_and_stays_in_range(value: str) -> None:
    got = parse_retry_after(value, cap=60, now=clock)
    assert got is None or 0.0 <= got <= 60.0


@given(st.integers(min_value=0, max_value=10**7))
def test_any_delta_in_range(seconds: int) -> None:
    got = parse_retry_after(str(seconds), cap=600, now=clock)
    assert got == min(seconds, 600)


def test_classify_reads_retry_after_case_insensitively() -> None:
    for name in ("Retry-After", "retry-after", "RETRY-AFTER"):
        out = classify(DcsResponse(429, {name: "2"}), 3, retry_after_cap=10, now=clock)
        assert out.kind is Kind.RETRYABLE
        assert out.retry_after == 2.0


def test_classify_caps_retry_after_on_503() -> None:
    out = classify(DcsResponse(503, {"retry-after": "9999"}), 1, retry_after_cap=12, now=clock)
    assert out.kind is Kind.RETRYABLE
    assert out.retry_after == 12.0


def test_classify_ignores_garbage_retry_after() -> None:
    out = classify(DcsResponse(429, {"retry-after": "later"}), 1, now=clock)
    assert out.kind is Kind.RETRYABLE
    assert out.retry_after is None
