"""Counts and times every DCS request on its way through, without touching the client.

Wraps anything with the ``DcsTransport`` shape (``worker.aep.client.DcsClient``): each answer
is counted by inlet and HTTP status (or the transport cause when no answer came: timeout,
connection, ims-unavailable, ...) and its duration observed. The inlet id comes from the
configured URL, so label values stay bounded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Counter, Histogram

from worker.aep.client import inlet_id
from worker.aep.delivery import DcsTransport
from worker.aep.responses import DcsResponse
from worker.metrics import Metrics


class MeteredTransport:
    def __init__(self, inner: DcsTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._inlets: dict[str, str] = {}
        self._children: dict[tuple[str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}

    def _inlet(self, url: str) -> str:
        name = self._inlets.get(url)
        if name is None:
            try:
                name = inlet_id(url)
            except ValueError:
                name = "invalid"
            self._inlets[url] = name
        return name

    async def post_batch(
        self,
        url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse:
        started = time.monotonic()
        resp = await self._inner.post_batch(
            url, body, extra_headers, authenticated=authenticated,
            request_timeout=request_timeout,
        )
        elapsed = resp.elapsed if resp.elapsed else time.monotonic() - started
        inlet = self._inlet(url)
        if resp.status is not None:
            status = str(resp.status)
        elif resp.transport is not None:
            status = resp.transport.value
        else:
            status = "none"
        counter = self._children.get((inlet, status))
        if counter is None:
            counter = self._children[(inlet, status)] = self._metrics.requests.labels(
                inlet, status
            )
        counter.inc()
        duration = self._durations.get(inlet)
        if duration is None:
            duration = self._durations[inlet] = self._metrics.request_duration.labels(inlet)
        duration.observe(elapsed)
        return resp
