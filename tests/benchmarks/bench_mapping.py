"""Micro-benchmark of the per-event CPU of the transform stages, over the sample mix.

Run: `uv run python tests/benchmarks/bench_mapping.py [--events N] [--event NAME ...]`.
Prints µs per event (best of several rounds) for decode, the input-schema check, the mapping
of every default target (build_entity), the XDM check and serialization, and their sum, for
the realistic mix of all 15 events and for each event alone. A mapped event fans out to 1-2
targets; the figures are per consumed event.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import orjson

from worker.events import decode
from worker.mapping import DEFAULT_FAMILIES, MappingContext, build_entity
from worker.schemas import SchemaStore
from worker.tools.samples import SUPPORTED_EVENTS, generate_samples

ROUNDS = 5
SCHEMA = {
    "experience_event": "https://ns.adobe.com/capillary/schemas/loyalty-experience-event",
    "profile": "https://ns.adobe.com/capillary/schemas/loyalty-profile",
}


def best_us(n: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        t0 = time.process_time_ns()
        run()
        best = min(best, (time.process_time_ns() - t0) / n / 1000)
    return best


def bench(values: list[bytes], store: SchemaStore, ctx: MappingContext) -> dict[str, float]:
    events = [decode(v) for v in values]
    validators = {e.name: store.capillary(e.name) for e in events}
    xdm = {k: store.xdm(v) for k, v in SCHEMA.items()}
    plan = [
        [(f, "t-" + f, xdm["experience_event" if f == "experience_event" else "profile"])
         for f in DEFAULT_FAMILIES[e.name]]
        for e in events
    ]  # fmt: skip
    entities = [[build_entity(e, f, t, ctx) for f, t, _ in p] for e, p in zip(events, plan, strict=True)]
    n = len(values)

    def do_decode() -> None:
        for v in values:
            decode(v)

    def do_validate() -> None:
        for e in events:
            validators[e.name].is_valid(e.data)  # type: ignore[union-attr]

    def do_map() -> None:
        for e, p in zip(events, plan, strict=True):
            for f, t, _ in p:
                build_entity(e, f, t, ctx)

    def do_xdm() -> None:
        for ents, p in zip(entities, plan, strict=True):
            for entity, (_, _, validator) in zip(ents, p, strict=True):
                validator.is_valid(entity)
                orjson.dumps(entity)

    out = {
        "decode": best_us(n, do_decode),
        "input schema": best_us(n, do_validate),
        "map (all targets)": best_us(n, do_map),
        "xdm check + dumps": best_us(n, do_xdm),
    }
    out["total"] = sum(out.values())
    out["targets/event"] = sum(len(p) for p in plan) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--event", action="append", choices=SUPPORTED_EVENTS)
    args = parser.parse_args()
    store = SchemaStore()
    ctx = MappingContext()
    mixes: list[tuple[str, tuple[str, ...] | None]] = [("mix of all 15", None)]
    mixes += [(name, (name,)) for name in (args.event or SUPPORTED_EVENTS)]
    columns = ("decode", "input schema", "map (all targets)", "xdm check + dumps", "total")
    print(f"{'events':<24}" + "".join(f"{c:>19}" for c in columns) + f"{'targets':>9}")
    for label, names in mixes:
        values = [s.value for s in generate_samples(args.events, seed=3, event_names=names)]
        r = bench(values, store, ctx)
        print(f"{label:<24}" + "".join(f"{r[c]:>17.1f}µs" for c in columns)
              + f"{r['targets/event']:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
