"""``/livez``, ``/readyz`` and ``/metrics`` on one aiohttp port."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.metrics import Metrics


@dataclass(slots=True)
class HealthState:
    """Written by the pipeline (loop thread), read by the probes."""

    live_threshold_s: float = 60.0
    last_poll: float = field(default_factory=time.monotonic)
    member: bool = False  # joined the group (any assignment, even none)
    token_ok: bool = False
    blocked: str | None = None  # AEP configuration / outage condition
    guard: str | None = None  # DLQ guard tripped
    dlq_down: bool = False
    draining: bool = False

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_poll
        if age > self.live_threshold_s:
            return False, f"consume loop silent for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        for cond, why in (
            (self.draining, "draining for shutdown"),
            (self.guard is not None, f"DLQ guard tripped: {self.guard}"),
            (self.blocked is not None, f"delivery blocked: {self.blocked}"),
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
    def __init__(self, state: HealthState, metrics: Metrics, host: str, port: int) -> None:
        self._runner = web.AppRunner(build_app(state, metrics), access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if sockets:  # port 0: report the one chosen
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
