"""Replay logic without Kafka: time specs, reset plans, the replay mark, rate limit, run bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import replay_mark
from worker.dlq import DeadLetter, SourceRecord, build_headers, header_map
from worker.kafka import GUARD_MARK
from worker.rate_limit import RateLimit
from worker.run_bounds import RunBounds
from worker.tools.offset_reset import PartitionState, PlanError, ResetMode, plan_reset
from worker.tools.timespec import (
    TimeSpecError,
    parse_datetime,
    parse_duration,
    parse_instant,
    to_ms,
)

# -- time specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT6H", timedelta(hours=6)),
        ("pt30m", timedelta(minutes=30)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT90S", timedelta(seconds=90)),
        ("PT1.5H", timedelta(minutes=90)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [("6h", "not ISO 8601"), ("P", "not ISO 8601"), ("PT", "not ISO 8601"), ("P1DT", "not ISO"),
     ("P1M", "ambiguous"), ("P1Y", "ambiguous"), ("PT0S", "longer than zero")],
)
def test_bad_durations_say_what_is_expected(text: str, says: str) -> None:
    with pytest.raises(TimeSpecError, match=says):
        parse_duration(text)


def test_datetimes_need_a_zone() -> None:
    assert to_ms(parse_datetime("2024-07-01T06:00:00Z")) == 1_719_813_600_000
    assert to_ms(parse_datetime("2024-07-01T11:30:00+05:30")) == 1_719_813_600_000
    with pytest.raises(TimeSpecError, match="no time zone"):
        parse_datetime("2024-07-01T06:00:00")
    with pytest.raises(TimeSpecError, match="not ISO 8601"):
        parse_datetime("yesterday")


def test_instant_is_a_datetime_or_a_duration_ago() -> None:
    now = datetime(2024, 7, 1, 12, tzinfo=UTC)
    assert parse_instant("PT6H", now) == datetime(2024, 7, 1, 6, tzinfo=UTC)
    assert parse_instant("2024-07-01T01:00:00Z", now) == datetime(2024, 7, 1, 1, tzinfo=UTC)


# -- reset plans --------------------------------------------------------------------------------

states_st = st.builds(
    lambda low, span, committed_at: PartitionState(
        "t", 0, low, low + span, None if committed_at is None else low + committed_at
    ),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.integers(-50, 10_050)),
)
modes_st = st.one_of(
    st.just(ResetMode("earliest")),
    st.just(ResetMode("latest")),
    st.builds(lambda v: ResetMode("offset", v), st.integers(-100, 30_000)),
    st.builds(lambda v: ResetMode("shift", v), st.integers(-30_000, 30_000)),
    st.builds(lambda v: ResetMode("datetime", v), st.integers(0, 1)),
)


@given(state=states_st, mode=modes_st, found=st.integers(-1, 30_000))
def test_new_offset_always_within_the_log(state: PartitionState, mode: ResetMode, found: int) -> None:
    try:
        [plan] = plan_reset([state], mode, {state.tp: found})
    except PlanError:
        assert mode.kind == "shift" and state.committed is None
        return
    assert state.low <= plan.new <= state.high
    if plan.current is not None:
        assert plan.replays == plan.current - plan.new
    if mode.kind == "earliest":
        assert plan.new == state.low
    if mode.kind == "latest":
        assert plan.new == state.high
    if mode.kind == "shift" and state.committed is not None:
        assert plan.new == min(max(state.committed + mode.value, state.low), state.high)
    if mode.kind == "datetime":
        assert plan.new == (state.high if found < 0 else min(max(found, state.low), state.high))
    if mode.kind == "offset" and plan.new != mode.value:
        assert "clamped" in plan.note


def test_shift_without_committed_offset_names_the_partitions() -> None:
    states = [PartitionState("orders", 0, 0, 10, 5), PartitionState("orders", 1, 0, 10, None)]
    with pytest.raises(PlanError, match=r"orders\[1\]"):
        plan_reset(states, ResetMode("shift", -3))


# -- replay mark --------------------------------------------------------------------------------


@given(
    other=st.sampled_from(["", f"{GUARD_MARK}:10 in a row", "something"]),
    below=st.one_of(st.none(), st.integers(0, 2**62)),
)
def test_replay_mark_round_trips_beside_other_metadata(other: str, below: int | None) -> None:
    meta = replay_mark.attach(other, below)
    assert replay_mark.split(meta) == (other, below)
    assert meta.startswith(other), "a guard mark stays first, where the worker looks for it"
    assert replay_mark.split(replay_mark.attach(meta, None)) == (other, None)


def test_damaged_replay_mark_is_dropped() -> None:
    assert replay_mark.split(replay_mark.PREFIX + "x12") == ("", None)


# -- rate limit and bounds ---------------------------------------------------------------------


def test_rate_limit_holds_the_long_run_rate() -> None:
    now = [0.0]
    rate = RateLimit(50, clock=lambda: now[0])
    taken = 0
    while now[0] < 10:
        n = rate.allowance()
        if n:
            take = min(n, 20)
            rate.spend(take)
            taken += take
        else:
            now[0] += rate.wait_s()
    assert 490 <= taken <= 511  # 50/s over 10 s, plus at most one token of start


def test_rate_limit_rejects_zero() -> None:
    with pytest.raises(ValueError):
        RateLimit(0)


def test_bounds_reached_by_record_or_position() -> None:
    bounds = RunBounds({("t", 0): 10, ("t", 1): 5})
    assert not bounds.beyond(("t", 0), 9)
    assert bounds.beyond(("t", 0), 10) and bounds.reached(("t", 0))
    assert not bounds.beyond(("other", 0), 10 ** 9), "unbounded partitions are not limited"
    assert bounds.open() == [("t", 1)]
    assert not bounds.reach(("t", 1), 4)
    assert bounds.reach(("t", 1), 5)  # e.g. the position after trailing transaction markers
    assert bounds.open() == []


# -- redrive counter in dead-letter headers -------------------------------------------------------


def test_redrive_count_survives_a_second_dead_letter() -> None:
    src = SourceRecord("in", 0, 7, None, b"k", b"v", [("trace", b"1")])
    first = build_headers(src, DeadLetter("transform", "MappingError", "bad", "x"))
    redriven = [h for h in first if h[0] != "capillary-aep.redrive-count"]
    redriven.append(("capillary-aep.redrive-count", b"2"))
    again = header_map(build_headers(SourceRecord("in", 0, 99, None, b"k", b"v", redriven),
                                     DeadLetter("transform", "MappingError", "bad", "x")))
    assert again["redrive-count"] == "2" and again["attempt"] == "2"
    assert "redrive-count" not in header_map(first)
