"""Records accepted by AEP, per (event, target), with end-to-end latency bucket counts.

Written once per accepted message on the loop thread (the hottest metric: plain integer
updates, no prometheus-client call); read by the scrape thread's collectors in
``worker.metrics``. Compiled with the per-record modules (worker.compiled).
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["AcceptedSeries", "AcceptedStore"]


class AcceptedSeries:
    """Per (event, target): records accepted, and latency bucket counts for both clocks."""

    __slots__ = ("appended", "appended_sum", "count", "created", "created_sum")

    def __init__(self, n_buckets: int) -> None:
        self.count = 0
        self.created = [0] * (n_buckets + 1)  # the last one is +Inf
        self.created_sum = 0.0
        self.appended = [0] * (n_buckets + 1)
        self.appended_sum = 0.0


class AcceptedStore:
    """Written on the loop thread only; read by the scrape thread from atomic copies."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[tuple[str, str], AcceptedSeries] = {}

    def add(
        self, event: str, target: str, now_s: float, created_ms: int | None,
        appended_ms: int | None,
    ) -> None:
        s = self.series.get((event, target))
        if s is None:
            s = self.series[(event, target)] = AcceptedSeries(len(self.bounds))
        s.count += 1
        if created_ms is not None:
            age = max(now_s - created_ms / 1000, 0.0)
            s.created[bisect_left(self.bounds, age)] += 1  # first bound >= age: "le"
            s.created_sum += age
        if appended_ms is not None:
            age = max(now_s - appended_ms / 1000, 0.0)
            s.appended[bisect_left(self.bounds, age)] += 1
            s.appended_sum += age

    def snapshot(self) -> list[tuple[tuple[str, str], AcceptedSeries]]:
        return list(self.series.items())  # one C-level copy: safe against a concurrent insert
