"""A token bucket for consuming at an explicit rate (side replays, redrives); clock injected.

Records are paid for after they are consumed (``spend``); the bucket may go into debt by one
batch, and the next ``allowance`` waits the debt off, so the long-run rate holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_EPSILON = 1e-9  # float refills land a hair under a whole token; count that as whole


class RateLimit:
    __slots__ = ("_burst", "_clock", "_last", "_tokens", "per_second")

    def __init__(
        self, per_second: float, *, burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0:
            raise ValueError("rate must be above zero")
        self.per_second = per_second
        self._burst = max(per_second * burst_s, 1.0)
        self._clock = clock
        self._last = clock()
        self._tokens = min(self._burst, 1.0)  # no burst at start: the first second is paced too

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.per_second)
        self._last = now

    def allowance(self) -> int:
        """Whole records that may be taken now (0: wait ``wait_s`` first)."""
        self._refill()
        return int(self._tokens + _EPSILON) if self._tokens + _EPSILON >= 1 else 0

    def wait_s(self) -> float:
        """Seconds until at least one record may be taken."""
        self._refill()
        return 0.0 if self._tokens + _EPSILON >= 1 else (1 - self._tokens) / self.per_second

    def spend(self, n: int) -> None:
        self._refill()
        self._tokens -= n
