"""Adaptive flow control toward AEP, pure logic: AIMD limits and a token bucket (no I/O, no clock).

``AimdLimit`` is the in-flight request limit. It grows additively (about +1 per window of
``limit`` quick successes, as TCP's congestion avoidance) while AEP answers 2xx quickly and the
limit is actually used, and shrinks multiplicatively (x ``decrease``) on a congestion signal: a
429, a 5xx, a timeout or connection failure, or a 2xx much slower than the moving baseline
latency. A burst of congestion answers from one moment counts once: only a request *sent after*
the last decrease can cause the next one (the "one decrease per round trip" rule of TCP).

``AimdRate`` is a ceiling on messages per second, set on throttling (429s at least
``min_share`` of the recent answers) to ``decrease`` x
the rate AEP was accepting then (x the ceiling itself when other trouble held the accepted rate
below half of it) and raised additively in between (``increase`` of that level per second). A 429
before anything was accepted sets none; the ceiling is dropped after ``forget_s`` without a
429. The in-flight limit alone cannot find a rate limit when answers take a few milliseconds
(one request in flight can already exceed it); the rate ceiling converges on it with one
throttling episode every few seconds instead of a storm of 429s.

``TokenBucket`` enforces a rate (messages or requests per second) with a burst of ``burst_s``
seconds of it. A take larger than the burst is allowed once the bucket is full, driving it into
debt, so the long-run rate holds whatever the batch size. A rate of 0 allows nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["AimdLimit", "AimdRate", "Signal", "TokenBucket"]


class Signal(StrEnum):
    SUCCESS = "success"  # a 2xx answer (latency decides whether it counts as quick)
    CONGESTION = "congestion"  # 429, 5xx, timeout, connection failure
    NEUTRAL = "neutral"  # says nothing about load (401/403/413/400, IMS trouble)


@dataclass(slots=True)
class AimdLimit:
    initial: int
    minimum: int
    maximum: int
    decrease: float = 0.7
    latency_tolerance: float = 2.0
    """A 2xx slower than tolerance x baseline (and than ``latency_floor_s``) is congestion."""
    latency_floor_s: float = 0.25
    """Never call an answer faster than this slow: millisecond jitter is not congestion."""
    baseline_alpha: float = 0.05
    value: float = field(init=False)
    baseline_s: float | None = field(default=None, init=False)
    last_decrease: float = field(default=-math.inf, init=False)
    decreases: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError("AimdLimit: need 1 <= minimum <= maximum")
        if not 0 < self.decrease < 1:
            raise ValueError("AimdLimit: decrease must be between 0 and 1")
        if self.latency_tolerance <= 1:
            raise ValueError("AimdLimit: latency_tolerance must be above 1")
        self.value = float(min(max(self.initial, self.minimum), self.maximum))

    @property
    def limit(self) -> int:
        return int(self.value)

    def sample(
        self, signal: Signal, *, sent_at: float, now: float, latency_s: float, in_flight: int
    ) -> None:
        """One answer: ``sent_at``/``now`` on one monotonic clock; ``in_flight`` counts this
        request (the requests outstanding when it was answered)."""
        if signal is Signal.NEUTRAL:
            return
        if signal is Signal.SUCCESS:
            base = self.baseline_s
            slow = (
                base is not None
                and latency_s > self.latency_floor_s
                and latency_s > self.latency_tolerance * base
            )
            # The baseline follows quick answers only, so a slow phase cannot drag it along.
            if not slow:
                self.baseline_s = (
                    latency_s if base is None else base + self.baseline_alpha * (latency_s - base)
                )
                # Grow only when the limit is in use: an idle limit says nothing about AEP.
                if in_flight * 2 >= self.limit:
                    self.value = min(float(self.maximum), self.value + 1.0 / self.value)
                return
        if sent_at < self.last_decrease:
            return  # sent before the last decrease: that episode was already counted
        self.value = max(float(self.minimum), self.value * self.decrease)
        self.last_decrease = now
        self.decreases += 1


@dataclass(slots=True)
class AimdRate:
    """A messages/s ceiling learned from throttling; ``None`` until the first 429."""

    minimum: float = 1.0
    decrease: float = 0.8
    increase: float = 0.05
    """Per second, as a share of the level set at the last decrease (additive)."""
    window_s: float = 2.0
    """The accepted rate at a 429 is measured over this past window."""
    forget_s: float = 30.0
    """No 429 for this long: the ceiling is dropped (demand may have been low when it was set)."""
    evidence_s: float = 5.0
    min_share: float = 0.05
    min_count: int = 3
    """A 429 lowers the ceiling only when 429s are at least ``min_count`` and ``min_share`` of
    the answers (2xx and 429) over the past ``evidence_s``: a rate limit refuses what goes
    over it, while a few scattered 429s (a proxy, a brief hiccup) are no limit to learn, and
    cutting on each would spiral the rate down as random loss does TCP's."""
    value: float | None = field(default=None, init=False)
    last_decrease: float = field(default=-math.inf, init=False)
    _step: float = field(default=0.0, init=False)
    _last_growth: float = field(default=0.0, init=False)
    _accepted: deque[tuple[float, int]] = field(default_factory=deque, init=False)
    _accepted_sum: int = field(default=0, init=False)
    _started: float | None = field(default=None, init=False)
    _answers: deque[tuple[float, bool]] = field(default_factory=deque, init=False)
    _answers_429: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.minimum <= 0 or not 0 < self.decrease < 1 or self.increase <= 0:
            raise ValueError("AimdRate: need minimum > 0, 0 < decrease < 1, increase > 0")
        if not 0 <= self.min_share <= 1 or self.evidence_s <= 0:
            raise ValueError("AimdRate: need 0 <= min_share <= 1 and evidence_s > 0")

    def _answer(self, now: float, throttled: bool) -> None:
        answers = self._answers
        answers.append((now, throttled))
        self._answers_429 += throttled
        horizon = now - self.evidence_s
        while answers and answers[0][0] < horizon:
            self._answers_429 -= answers.popleft()[1]

    def throttled_share(self) -> float:
        """429s among the answers of the past ``evidence_s`` (as of the last answer)."""
        return self._answers_429 / len(self._answers) if self._answers else 0.0

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._accepted and self._accepted[0][0] < horizon:
            self._accepted_sum -= self._accepted.popleft()[1]

    def accepted_rate(self, now: float) -> float:
        """Messages/s accepted over the window (over the time since the first acceptance,
        at least a quarter second, while that is shorter: a start-up burst is not diluted)."""
        self._trim(now)
        if self._started is None:
            return 0.0
        return self._accepted_sum / min(self.window_s, max(now - self._started, 0.25))

    def accepted(self, n: int, now: float) -> None:
        """``n`` messages answered 2xx: remember them and grow the ceiling additively."""
        if n > 0:
            if self._started is None:
                self._started = now
            self._accepted.append((now, n))
            self._accepted_sum += n
            self._answer(now, False)
        self._trim(now)
        if self.value is not None and now - self.last_decrease > self.forget_s:
            self.value = None
        if self.value is not None:
            dt = min(max(now - self._last_growth, 0.0), 1.0)
            self.value += self._step * dt
            self._last_growth = now

    def throttled(self, *, sent_at: float, now: float, ceiling: float | None = None) -> bool:
        """A 429 for a request sent at ``sent_at``; True when the ceiling went down.
        ``ceiling`` is the rate enforced anyway (the budget share), if any."""
        self._answer(now, True)
        if (
            sent_at < self.last_decrease
            or self._answers_429 < self.min_count
            or self.throttled_share() < self.min_share
        ):
            return False
        measured = self.accepted_rate(now)
        if self.value is None:
            if measured <= 0:
                return False  # nothing accepted to learn from: Retry-After and the limit act
            level = measured  # the first: what AEP was taking
        elif measured >= 0.5 * self.value:
            level = min(self.value, measured)  # sending near the ceiling: AEP took that much
        else:
            # Held far below the ceiling by other trouble (5xx, timeouts): cut the ceiling, not
            # down to that rate, which would feed on itself.
            level = self.value
        if ceiling is not None:
            level = min(level, ceiling)
        self.value = max(self.minimum, level * self.decrease)
        self._step = max(self.value * self.increase, self.minimum * self.increase)
        self.last_decrease = self._last_growth = now
        return True

    def cap(self, upper: float) -> None:
        """Forget the ceiling once it has grown past ``upper`` (it no longer limits)."""
        if self.value is not None and self.value > upper:
            self.value = None


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst_s: float = 1.0
    tokens: float = 0.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst_s <= 0:
            raise ValueError("TokenBucket: need rate >= 0 and burst_s > 0")

    @property
    def capacity(self) -> float:
        return max(self.rate * self.burst_s, 1.0) if self.rate > 0 else 0.0

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def set_rate(self, rate: float, now: float) -> None:
        if rate < 0:
            raise ValueError("TokenBucket: rate must be >= 0")
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, self.capacity)

    def wait_s(self, n: int, now: float) -> float | None:
        """Seconds until ``n`` may be taken (0: now); None while the rate is 0."""
        self._refill(now)
        need = min(float(n), self.capacity)
        if self.tokens + 1e-9 >= need and self.rate > 0:
            return 0.0
        if self.rate <= 0:
            return None
        return (need - self.tokens) / self.rate

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n
