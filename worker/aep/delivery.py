"""Deliver one batch to a DCS inlet until every message is accepted or permanently rejected.

`Deliverer.deliver(url, batch)` returns only when each item of the batch has been reported
exactly once, to `sink.accepted` or to `sink.rejected`. It never raises (except
`CancelledError`; items not yet reported then stay unreported, so the caller does not commit
them). Transient trouble never turns into a rejection: it waits, backs off or blocks.

Work is a depth-first stack of *units* (a batch or a sub-batch with its retry counters). Each
step pops a unit, sleeps its delay, sends it, classifies the answer and pushes what is left:

- 2xx results: accepted and per-message-rejected items are reported; per-message retryable
  items go back as a subset after backoff; per-message 500s as a subset on the 500 path.
- 413: split in halves (a single message: rejected, reason `too-large`).
- 429/502/503/504/timeouts/connection errors/IMS down: jittered exponential backoff, or the
  server's Retry-After (capped); unlimited unless `max_retries` is set, and then exhausting it
  *blocks* (keeps probing) rather than rejecting.
- 500 (request or per message): retried `server_error_retries` times, then split in halves to
  isolate the message. A single message still getting 500 is rejected (reason
  `server-error`) only when the inlet is demonstrably working for other messages: some
  request to the same inlet got a 2xx with an accepted message after this delivery's first
  500 (a batch-mate in the same 207 counts). Without that evidence every message fails
  alone, which is an outage: the deliverer blocks and probes with that message every
  `blocked_probe_interval`, rejecting it only once evidence appears. Depth-first order
  means an outage costs about log2(n) * (server_error_retries + 1) requests before blocking.
- 400/404 (and other 4xx/3xx) at request level, IMS configuration errors: blocked; probe the
  same unit every `blocked_probe_interval`; never rejected.
- 401/403: the client has dropped the token; retry once immediately with a fresh one; if it
  persists, blocked and probe (each probe fetches a new token).

Blocking: `sink.blocked(reason)` when the first delivery of this Deliverer becomes blocked,
`sink.blocked(None)` when the last blocked one recovers (a 2xx that accepted or rejected
something, or a 413), finishes or is cancelled. So the sink sees strictly alternating calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from worker.aep.client import inlet_id
from worker.aep.concurrency import Signal
from worker.aep.flow import FlowControl, Permit
from worker.aep.responses import DcsResponse, ItemKind, Kind, Outcome, Transport, classify
from worker.batching import Batch
from worker.logs import fresh_logger

__all__ = [
    "DcsTransport",
    "Deliverer",
    "DeliveryPolicy",
    "DeliverySink",
    "InletHealth",
]


_log = fresh_logger("worker.aep.delivery")


T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class DeliverySink(Protocol[T_contra]):
    def accepted(self, item: T_contra, xaction_id: str | None, batch_id: str | None) -> None:
        """AEP received the message (commit it); ``batch_id``: the 207's batchId (None for
        the single-message endpoint)."""

    def rejected(
        self, item: T_contra, status: int | None, reason: str, batch_id: str | None
    ) -> None:
        """Permanently refused: the caller dead-letters it (stage "deliver")."""

    def blocked(self, reason: str | None) -> None:
        """A config/outage/auth condition began (reason) or ended (None)."""

    def retrying(self, cause: str, delay: float) -> None:
        """About to wait `delay` seconds before resending (metrics hook)."""


class DcsTransport(Protocol):
    """What the deliverer needs from `DcsClient`."""

    async def post_batch(
        self,
        url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse: ...


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_retries: int | None = None
    """Consecutive retryable failures of one (sub-)batch before it counts as an outage and
    blocks (probing continues; nothing is rejected). None: back off forever, never block."""
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_after_cap: float = 300.0
    server_error_retries: int = 3
    """Retries of a (sub-)batch answered 500 before splitting it."""
    blocked_probe_interval: float = 30.0
    request_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("max_retries", self.max_retries is None or self.max_retries >= 0),
                ("base_delay", self.base_delay >= 0),
                ("max_delay", self.max_delay >= 0),
                ("retry_after_cap", self.retry_after_cap >= 0),
                ("server_error_retries", self.server_error_retries >= 0),
                ("blocked_probe_interval", self.blocked_probe_interval > 0),
                ("request_timeout", self.request_timeout is None or self.request_timeout > 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"DeliveryPolicy: invalid {', '.join(problems)}")

    @classmethod
    def from_settings(cls, s: Any) -> DeliveryPolicy:
        """From `worker.config.DeliverySettings` (duck-typed: this module does not import it)."""
        return cls(
            max_retries=s.max_retries,
            base_delay=s.base_delay_s,
            max_delay=s.max_delay_s,
            retry_after_cap=s.retry_after_cap_s,
            server_error_retries=s.server_error_retries,
            blocked_probe_interval=s.blocked_probe_interval_s,
            request_timeout=s.request_timeout_s,
        )

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Full-jitter exponential backoff (as `backoff.expo` + `backoff.full_jitter`)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempt - 1))
        return float(rng() * cap)


@dataclass(slots=True)
class InletHealth:
    """Per inlet URL: how many responses accepted at least one message (the 500 evidence).

    Share one between Deliverers of a process so every delivery's success counts.
    """

    successes: dict[str, int] = field(default_factory=dict)

    def record_success(self, url: str) -> None:
        self.successes[url] = self.successes.get(url, 0) + 1

    def mark(self, url: str) -> int:
        return self.successes.get(url, 0)


class _Unit(Generic[T]):
    # Not a dataclass: mypyc cannot compile a generic slotted one (mypyc#827).
    __slots__ = ("attempts", "auth_retried", "batch", "cause", "delay", "server_errors")

    def __init__(
        self, batch: Batch[T], delay: float = 0.0, cause: str = "", attempts: int = 0,
        server_errors: int = 0, auth_retried: bool = False,
    ) -> None:
        self.batch = batch
        self.delay = delay
        self.cause = cause
        self.attempts = attempts  # consecutive retryable failures
        self.server_errors = server_errors  # 500s answered to this (sub-)batch
        self.auth_retried = auth_retried


@dataclass(slots=True)
class _Delivery:
    url: str
    inlet: str
    headers: Mapping[str, str] | None
    authenticated: bool | None
    gated: bool = True  # counts against the adaptive in-flight limit (raw requests: no)
    blocked: bool = False
    blocked_reason: str | None = None
    first_500_mark: int | None = None


class Deliverer(Generic[T]):
    def __init__(
        self,
        client: DcsTransport,
        policy: DeliveryPolicy,
        sink: DeliverySink[T],
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        health: InletHealth | None = None,
        flow: FlowControl | None = None,
    ) -> None:
        self.client = client
        # Every request (first send or retry) waits for its permit: adaptive in-flight limit
        # and this replica's share of the organisation's rate budget (worker.aep.flow).
        self.flow = flow
        self.policy = policy
        self.sink = sink
        self._sleep = sleep
        self._rng = rng
        self.health = health if health is not None else InletHealth()
        self._blocked = 0
        # Counters (plain attributes; metrics read them).
        self.requests = 0
        self.retries = 0
        self.splits = 0
        self.accepted_count = 0
        self.rejected_count = 0

    @property
    def blocked_deliveries(self) -> int:
        return self._blocked

    async def deliver(
        self,
        url: str,
        batch: Batch[T],
        headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        gated: bool = True,
    ) -> None:
        if not batch.items:
            return
        try:
            inlet = inlet_id(url)
        except ValueError:
            inlet = url
        d = _Delivery(url, inlet, headers, authenticated, gated)
        stack: list[_Unit[T]] = [_Unit(batch)]
        try:
            while stack:
                await self._step(d, stack.pop(), stack)
        finally:
            self._unblock(d)

    # -- one attempt ---------------------------------------------------------------------------

    async def _step(self, d: _Delivery, unit: _Unit[T], stack: list[_Unit[T]]) -> None:
        if unit.delay > 0:
            self.sink.retrying(unit.cause, unit.delay)
            await self._sleep(unit.delay)
        n = len(unit.batch.items)
        outcome = await self._send(d, unit.batch)
        k = outcome.kind
        if k is not Kind.AUTH:
            unit.auth_retried = False

        if k is Kind.RESULTS:
            self._on_results(d, unit, outcome, stack)
        elif k is Kind.TOO_LARGE:
            self._unblock(d)
            if n == 1:
                self._log_error(d, unit, outcome, "dcs.message_too_large")
                self._reject(unit.batch.items[0], 413, "too-large", outcome.batch_id)
            else:
                self._log_error(d, unit, outcome, "dcs.batch_too_large", action="split")
                self._split(unit, stack)
        elif k is Kind.CONFIG:
            self._block(d, f"inlet {d.inlet}: {outcome.cause}: {outcome.reason}", outcome, unit)
            stack.append(self._again(unit, self.policy.blocked_probe_interval, "blocked-config"))
        elif k is Kind.AUTH:
            if not unit.auth_retried:
                self._log_error(d, unit, outcome, "dcs.auth_rejected", action="refresh-token")
                unit.auth_retried = True
                stack.append(self._again(unit, 0.0, "auth"))
            else:
                reason = f"inlet {d.inlet}: {outcome.cause} after a token refresh: {outcome.reason}"
                self._block(d, reason, outcome, unit)
                stack.append(self._again(unit, self.policy.blocked_probe_interval, "blocked-auth"))
        elif k is Kind.RETRYABLE:
            self._on_retryable(d, unit, outcome, stack)
        else:  # SERVER_ERROR
            if d.first_500_mark is None:
                d.first_500_mark = self.health.mark(d.url)
            self._log_error(d, unit, outcome, "dcs.server_error")
            self._on_server_error(d, unit, outcome.batch_id, outcome.reason, stack)

    async def _send(self, d: _Delivery, batch: Batch[T]) -> Outcome:
        flow = self.flow
        permit = None if flow is None else await flow.acquire(len(batch.items), gated=d.gated)
        self.requests += 1
        try:
            resp = await self.client.post_batch(
                d.url,
                batch.body(),
                d.headers,
                authenticated=d.authenticated,
                request_timeout=self.policy.request_timeout,
            )
        except asyncio.CancelledError:
            if flow is not None and permit is not None:
                flow.done(permit, Signal.NEUTRAL)
            raise
        except Exception as e:  # a client bug must not lose the batch: treat as transient
            _log().exception("dcs.client_failed", inlet=d.inlet, n=len(batch.items))
            resp = DcsResponse(None, transport=Transport.OTHER, detail=type(e).__name__)
        outcome = classify(resp, len(batch.items), retry_after_cap=self.policy.retry_after_cap)
        if flow is not None and permit is not None:
            _flow_done(flow, permit, outcome)
        return outcome

    # -- outcomes ------------------------------------------------------------------------------

    def _on_results(
        self, d: _Delivery, unit: _Unit[T], outcome: Outcome, stack: list[_Unit[T]]
    ) -> None:
        items = unit.batch.items
        retry_idx: list[int] = []
        s500_idx: list[int] = []
        any_accepted = any_final = False
        rejected_reasons: list[str] = []
        for i, res in enumerate(outcome.items):
            if res.kind is ItemKind.ACCEPTED:
                any_accepted = any_final = True
                self.accepted_count += 1
                self.sink.accepted(items[i], res.xaction_id, outcome.batch_id)
            elif res.kind is ItemKind.REJECTED:
                any_final = True
                if len(rejected_reasons) < 3:
                    rejected_reasons.append(f"{res.status} {res.reason}"[:120])
                self._reject(
                    items[i], res.status, res.reason or f"HTTP {res.status}", outcome.batch_id
                )
            elif res.kind is ItemKind.RETRYABLE:
                retry_idx.append(i)
            else:
                s500_idx.append(i)
        if any_accepted:
            self.health.record_success(d.url)
        if any_final:
            self._unblock(d)
        counts = outcome.counts()
        if outcome.anomaly or retry_idx or s500_idx or counts["rejected"]:
            event = "dcs.partial_failure"
            _log().warning(
                event,
                inlet=d.inlet,
                key=unit.batch.key,
                status=outcome.status,
                batch_id=outcome.batch_id,
                request_id=outcome.request_id,
                n=len(items),
                **counts,
                anomaly=outcome.anomaly,
                rejected_reasons=rejected_reasons or None,
                xaction_ids=[
                    r.xaction_id
                    for r in outcome.items
                    if r.kind is not ItemKind.ACCEPTED and r.xaction_id
                ][:5]
                or None,
            )
        if s500_idx:
            if d.first_500_mark is None:
                # The accepted batch-mates of this very response count as evidence.
                d.first_500_mark = self.health.mark(d.url) - (1 if any_accepted else 0)
            sub = _Unit(unit.batch.subset(s500_idx), server_errors=unit.server_errors)
            reason = next(
                (r.reason for r in outcome.items if r.kind is ItemKind.SERVER_ERROR and r.reason),
                "per-message 500",
            )
            self._on_server_error(d, sub, outcome.batch_id, reason, stack)
        if retry_idx:
            sub = _Unit(unit.batch.subset(retry_idx), attempts=unit.attempts)
            self._on_retryable(d, sub, outcome, stack, cause="per-message-retryable")

    def _on_retryable(
        self,
        d: _Delivery,
        unit: _Unit[T],
        outcome: Outcome,
        stack: list[_Unit[T]],
        cause: str | None = None,
    ) -> None:
        """Back off and resend `unit` (the whole request failed, or `cause` names which
        per-message failure); after `max_retries` in a row, block and probe instead."""
        cause = cause or outcome.cause
        unit.attempts += 1
        self.retries += 1
        limit = self.policy.max_retries
        if limit is not None and unit.attempts > limit:
            reason = (
                f"inlet {d.inlet}: {outcome.cause} persisted through {limit} retries: "
                f"{outcome.reason}"
            )
            self._block(d, reason, outcome, unit)
            delay = max(self.policy.blocked_probe_interval, outcome.retry_after or 0.0)
            stack.append(self._again(unit, delay, cause))
            return
        delay = (
            outcome.retry_after
            if outcome.retry_after is not None
            else self.policy.backoff(unit.attempts, self._rng)
        )
        if outcome.kind is not Kind.RESULTS:  # a 207's failures are logged as partial_failure
            self._log_error(d, unit, outcome, "dcs.retryable", delay_s=round(delay, 3))
        stack.append(self._again(unit, delay, cause))

    def _on_server_error(
        self,
        d: _Delivery,
        unit: _Unit[T],
        batch_id: str | None,
        reason: str,
        stack: list[_Unit[T]],
    ) -> None:
        unit.server_errors += 1
        unit.attempts = 0
        n = len(unit.batch.items)
        if unit.server_errors <= self.policy.server_error_retries:
            self.retries += 1
            stack.append(
                self._again(unit, self.policy.backoff(unit.server_errors, self._rng), "http-500")
            )
            return
        if n >= 2:
            _log().warning(
                "dcs.isolating_server_error",
                inlet=d.inlet,
                key=unit.batch.key,
                n=n,
                batch_id=batch_id,
                server_errors=unit.server_errors,
            )
            self._split(unit, stack)
            return
        mark = d.first_500_mark if d.first_500_mark is not None else self.health.mark(d.url)
        if self.health.mark(d.url) > mark:
            _log().warning(
                "dcs.message_server_error",
                inlet=d.inlet,
                key=unit.batch.key,
                batch_id=batch_id,
                server_errors=unit.server_errors,
                action="reject",
            )
            self._reject(unit.batch.items[0], 500, f"server-error: {reason}"[:300], batch_id)
            return
        # Every message fails alone and nothing got through since: an outage, not bad data.
        self._block(
            d,
            f"inlet {d.inlet}: HTTP 500 for every message, none accepted since (outage?): {reason}",
            None,
            unit,
        )
        stack.append(self._again(unit, self.policy.blocked_probe_interval, "blocked-500"))

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _again(unit: _Unit[T], delay: float, cause: str) -> _Unit[T]:
        unit.delay = delay
        unit.cause = cause
        return unit

    def _split(self, unit: _Unit[T], stack: list[_Unit[T]]) -> None:
        self.splits += 1
        first, second = unit.batch.split()
        # Depth-first, first half first: push the second half underneath.
        stack.append(_Unit(second))
        stack.append(_Unit(first))

    def _reject(self, item: T, status: int | None, reason: str, batch_id: str | None) -> None:
        self.rejected_count += 1
        self.sink.rejected(item, status, reason, batch_id)

    def _block(self, d: _Delivery, reason: str, outcome: Outcome | None, unit: _Unit[T]) -> None:
        if d.blocked_reason != reason:
            _log().error(
                "dcs.blocked",
                inlet=d.inlet,
                key=unit.batch.key,
                n=len(unit.batch.items),
                reason=reason,
                status=outcome.status if outcome else 500,
                request_id=outcome.request_id if outcome else None,
                batch_id=outcome.batch_id if outcome else None,
                probe_interval_s=self.policy.blocked_probe_interval,
            )
            d.blocked_reason = reason
        if d.blocked:
            return
        d.blocked = True
        self._blocked += 1
        if self._blocked == 1:
            self.sink.blocked(reason)

    def _unblock(self, d: _Delivery) -> None:
        if not d.blocked:
            return
        _log().info("dcs.unblocked", inlet=d.inlet, was=d.blocked_reason)
        d.blocked = False
        d.blocked_reason = None
        self._blocked -= 1
        if self._blocked == 0:
            self.sink.blocked(None)

    def _log_error(
        self, d: _Delivery, unit: _Unit[T], outcome: Outcome, event: str, **extra: Any
    ) -> None:
        _log().warning(
            event,
            inlet=d.inlet,
            key=unit.batch.key,
            n=len(unit.batch.items),
            status=outcome.status,
            cause=outcome.cause,
            reason=outcome.reason or None,
            request_id=outcome.request_id,
            batch_id=outcome.batch_id,
            attempts=unit.attempts,
            server_errors=unit.server_errors,
            **extra,
        )


_CONGESTION_CAUSES = frozenset({Transport.TIMEOUT.value, Transport.CONNECTION.value})


def _flow_done(flow: FlowControl, permit: Permit, outcome: Outcome) -> None:
    """What an answer tells the flow control: 429 (request or any message) is throttling;
    other 5xx, 408, timeouts and connection failures are congestion; a 2xx otherwise a
    success (its latency decides whether a quick one); the rest says nothing about load."""
    kind, status = outcome.kind, outcome.status
    if kind is Kind.RESULTS:
        accepted = throttled = congested = 0
        for res in outcome.items:
            if res.kind is ItemKind.ACCEPTED:
                accepted += 1
            elif res.status == 429:
                throttled += 1
            elif res.kind is ItemKind.SERVER_ERROR or (
                res.kind is ItemKind.RETRYABLE and res.status is not None and res.status >= 500
            ):
                congested += 1
        signal = Signal.CONGESTION if throttled or congested else Signal.SUCCESS
        flow.done(permit, signal, accepted=accepted, throttled=bool(throttled))
    elif status == 429:
        flow.done(permit, Signal.CONGESTION, throttled=True)
    elif kind is Kind.SERVER_ERROR or (kind is Kind.RETRYABLE and (
        (status is not None and (status >= 500 or status == 408))
        or (status is None and outcome.cause in _CONGESTION_CAUSES)
    )):
        flow.done(permit, Signal.CONGESTION)
    else:
        flow.done(permit, Signal.NEUTRAL)
