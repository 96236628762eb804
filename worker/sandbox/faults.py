"""Fault injection: what the sandbox does wrong on purpose, deterministic or by chance.

``FaultConfig`` is the JSON shape of ``POST /sandbox/faults`` (and of ``[faults]`` in a config
file); ``FaultState`` holds it at run time with its counters, queue and seeded random source.
Every decision is made on the server's event loop, so no locking is needed.

Order of evaluation for a request to a targeted endpoint (DCS by default):
latency -> the ``next`` queue -> an active outage -> random resets -> random 429/500/503.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from email.utils import formatdate
from typing import Any, Literal

from worker.sandbox.rate_limit import RateLimitSettings, SandboxRateLimit

Target = Literal["dcs", "ims"]
_TARGETS = ("dcs", "ims")


class FaultConfigError(ValueError):
    """A fault setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class NextFault:
    """One queued answer for the next request: a status, a connection reset, and/or a delay."""

    status: int | None = None
    reset: bool = False
    retry_after: str | None = None  # sent verbatim as Retry-After (seconds or an HTTP date)
    delay_ms: float = 0.0
    message: str | None = None

    def __post_init__(self) -> None:
        if self.status is None and not self.reset and self.delay_ms <= 0:
            raise FaultConfigError("next[]: give a status, reset: true, or delay_ms")
        if self.status is not None and not 100 <= self.status <= 599:
            raise FaultConfigError("next[].status must be an HTTP status")


