"""Flow control toward AEP: every request (first send or retry) waits here for its turn.

A request may start when (1) for batch requests, fewer than the adaptive in-flight limit are
outstanding (raw single-message requests keep the pipeline's own fixed cap), and (2) the token
buckets of this process's share of the organisation's rate budget hold its messages and one
request. Waiters are served first come, first served for tokens, so a big batch is not starved
by a stream of small requests. The pure parts (AIMD, buckets) are in ``worker.aep.concurrency``.

The share: the replicas of one consumer group share (budget - reserved) in proportion to the
input partitions each is assigned out of the subscribed topics' total, re-read at every
rebalance (``set_share``). A replica with no partitions sends nothing. A side job (side replay)
runs under a fixed budget of its own instead (``FlowControl(shared=False)``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.aep.concurrency import AimdLimit, AimdRate, Signal, TokenBucket
from worker.logs import fresh_logger

__all__ = ["FlowControl", "Permit", "share_of"]


_log = fresh_logger("worker.aep.flow")


def share_of(assigned: int, total: int) -> float:
    """This replica's share of the budget (0 without partitions or without a known total)."""
    if assigned <= 0 or total <= 0:
        return 0.0
    return min(1.0, assigned / total)


@dataclass(slots=True)
class Permit:
    """One request allowed to start; hand it back to ``FlowControl.done``."""

    sent_at: float
    n: int
    gated: bool
    released: bool = False


@dataclass(slots=True)
class _Waiter:
    n: int
    gated: bool
    fut: asyncio.Future[float] = field(repr=False)


