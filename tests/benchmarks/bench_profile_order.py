"""Micro-benchmark of the routing and profile-ordering bookkeeping on the hot path.

Run: `uv run python tests/benchmarks/bench_profile_order.py [--updates N]`. Prints ns per
operation (best of several rounds, loop overhead included) and the memory of the
"last delivered" LRU per identity.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

from worker.profile_order import ProfileOrder
from worker.routing import RouteTable

ROUNDS = 5


class _Item:
    __slots__ = ()


def best_ns_per_op(label: str, ops: int, run: Callable[[], None]) -> None:
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        t0 = time.perf_counter_ns()
        run()
        best = min(best, (time.perf_counter_ns() - t0) / ops)
    print(f"{label:<60} {best:8.1f} ns/op")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=200_000)
    n = parser.parse_args().updates
    keys = [("profile-tier", 150956, str(300_000_000 + i % 5000)) for i in range(n)]
    items = [_Item() for _ in range(n)]

    def one_at_a_time() -> None:  # the common case: each update sent before the next
        order: ProfileOrder[_Item] = ProfileOrder(1_000_000)
        for i in range(n):
            key, item = keys[i], items[i]
            order.offer(key, i, item, b"")
            order.sending(key, item)
            order.finished(key, item, True)

    def bursts() -> None:  # 4 updates per identity arrive before the first is sent
        order: ProfileOrder[_Item] = ProfileOrder(1_000_000)
        for i in range(0, n - 3, 4):
            key = keys[i]
            for j in range(4):
                order.offer(key, i + j, items[i + j], b"")
            order.sending(key, items[i + 3])
            order.finished(key, items[i + 3], True)

    best_ns_per_op("profile order: offer + sending + finished, per update", n, one_at_a_time)
    best_ns_per_op("profile order: bursts of 4 (3 superseded), per update", n, bursts)

    plain = RouteTable({"pointsIssued": ()}, {})
    by_org = RouteTable({"pointsIssued": ()}, {(7, "pointsIssued"): ()})

    def lookups(table: RouteTable) -> Callable[[], None]:
        def run() -> None:
            lookup = table.lookup
            for _ in range(n):
                lookup(150956, "pointsIssued")
        return run

    best_ns_per_op("route lookup, no org-specific routes", n, lookups(plain))
    best_ns_per_op("route lookup, with org-specific routes", n, lookups(by_org))

    tracemalloc.start()
    order: ProfileOrder[_Item] = ProfileOrder(10_000_000)
    m = 100_000
    before = tracemalloc.get_traced_memory()[0]
    for i in range(m):
        key = ("profile-tier", 150956, str(400_000_000 + i))
        item = _Item()
        order.offer(key, 1, item, b"")
        order.sending(key, item)
        order.finished(key, item, True)
    per = (tracemalloc.get_traced_memory()[0] - before) / m
    tracemalloc.stop()
    print(f"{'last-delivered LRU, per identity (key, customer id, entry)':<60} {per:8.0f} bytes")


if __name__ == "__main__":
    main()
