"""``/livez``, ``/readyz`` and ``/metrics`` on one aiohttp port, served from their own thread.

The server has its own thread and event loop so that a wedged worker loop (a blocking call, a
CPU-bound bug) still gets a clear ``503`` from ``/livez`` instead of a probe timeout, and a
scrape never waits behind a busy pipeline.

Liveness: the consume loop completed a poll within ``live_threshold_s`` (kept below
``max.poll.interval.ms``: past that the group evicts the member anyway) and the worker's event
loop is turning. Draining at shutdown counts as live: it has its own deadline.

Readiness: a member of the consumer group (any assignment, none included: more replicas than
partitions must not stall a rollout) with an IMS token obtained, and not paused for a
configuration or outage condition (AEP blocked, DLQ unwritable, Kafka authentication
failing), not stopped by the DLQ guard, not draining.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.metrics import Metrics


@dataclass(slots=True)
class HealthState:
    """Written by the worker's loop, read by the probe thread (plain attribute reads)."""

    live_threshold_s: float = 60.0
    last_poll: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    member: bool = False  # joined the group (any assignment, even none)
    token_ok: bool = False
    blocked: str | None = None  # AEP configuration / outage condition
    guard: str | None = None  # DLQ guard tripped
    dlq_down: bool = False
    receipts_down: bool = False  # delivery receipts cannot be written (receipts on)
    kafka_auth: str | None = None  # Kafka authentication failing
    draining: bool = False

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        if self.draining:
            return True, "draining for shutdown"
        now = time.monotonic()
        beat_age = now - self.last_beat
        if beat_age > self.live_threshold_s:
            return False, f"worker event loop blocked for {beat_age:.0f}s"
        age = now - self.last_poll
        if age > self.live_threshold_s:
            return False, f"consume loop silent for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        for cond, why in (
            (self.draining, "draining for shutdown"),
            (self.guard is not None, f"DLQ guard tripped: {self.guard}"),
            (self.blocked is not None, f"delivery blocked: {self.blocked}"),
            (self.dlq_down, "dead-letter topic unwritable"),
            (self.receipts_down, "receipts topic unwritable"),
            (self.kafka_auth is not None, f"{self.kafka_auth}"),
            (not self.member, "not yet a member of the consumer group"),
            (not self.token_ok, "no IMS token yet"),
        ):
            if cond:
                return False, why
        return True, "ok"


def build_app(state: HealthState, metrics: Metrics) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        ok, why = state.live()
        return web.json_response({"live": ok, "reason": why}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, why = state.ready()
        return web.json_response({"ready": ok, "reason": why}, status=200 if ok else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


class HealthServer:
    """The probe server on its own thread; ``start``/``stop`` are awaited from the worker."""

    def __init__(self, state: HealthState, metrics: Metrics, host: str, port: int) -> None:
        self.state = state
        self.metrics = metrics
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; returns the port (the one chosen, for port 0). Raises if it cannot bind."""
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        caller = asyncio.get_running_loop()

        def report(result: int | BaseException) -> None:
            if ready.done():
                return
            if isinstance(result, BaseException):
                ready.set_exception(result)
            else:
                ready.set_result(result)

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                port = loop.run_until_complete(self._listen())
            except BaseException as exc:
                caller.call_soon_threadsafe(report, exc)
                loop.close()
                return
            caller.call_soon_threadsafe(report, port)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="health-http", daemon=True)
        self._thread.start()
        self.port = await ready
        return self.port

    async def _listen(self) -> int:
        self._runner = web.AppRunner(build_app(self.state, self.metrics), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:  # port 0: report the one chosen
            return int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or loop.is_closed():
            return
        if runner is not None:
            done = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            await asyncio.wrap_future(done)
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 5)