class FlowControl:
    def __init__(
        self,
        *,
        concurrency: int,
        min_concurrency: int = 1,
        max_concurrency: int = 256,
        adaptive: bool = True,
        messages_per_s: float | None = None,
        requests_per_s: float | None = None,
        burst_s: float = 1.0,
        shared: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[FlowControl], None] | None = None,
    ) -> None:
        """``messages_per_s``/``requests_per_s``: the budget (for a shared budget, what all
        replicas share; the share is 0 until ``set_share``); None: no rate limit."""
        self.adaptive = adaptive
        self.aimd = AimdLimit(
            concurrency,
            min_concurrency if adaptive else concurrency,
            max_concurrency if adaptive else concurrency,
        )
        self.rate = AimdRate() if adaptive else None
        self.shared = shared
        self.budget_messages = messages_per_s
        self.budget_requests = requests_per_s
        self.share = 0.0 if shared else 1.0
        self.assigned = 0
        self.total = 0
        self._clock = clock
        self._on_change = on_change
        now = clock()
        self._burst_s = burst_s
        self._messages = (
            None if messages_per_s is None
            else TokenBucket(messages_per_s * self.share, burst_s, updated=now)
        )
        self._requests = (
            None if requests_per_s is None
            else TokenBucket(requests_per_s * self.share, burst_s, updated=now)
        )
        self._line: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.throttled = 0  # 429 answers seen (the rate ceiling's input)

    # -- what the metrics read ---------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self.aimd.limit

    @property
    def messages_rate(self) -> float | None:
        """The messages/s enforced now (the share, or the learned ceiling if lower)."""
        return None if self._messages is None else self._messages.rate

    @property
    def share_messages_per_s(self) -> float | None:
        return None if self.budget_messages is None else self.budget_messages * self.share

    @property
    def share_requests_per_s(self) -> float | None:
        return None if self.budget_requests is None else self.budget_requests * self.share

    @property
    def waiting(self) -> int:
        return len(self._line)

    # -- the share -------------------------------------------------------------------------

    def set_share(self, assigned: int, total: int) -> bool:
        """Partitions assigned here out of the subscribed topics' total; True if it changed."""
        if not self.shared:
            return False
        share = share_of(assigned, total)
        changed = (share, assigned, total) != (self.share, self.assigned, self.total)
        self.share, self.assigned, self.total = share, assigned, total
        if not changed:
            return False
        self._apply_rates()
        _log().info(
            "rate_share", share=round(share, 4), assigned=assigned, total=total,
            messages_per_s=None if self.budget_messages is None
            else round(self.budget_messages * share, 1),
            requests_per_s=None if self.budget_requests is None
            else round(self.budget_requests * share, 2),
        )
        self._changed()
        self._grant()
        return True

    def _message_rate(self) -> float:
        share = self.share_messages_per_s
        learned = self.rate.value if self.rate is not None else None
        if share is None:
            return learned if learned is not None else float("inf")
        return share if learned is None else min(share, learned)

    def _apply_rates(self) -> None:
        now = self._clock()
        share = self.share_messages_per_s
        if self.rate is not None and share is not None:
            self.rate.cap(max(share, self.rate.minimum))
        rate = self._message_rate()
        if rate == float("inf"):
            self._messages = None  # no budget, nothing learned (or forgotten) yet
        elif self._messages is None:
            self._messages = TokenBucket(rate, self._burst_s, updated=now)
        else:
            self._messages.set_rate(rate, now)
        if self._requests is not None:
            self._requests.set_rate(self.share_requests_per_s or 0.0, now)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    # -- permits -----------------------------------------------------------------------------

    async def acquire(self, n: int, *, gated: bool = True) -> Permit:
        """Wait until a request of ``n`` messages may start. Cancellation-safe."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(n, gated, fut)
        self._line.append(waiter)
        self._grant()
        try:
            sent_at = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled
                if gated:
                    self.in_flight -= 1
            else:
                self._line.remove(waiter)
            self._grant()
            raise
        return Permit(sent_at, n, gated)

    def done(
        self, permit: Permit, signal: Signal, *, accepted: int = 0, throttled: bool = False
    ) -> None:
        """The answer to ``permit``'s request: SUCCESS (2xx; ``accepted`` messages taken),
        CONGESTION (``throttled`` for a 429) or NEUTRAL."""
        if permit.released:
            return
        permit.released = True
        now = self._clock()
        in_flight = self.in_flight
        if permit.gated:
            self.in_flight -= 1
        before = self.aimd.limit
        moved = throttled
        if permit.gated:
            self.aimd.sample(
                signal, sent_at=permit.sent_at, now=now, latency_s=now - permit.sent_at,
                in_flight=in_flight,
            )
        rate = self.rate
        if rate is not None:
            old = rate.value
            if accepted:
                rate.accepted(accepted, now)
            if throttled:
                self.throttled += 1
                if rate.throttled(
                    sent_at=permit.sent_at, now=now, ceiling=self.share_messages_per_s
                ):
                    _log().info(
                        "rate_ceiling_lowered", messages_per_s=round(rate.value or 0.0, 1),
                        limit=self.aimd.limit,
                    )
            if rate.value != old:
                self._apply_rates()
                moved = True  # the enforced rate: export it
        if moved or self.aimd.limit != before:
            self._changed()
        self._grant()

    # -- the scheduler -------------------------------------------------------------------------

    def _grant(self) -> None:
        """Start every waiter that may go now, in order; wake up later for the next one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._line:
            return
        now = self._clock()
        for waiter in list(self._line):
            if waiter.fut.done():  # cancelled: acquire() removes it
                continue
            if waiter.gated and self.in_flight >= self.aimd.limit:
                continue  # waits for a slot; raw requests behind it may still go
            wait = self._wait_s(waiter.n, now)
            if wait is None:
                return  # no share: nothing goes until the next rebalance
            if wait > 0:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(wait, self._grant)
                return  # first come, first served for tokens
            self._line.remove(waiter)
            for bucket, amount in ((self._messages, waiter.n), (self._requests, 1)):
                if bucket is not None:
                    bucket.take(amount, now)
            if waiter.gated:
                self.in_flight += 1
            waiter.fut.set_result(now)

    def _wait_s(self, n: int, now: float) -> float | None:
        wait = 0.0
        for bucket, amount in ((self._messages, n), (self._requests, 1)):
            if bucket is None:
                continue
            w = bucket.wait_s(amount, now)
            if w is None:
                return None
            wait = max(wait, w)
        return wait