@dataclass(frozen=True, slots=True)
class MessageFault:
    """Messages whose compact JSON contains ``contains`` get ``status`` in their 207 entry."""

    contains: str
    status: int = 500
    times: int | None = None  # None: forever
    message: str | None = None

    def __post_init__(self) -> None:
        if not self.contains:
            raise FaultConfigError("message_faults[].contains must not be empty")
        if not 400 <= self.status <= 599:
            raise FaultConfigError("message_faults[].status must be 4xx or 5xx")
        if self.times is not None and self.times < 1:
            raise FaultConfigError("message_faults[].times must be >= 1 (or null: forever)")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    seed: int | None = None
    share_429: float = 0.0
    share_500: float = 0.0
    share_503: float = 0.0
    retry_after_seconds: float = 1.0
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    retry_after_on_503: bool = False
    next: tuple[NextFault, ...] = ()
    message_faults: tuple[MessageFault, ...] = ()
    latency_ms: float = 0.0
    latency_spike_ms: float = 0.0
    latency_spike_share: float = 0.0
    reset_share: float = 0.0
    outage_seconds: float = 0.0
    outage_mode: Literal["503", "reset"] = "503"
    # A fixed accepted rate on DCS (worker/sandbox/rate_limit.py): 429 above it; 0 = no limit.
    rate_limit_messages_per_s: float = 0.0
    rate_limit_requests_per_s: float = 0.0
    rate_limit_burst_s: float = 1.0
    auth_403_next: int = 0
    targets: tuple[Target, ...] = ("dcs",)
    failure_key: Literal["statusCode", "status"] | None = None  # overrides every inlet
    # Asynchronous validation failures: accepted by DCS (207 xactionId), then recorded in a
    # failed Catalog batch with their rows (worker/sandbox/platform.py).
    async_fail_substring: str | None = None
    async_fail_share: float = 0.0
    async_fail_message: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "share_429", "share_500", "share_503", "latency_spike_share", "reset_share",
            "async_fail_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FaultConfigError(f"{name} must be between 0 and 1")
        if self.share_429 + self.share_500 + self.share_503 > 1.0:
            raise FaultConfigError("share_429 + share_500 + share_503 must not exceed 1")
        for name in ("retry_after_seconds", "latency_ms", "latency_spike_ms", "outage_seconds"):
            if getattr(self, name) < 0:
                raise FaultConfigError(f"{name} must be >= 0")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise FaultConfigError("retry_after_format must be seconds or http-date")
        if self.outage_mode not in ("503", "reset"):
            raise FaultConfigError("outage_mode must be 503 or reset")
        if self.auth_403_next < 0:
            raise FaultConfigError("auth_403_next must be >= 0")
        for name in ("rate_limit_messages_per_s", "rate_limit_requests_per_s"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise FaultConfigError(f"{name} must be between 0 (no limit) and 1000000")
        if not 0 < self.rate_limit_burst_s <= 60:
            raise FaultConfigError("rate_limit_burst_s must be above 0 and at most 60")
        if any(t not in _TARGETS for t in self.targets):
            raise FaultConfigError("targets must be a list of dcs and/or ims")
        if self.failure_key not in (None, "statusCode", "status"):
            raise FaultConfigError("failure_key must be statusCode or status")
        if self.async_fail_substring == "":
            raise FaultConfigError("async_fail_substring must not be empty (null: off)")

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> FaultConfig:
        return cls().merged(data)

    def merged(self, data: Mapping[str, Any]) -> FaultConfig:
        """This config with the given keys replaced (the ``POST /sandbox/faults`` semantics)."""
        known = {f.name for f in fields(FaultConfig)}
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise FaultConfigError(f"unknown fault setting {key!r}")
            try:
                if key == "next":
                    changes[key] = tuple(
                        v if isinstance(v, NextFault) else NextFault(**_next_fields(v))
                        for v in value
                    )
                elif key == "message_faults":
                    changes[key] = tuple(
                        v if isinstance(v, MessageFault) else MessageFault(**v) for v in value
                    )
                elif key == "targets":
                    changes[key] = tuple(value)
                elif key == "outage_mode":
                    changes[key] = str(value)
                else:
                    changes[key] = value
            except TypeError as exc:
                raise FaultConfigError(f"fault setting {key!r}: {exc}") from None
        try:
            return replace(self, **changes)
        except TypeError as exc:
            raise FaultConfigError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _next_fields(value: Any) -> dict[str, Any]:
    data = dict(value)
    if "retry_after" in data and data["retry_after"] is not None:
        data["retry_after"] = str(data["retry_after"])
    return data


@dataclass(slots=True)
class RequestFault:
    """What to do with one request instead of (or before) serving it."""

    reset: bool = False
    status: int | None = None
    retry_after: str | None = None
    message: str | None = None
    delay_s: float = 0.0


@dataclass(slots=True)
class _MessageFaultCounter:
    fault: MessageFault
    remaining: int | None


@dataclass(slots=True)
class FaultState:
    config: FaultConfig = field(default_factory=FaultConfig)
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    queue: list[NextFault] = field(default_factory=list)
    message_faults: list[_MessageFaultCounter] = field(default_factory=list)
    outage_until: float = 0.0
    auth_403_remaining: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    rate: SandboxRateLimit = field(default_factory=SandboxRateLimit)

    def __post_init__(self) -> None:
        self.apply(self.config, initial=True)

    # -- configuration -----------------------------------------------------------------------

    def apply(
        self, config: FaultConfig, *, initial: bool = False, keys: set[str] | None = None
    ) -> None:
        """Install ``config``; ``keys`` limits the run-time side effects to the keys just set."""
        self.config = config
        touched = keys if keys is not None else {f.name for f in fields(FaultConfig)}
        if "seed" in touched and (config.seed is not None or initial):
            self.rng.seed(config.seed)
        if "next" in touched:
            self.queue = list(config.next)
        if "message_faults" in touched:
            self.message_faults = [_MessageFaultCounter(m, m.times) for m in config.message_faults]
        if "outage_seconds" in touched:
            self.outage_until = (
                self.clock() + config.outage_seconds if config.outage_seconds else 0.0
            )
        if "auth_403_next" in touched:
            self.auth_403_remaining = config.auth_403_next
        if touched & {"rate_limit_messages_per_s", "rate_limit_requests_per_s",
                      "rate_limit_burst_s"}:
            self.rate.configure(RateLimitSettings(
                config.rate_limit_messages_per_s, config.rate_limit_requests_per_s,
                config.rate_limit_burst_s,
            ))

    def update(self, patch: Mapping[str, Any]) -> None:
        self.apply(self.config.merged(patch), keys=set(patch))

    def clear(self) -> None:
        self.apply(FaultConfig())
        self.rng.seed(None)
        self.rate.clear()

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "config": self.config.to_json(),
            "next_remaining": len(self.queue),
            "message_faults": [
                {"contains": c.fault.contains, "status": c.fault.status, "remaining": c.remaining}
                for c in self.message_faults
            ],
            "outage_remaining_s": max(0.0, self.outage_until - now),
            "auth_403_remaining": self.auth_403_remaining,
            "injected": dict(self.injected),
        }

    # -- decisions -----------------------------------------------------------------------------

    def targets(self, target: Target) -> bool:
        return target in self.config.targets

    def request_fault(self, target: Target) -> RequestFault | None:
        """The fault for one request to ``target`` (None: serve it normally)."""
        if not self.targets(target):
            return None
        cfg = self.config
        delay = cfg.latency_ms / 1000.0
        if cfg.latency_spike_share and self.rng.random() < cfg.latency_spike_share:
            delay += cfg.latency_spike_ms / 1000.0
        if self.queue:
            nxt = self.queue.pop(0)
            fault = RequestFault(
                reset=nxt.reset,
                status=nxt.status,
                retry_after=nxt.retry_after,
                message=nxt.message,
                delay_s=delay + nxt.delay_ms / 1000.0,
            )
            if fault.status == 429 and fault.retry_after is None:
                fault.retry_after = self.retry_after_value()
            self._count(fault)
            return fault
        if self.outage_until and self.clock() < self.outage_until:
            fault = RequestFault(delay_s=delay, message="sandbox outage")
            if cfg.outage_mode == "reset":
                fault.reset = True
            else:
                fault.status = 503
            self._count(fault)
            return fault
        if cfg.reset_share and self.rng.random() < cfg.reset_share:
            fault = RequestFault(reset=True, delay_s=delay)
            self._count(fault)
            return fault
        shares = cfg.share_429 + cfg.share_500 + cfg.share_503
        if shares:
            roll = self.rng.random()
            status: int | None = None
            if roll < cfg.share_429:
                status = 429
            elif roll < cfg.share_429 + cfg.share_500:
                status = 500
            elif roll < shares:
                status = 503
            if status is not None:
                fault = RequestFault(status=status, delay_s=delay)
                if status == 429 or (status == 503 and cfg.retry_after_on_503):
                    fault.retry_after = self.retry_after_value()
                self._count(fault)
                return fault
        if delay:
            return RequestFault(delay_s=delay)
        return None

    def retry_after_value(self) -> str:
        seconds = self.config.retry_after_seconds
        if self.config.retry_after_format == "http-date":
            return formatdate(math.ceil(self.clock() + seconds), usegmt=True)
        return str(math.ceil(seconds))

    def take_auth_403(self) -> bool:
        if self.auth_403_remaining > 0:
            self.auth_403_remaining -= 1
            self.injected["auth_403"] = self.injected.get("auth_403", 0) + 1
            return True
        return False

    @property
    def has_message_faults(self) -> bool:
        return bool(self.message_faults)

    def message_fault(self, serialized: bytes) -> tuple[int, str] | None:
        """The per-message status for a message (compact JSON), consuming one use."""
        for counter in self.message_faults:
            if counter.fault.contains.encode() in serialized:
                if counter.remaining is not None:
                    counter.remaining -= 1
                    if counter.remaining <= 0:
                        self.message_faults.remove(counter)
                key = f"message_{counter.fault.status}"
                self.injected[key] = self.injected.get(key, 0) + 1
                return counter.fault.status, (
                    counter.fault.message
                    or f"Injected per-message fault (status {counter.fault.status})"
                )
        return None

    def _count(self, fault: RequestFault) -> None:
        if not fault.reset and fault.status is None:
            return
        key = "reset" if fault.reset else str(fault.status)
        self.injected[key] = self.injected.get(key, 0) + 1
