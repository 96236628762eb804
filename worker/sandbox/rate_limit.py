"""The sandbox's rate limit: a fixed accepted rate on the DCS endpoints, 429 above it.

AEP throttles an organisation past its request rate; the sandbox does the same with token
buckets on messages and/or requests per second (``FaultConfig.rate_limit_messages_per_s``,
``rate_limit_requests_per_s``, ``rate_limit_burst_s``; set in ``[faults]`` or with
``POST /sandbox/faults``). A request is admitted only when both buckets hold it whole (all its
messages, one request); otherwise it is answered 429 with ``Retry-After`` (whole seconds, at
least 1, as AEP sends) and takes nothing. Buckets start full (one burst).

Counters for tests (``GET /sandbox/rate-limit``): admitted requests and messages per
wall-clock second, throttled (429) requests and messages per second, and totals.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.aep.concurrency import TokenBucket

__all__ = ["RateLimitSettings", "SandboxRateLimit"]

_WINDOWS_KEPT = 900  # seconds of per-second counters


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    messages_per_s: float = 0.0  # 0: no limit
    requests_per_s: float = 0.0
    burst_s: float = 1.0

    @property
    def active(self) -> bool:
        return self.messages_per_s > 0 or self.requests_per_s > 0


@dataclass(slots=True)
class _Window:
    requests: int = 0
    messages: int = 0
    throttled_requests: int = 0
    throttled_messages: int = 0


@dataclass(slots=True)
class SandboxRateLimit:
    settings: RateLimitSettings = field(default_factory=RateLimitSettings)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _buckets: list[tuple[TokenBucket, bool]] = field(default_factory=list)  # (bucket, per message)
    _windows: OrderedDict[int, _Window] = field(default_factory=OrderedDict)
    _totals: _Window = field(default_factory=_Window)

    def __post_init__(self) -> None:
        self.configure(self.settings)

    def configure(self, settings: RateLimitSettings) -> None:
        """Install new limits: buckets start full, counters are kept (``clear`` resets them)."""
        self.settings = settings
        now = self.clock()
        self._buckets = []
        for rate, per_message in (
            (settings.messages_per_s, True), (settings.requests_per_s, False)
        ):
            if rate > 0:
                bucket = TokenBucket(rate, settings.burst_s, updated=now)
                bucket.tokens = bucket.capacity
                self._buckets.append((bucket, per_message))

    def clear(self) -> None:
        self._windows.clear()
        self._totals = _Window()
        self.configure(self.settings)

    def admit(self, messages: int) -> str | None:
        """None when a request of ``messages`` may be served; else the Retry-After value."""
        window = self._window()
        if self._buckets:
            now = self.clock()
            wait = 0.0
            for bucket, per_message in self._buckets:
                wait = max(wait, bucket.wait_s(messages if per_message else 1, now) or 0.0)
            if wait > 0:
                for w in (window, self._totals):
                    w.throttled_requests += 1
                    w.throttled_messages += messages
                return str(max(1, math.ceil(wait)))
            for bucket, per_message in self._buckets:
                bucket.take(messages if per_message else 1, now)
        for w in (window, self._totals):
            w.requests += 1
            w.messages += messages
        return None

    def _window(self) -> _Window:
        second = int(self.wall())
        found = self._windows.get(second)
        if found is None:
            found = self._windows[second] = _Window()
            while len(self._windows) > _WINDOWS_KEPT:
                self._windows.popitem(last=False)
        return found

    def snapshot(self) -> dict[str, Any]:
        s = self.settings
        t = self._totals
        return {
            "config": {
                "messages_per_s": s.messages_per_s, "requests_per_s": s.requests_per_s,
                "burst_s": s.burst_s,
            },
            "totals": {
                "requests": t.requests, "messages": t.messages,
                "throttled_requests": t.throttled_requests,
                "throttled_messages": t.throttled_messages,
            },
            "windows": [
                {"second": sec, "requests": w.requests, "messages": w.messages,
                 "throttled_requests": w.throttled_requests,
                 "throttled_messages": w.throttled_messages}
                for sec, w in self._windows.items()
            ],
        }
