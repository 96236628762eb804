"""Micro-benchmark of the per-record bookkeeping: OffsetTracker and Batcher.

Run: `uv run python tests/benchmarks/bench_core.py [--records N]`. Prints ns per operation,
best of several rounds, loop overhead included (the `empty loop` line shows how much).
The hot path must stay within a few hundred ns per record for ~50,000 records/s.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable

import orjson

from worker.batching import Batch, Batcher
from worker.offsets import TP, OffsetTracker

ROUNDS = 5


def best_ns_per_op(
    label: str, ops: int, run: Callable[[], None], setup: Callable[[], None]
) -> None:
    best = float("inf")
    for _ in range(ROUNDS):
        setup()
        gc.collect()
        t0 = time.perf_counter_ns()
        run()
        best = min(best, (time.perf_counter_ns() - t0) / ops)
    print(f"{label:<52} {best:8.1f} ns/op")


def bench_tracker(n: int) -> None:
    tps: list[TP] = [("loyalty.events", p) for p in range(12)]
    gen = 3
    # consume(n)-shaped: records arrive in partition runs, offsets with occasional gaps
    recs: list[tuple[TP, int]] = []
    nexts = dict.fromkeys(tps, 1_000_000_000)
    rnd = random.Random(1)
    while len(recs) < n:
        tp = rnd.choice(tps)
        for _ in range(rnd.randint(50, 500)):
            nexts[tp] += 1 if rnd.random() > 0.01 else 3
            recs.append((tp, nexts[tp]))
    recs = recs[:n]
    shuffled = recs[:]
    rnd.shuffle(shuffled)
    state: dict[str, OffsetTracker] = {}

    def fresh() -> None:
        t = OffsetTracker()
        for tp in tps:
            t.assign(tp, gen)
        state["t"] = t

    def filled() -> None:
        fresh()
        add = state["t"].add
        for tp, off in recs:
            add(tp, off, gen)

    def run_empty() -> None:
        for _tp, _off in recs:
            pass

    def run_add() -> None:
        add = state["t"].add
        for tp, off in recs:
            add(tp, off, gen)

    def run_add_fanout2() -> None:
        add = state["t"].add
        for tp, off in recs:
            add(tp, off, gen, 2)

    def run_finish_in_order() -> None:
        finish = state["t"].finish
        for tp, off in recs:
            finish(tp, off, gen)

    def run_finish_shuffled() -> None:
        finish = state["t"].finish
        for tp, off in shuffled:
            finish(tp, off, gen)

    def run_frontier() -> None:
        frontier = state["t"].frontier
        for tp, _off in recs:
            frontier(tp)

    def run_committable() -> None:
        committable = state["t"].committable
        for _ in range(n // 100):
            committable()

    best_ns_per_op("empty loop over (tp, offset) pairs", n, run_empty, fresh)
    best_ns_per_op("tracker.add (parts=1)", n, run_add, fresh)
    best_ns_per_op("tracker.add (parts=2, fan-out)", n, run_add_fanout2, fresh)
    best_ns_per_op("tracker.finish (in offset order)", n, run_finish_in_order, filled)
    best_ns_per_op(
        "tracker.finish (random order across partitions)", n, run_finish_shuffled, filled
    )
    best_ns_per_op("tracker.frontier (with pending records)", n, run_frontier, filled)
    best_ns_per_op("tracker.committable (12 partitions)", n // 100, run_committable, filled)


def bench_batcher(n: int) -> None:
    rnd = random.Random(2)

    def event(i: int) -> bytes:
        doc = {
            "header": {"schemaRef": {"id": "https://ns.adobe.com/acme/schemas/abc123"}},
            "body": {"xdmEntity": {"_id": f"{i:032x}", "pad": "x" * rnd.randint(400, 480)}},
        }
        return orjson.dumps(doc)

    payloads = [event(i) for i in range(n)]
    avg = sum(map(len, payloads)) / n
    keys = ["profile-inlet", "event-inlet", "profile-inlet", "profile-inlet"]
    # "cold": every payload distinct, so len() misses the CPU cache (pessimistic);
    # "warm": payloads cycle through one consume(n)-sized pool that was just serialised.
    cold = [(keys[i % 4], ("loyalty.events", i % 12, i), p) for i, p in enumerate(payloads)]
    warm = [(k, item, payloads[i % 2000]) for i, (k, item, _p) in enumerate(cold)]
    state: dict[str, Batcher[tuple[str, int, int]]] = {}
    out: list[object] = []

    def fresh() -> None:
        state["b"] = Batcher(max_messages=1000, max_bytes=1_000_000, linger_s=0.5)
        out.clear()

    def run_add(work: list[tuple[str, tuple[str, int, int], bytes]]) -> Callable[[], None]:
        def run() -> None:
            add = state["b"].add
            for key, item, payload in work:
                b = add(key, item, payload)
                if b is not None:
                    out.append(b)

        return run

    print(f"(payloads average {avg:.0f} bytes)")
    label = "batcher.add (2 keys, max 1000 msgs / 1 MB)"
    best_ns_per_op(f"{label}, warm", n, run_add(warm), fresh)
    best_ns_per_op(f"{label}, cold", n, run_add(cold), fresh)

    full_batch: list[Batch[int]] = []

    def full() -> None:
        full_batch.clear()
        b: Batcher[int] = Batcher(max_messages=10**6, max_bytes=1_000_000, linger_s=0.5)
        for i, p in enumerate(payloads):
            c = b.add("k", i, p)
            if c is not None:
                full_batch.append(c)
                return

    def run_body() -> None:
        body = full_batch[0].body
        for _ in range(20):
            body()

    full()
    nmsg = len(full_batch[0])
    best_ns_per_op(f"Batch.body() of a ~1 MB batch ({nmsg} msgs), per body", 20, run_body, full)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    bench_tracker(args.records)
    bench_batcher(args.records)


if __name__ == "__main__":
    main()
