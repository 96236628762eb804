"""Adaptive concurrency (AIMD), the learned rate ceiling, token buckets and the flow gate."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.aep.concurrency import AimdLimit, AimdRate, Signal, TokenBucket
from worker.aep.flow import FlowControl, share_of

# One answer: (signal, latency in seconds, requests in flight when it came back).
answers = st.lists(
    st.tuples(
        st.sampled_from([Signal.SUCCESS, Signal.CONGESTION, Signal.NEUTRAL]),
        st.floats(min_value=0.0, max_value=30.0),
        st.integers(min_value=0, max_value=300),
    ),
    max_size=300,
)


@given(
    lo=st.integers(1, 20), span=st.integers(0, 100), start=st.integers(1, 150), seq=answers,
)
def test_limit_always_within_bounds(lo: int, span: int, start: int, seq: list) -> None:
    hi = lo + span
    aimd = AimdLimit(start, lo, hi)
    assert lo <= aimd.limit <= hi
    now = 0.0
    for signal, latency, in_flight in seq:
        now += 0.01
        aimd.sample(signal, sent_at=now - latency, now=now, latency_s=latency, in_flight=in_flight)
        assert lo <= aimd.limit <= hi


@given(start=st.integers(2, 64), cause_latency=st.floats(0.0, 5.0))
def test_congestion_decreases(start: int, cause_latency: float) -> None:
    aimd = AimdLimit(start, 1, 64)
    before = aimd.value
    aimd.sample(Signal.CONGESTION, sent_at=10.0, now=10.0 + cause_latency,
                latency_s=cause_latency, in_flight=start)
    assert aimd.value < before
    assert aimd.value == pytest.approx(max(1.0, before * aimd.decrease))


def test_a_burst_of_congestion_from_one_moment_counts_once() -> None:
    aimd = AimdLimit(20, 1, 64)
    # Ten requests sent together, all answered 429 a moment later.
    for i in range(10):
        aimd.sample(Signal.CONGESTION, sent_at=1.0, now=1.05 + i * 0.001, latency_s=0.05,
                    in_flight=10 - i)
    assert aimd.decreases == 1
    assert aimd.limit == 14
    # A request sent after that decrease may decrease again.
    aimd.sample(Signal.CONGESTION, sent_at=1.2, now=1.25, latency_s=0.05, in_flight=5)
    assert aimd.decreases == 2


@given(start=st.integers(1, 30), n=st.integers(1, 200))
def test_quick_successes_grow_additively(start: int, n: int) -> None:
    aimd = AimdLimit(start, 1, 1000)
    before = aimd.value
    for i in range(n):
        aimd.sample(Signal.SUCCESS, sent_at=i, now=i + 0.01, latency_s=0.01, in_flight=aimd.limit)
    assert aimd.value > before
    # Additive: at most +1 per answer, about +1 per `limit` answers.
    assert aimd.value <= before + n / before + 1e-9


def test_an_idle_limit_does_not_grow() -> None:
    aimd = AimdLimit(10, 1, 64)
    for i in range(100):
        aimd.sample(Signal.SUCCESS, sent_at=i, now=i + 0.01, latency_s=0.01, in_flight=1)
    assert aimd.limit == 10


def test_rising_latency_is_congestion() -> None:
    aimd = AimdLimit(10, 1, 64)
    for i in range(50):
        aimd.sample(Signal.SUCCESS, sent_at=i, now=i + 0.2, latency_s=0.2, in_flight=10)
    grown = aimd.value
    # Five times the baseline, above the floor: shrink, and the baseline stays quick.
    aimd.sample(Signal.SUCCESS, sent_at=100.0, now=101.0, latency_s=1.0, in_flight=10)
    assert aimd.value == pytest.approx(grown * aimd.decrease)
    assert aimd.baseline_s is not None and aimd.baseline_s < 0.25
    # Millisecond answers never count as slow, whatever the ratio.
    quick = AimdLimit(10, 1, 64)
    for i in range(20):
        quick.sample(Signal.SUCCESS, sent_at=i, now=i + 0.001, latency_s=0.001, in_flight=10)
    v = quick.value
    quick.sample(Signal.SUCCESS, sent_at=30.0, now=30.2, latency_s=0.2, in_flight=10)
    assert quick.value > v


def test_aimd_limit_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        AimdLimit(4, 5, 3)
    with pytest.raises(ValueError):
        AimdLimit(4, 1, 8, decrease=1.0)


def test_rate_ceiling_learns_from_throttling_and_grows_back() -> None:
    rate = AimdRate(window_s=2.0, min_share=0.0, min_count=1)
    now = 0.0
    for _ in range(20):  # 100 messages every 0.1 s: 1,000/s accepted
        now += 0.1
        rate.accepted(100, now)
    assert rate.value is None
    assert rate.throttled(sent_at=now, now=now)
    assert rate.value == pytest.approx(1000 * rate.decrease, rel=0.06)
    low = rate.value
    # Other 429s of that moment do not lower it again.
    assert not rate.throttled(sent_at=now - 0.01, now=now + 0.01)
    assert rate.value == low
    for _ in range(10):  # one second of successes: + increase x level
        now += 0.1
        rate.accepted(50, now)
    assert rate.value == pytest.approx(low * (1 + rate.increase), rel=0.01)
    rate.cap(low)  # past the enforced share: forgotten
    assert rate.value is None


def test_rate_ceiling_needs_acceptances_and_is_forgotten_when_quiet() -> None:
    rate = AimdRate(window_s=2.0, forget_s=30.0, min_share=0.0, min_count=1)
    # 429s before anything was accepted say nothing about the rate AEP takes.
    assert not rate.throttled(sent_at=0.0, now=0.1)
    assert rate.value is None
    rate.accepted(100, 1.0)
    assert rate.throttled(sent_at=1.0, now=1.1)
    assert rate.value is not None
    rate.accepted(10, 20.0)
    assert rate.value is not None
    rate.accepted(10, 31.2)  # over 30 s without a 429
    assert rate.value is None


def test_rate_ceiling_is_cut_from_itself_when_other_trouble_held_the_rate_down() -> None:
    rate = AimdRate(window_s=2.0, min_share=0.0, min_count=1)
    for i in range(20):
        rate.accepted(50, 0.1 * i)  # 500/s
    assert rate.throttled(sent_at=2.0, now=2.0)
    ceiling = rate.value
    assert ceiling is not None
    rate.accepted(10, 5.0)  # 5xx and timeouts: hardly anything accepted lately
    assert rate.throttled(sent_at=5.0, now=5.0)
    # Not down to the ~5/s accepted (that would feed on itself): x decrease of the ceiling.
    # (one second of growth counted: 2 s to 5 s, capped at 1 s per update)
    assert rate.value == pytest.approx(ceiling * (1 + rate.increase) * rate.decrease, rel=1e-6)


def test_scattered_429s_are_no_limit_to_learn() -> None:
    """3% of answers throttled at random (no rate limit behind them): the ceiling stays unset;
    a limit refusing a fifth of the requests sets it at the first 429 of that burst."""
    rate = AimdRate(evidence_s=5.0, min_share=0.05)
    now = 0.0
    for i in range(1000):  # 50 answers/s of 20 messages, every 33rd a 429
        now += 0.02
        if i % 33 == 32:
            assert not rate.throttled(sent_at=now - 0.01, now=now)
        else:
            rate.accepted(20, now)
    assert rate.value is None
    assert rate.throttled_share() < 0.05
    for i in range(40):  # over the limit: every 5th request refused
        now += 0.02
        if i % 5 == 4:
            rate.throttled(sent_at=now - 0.01, now=now)
        else:
            rate.accepted(20, now)
    assert rate.value is not None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 500), st.floats(0.0, 2.0)), max_size=200))
def test_rate_ceiling_never_below_its_floor(seq: list) -> None:
    rate = AimdRate(minimum=5.0)
    now = 0.0
    for throttled, n, dt in seq:
        now += dt
        if throttled:
            rate.throttled(sent_at=now, now=now, ceiling=100.0)
        else:
            rate.accepted(n, now)
        assert rate.value is None or rate.value >= 5.0


@given(
    rate=st.floats(1.0, 5000.0), burst=st.floats(0.1, 3.0),
    takes=st.lists(st.tuples(st.integers(1, 800), st.floats(0.0, 1.0)), min_size=1, max_size=80),
)
def test_bucket_long_run_rate_holds(rate: float, burst: float, takes: list) -> None:
    """Taking only when allowed never exceeds rate x elapsed + one burst + one take."""
    bucket = TokenBucket(rate, burst)
    now = taken = 0.0
    for n, dt in takes:
        now += dt
        wait = bucket.wait_s(n, now)
        assert wait is not None
        now += wait
        assert bucket.wait_s(n, now) == 0.0
        bucket.take(n, now)
        taken += n
        assert taken <= rate * now + bucket.capacity + n + 1e-6


def test_bucket_with_rate_zero_allows_nothing() -> None:
    bucket = TokenBucket(0.0)
    assert bucket.wait_s(1, 100.0) is None
    bucket.set_rate(10.0, 100.0)
    assert bucket.wait_s(1, 100.0) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("assigned", "total", "share"), [(0, 6, 0.0), (6, 6, 1.0), (2, 6, 1 / 3), (3, 6, 0.5),
                                     (1, 0, 0.0), (8, 6, 1.0)],
)
def test_share_of(assigned: int, total: int, share: float) -> None:
    assert share_of(assigned, total) == pytest.approx(share)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_gate_caps_in_flight_and_serves_in_order() -> None:
    flow = FlowControl(concurrency=2, min_concurrency=1, max_concurrency=2)
    first = await flow.acquire(10)
    second = await flow.acquire(10)
    order: list[str] = []

    async def wait(name: str) -> None:
        permit = await flow.acquire(1)
        order.append(name)
        flow.done(permit, Signal.NEUTRAL)

    waiters = [asyncio.create_task(wait(n)) for n in ("a", "b")]
    await asyncio.sleep(0.01)
    assert flow.in_flight == 2 and flow.waiting == 2 and not order
    # A raw request (not gated) does not wait for a batch slot.
    raw = await asyncio.wait_for(flow.acquire(1, gated=False), 1)
    flow.done(raw, Signal.SUCCESS, accepted=1)
    flow.done(first, Signal.NEUTRAL)
    flow.done(second, Signal.NEUTRAL)
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert order == ["a", "b"] and flow.in_flight == 0


async def test_zero_share_sends_nothing_until_partitions_come() -> None:
    flow = FlowControl(concurrency=4, messages_per_s=600.0, requests_per_s=60.0, burst_s=1.0)
    task = asyncio.create_task(flow.acquire(5))
    await asyncio.sleep(0.05)
    assert not task.done()  # no partitions: no share
    assert flow.set_share(3, 6)
    assert flow.share_messages_per_s == pytest.approx(300.0)
    assert flow.share_requests_per_s == pytest.approx(30.0)
    permit = await asyncio.wait_for(task, 2)
    flow.done(permit, Signal.SUCCESS, accepted=5)
    assert not flow.set_share(3, 6)  # unchanged: no log, no change
    flow.set_share(0, 6)
    blocked = asyncio.create_task(flow.acquire(1))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert flow.waiting == 0


async def test_gate_paces_to_the_share() -> None:
    clock = FakeClock()
    flow = FlowControl(
        concurrency=8, messages_per_s=100.0, requests_per_s=1000.0, burst_s=1.0, clock=clock,
    )
    flow.set_share(1, 1)
    clock.now += 1.0  # a full bucket: 100 messages
    p = await flow.acquire(100)
    flow.done(p, Signal.NEUTRAL)
    task = asyncio.create_task(flow.acquire(50))
    await asyncio.sleep(0.01)
    assert not task.done()  # the bucket is empty: 0.5 s to wait
    clock.now += 0.5
    flow._grant()
    flow.done(await asyncio.wait_for(task, 1), Signal.NEUTRAL)


async def test_throttling_lowers_the_enforced_rate_and_the_limit() -> None:
    clock = FakeClock()
    flow = FlowControl(concurrency=8, messages_per_s=10_000.0, requests_per_s=1000.0, clock=clock)
    flow.set_share(1, 1)
    clock.now += 1.0
    for _ in range(10):  # the 429s below are then 3 in 13 answers: a limit, not noise
        clock.now += 0.1
        p = await flow.acquire(30)
        clock.now += 0.01
        flow.done(p, Signal.SUCCESS, accepted=30)
    assert flow.messages_rate == pytest.approx(10_000.0)
    limit = flow.limit
    permits = [await flow.acquire(30) for _ in range(3)]
    clock.now += 0.01
    for p in permits:
        flow.done(p, Signal.CONGESTION, throttled=True)
    assert flow.limit < limit
    assert flow.messages_rate is not None and flow.messages_rate < 400  # ~300/s accepted
    assert flow.throttled == 3


async def test_fixed_concurrency_when_not_adaptive() -> None:
    flow = FlowControl(concurrency=3, min_concurrency=1, max_concurrency=9, adaptive=False)
    p = await flow.acquire(1)
    flow.done(p, Signal.CONGESTION, throttled=True)
    assert flow.limit == 3 and flow.rate is None


CONFIG = """
[kafka]
topics = ["in"]
[aep]
org_id = "X@AdobeOrg"
client_id = "cid"
client_secret = "s3cr3t-value"
[[routes]]
name = "events"
family = "experience_event"
inlet_url = "https://dcs.adobedc.net/collection/abc"
dataset_id = "ds"
schema_id = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
flow_id = "f"
"""


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ("[rate_budget]\nmessages_per_s = 500\nreserved_messages_per_s = 500\n",
         "rate_budget.reserved_messages_per_s"),
        ("[rate_budget]\nrequests_per_s = 10\nreserved_requests_per_s = 20\n",
         "rate_budget.reserved_requests_per_s"),
        ("[rate_budget]\nmessages_per_s = 0\n", "rate_budget.messages_per_s"),
        ("[delivery]\nconcurrency = 40\n", "delivery.max_concurrency"),
        ("[delivery]\nconcurrency = 2\nmin_concurrency = 3\n", "delivery.min_concurrency"),
    ],
)
def test_bad_flow_settings_name_the_setting(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, extra: str, names: str
) -> None:
    from worker.config import ConfigError, load_settings

    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)
    path = tmp_path / "worker.toml"
    path.write_text(CONFIG + extra)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert names in str(info.value)


def test_flow_defaults_share_the_budget_less_the_reserve(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.config import load_settings

    for key in list(os.environ):
        if key.startswith("CAPILLARY_AEP_"):
            monkeypatch.delenv(key)
    path = tmp_path / "worker.toml"
    path.write_text(CONFIG)
    s = load_settings(path)
    assert s.delivery.adaptive and s.delivery.min_concurrency <= s.delivery.concurrency
    b = s.rate_budget
    assert (b.messages_per_s, b.requests_per_s) == (8000, 800)  # below AEP's 10,000 / 1,000
    assert (b.shared_messages_per_s, b.shared_requests_per_s) == (7500, 750)
