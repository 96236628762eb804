"""Summaries of py-spy's collapsed stacks (``--format raw``): where the samples are.

Run: ``uv run python -m tests.benchmarks.profile_summary STACKS.txt [--top 25] [--thread NAME]``.
Prints, per function, the share of samples that are inside it (inclusive) and in it alone
(self), the way the README's profile summary is written.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``module.py:func`` (line numbers merged)."""
    m = _FRAME.match(frame)
    if m is None:
        return frame
    func, path = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if parts[-2:-1] in (["worker"], ["aep"], ["mapping"]) else parts[-1]
    return f"{short}:{func}"


def summarise(path: Path, thread: str | None = None) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        stack, count = m.group(1), int(m.group(2))
        frames = stack.split(";")
        if thread is not None and thread not in frames[0]:
            continue
        total += count
        names = [frame_name(f) for f in frames[1:]] or [frames[0]]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    return total, inclusive, own


# Stages of the worker, regular expressions matched against a sample's frames (the first
# stage in this order that matches wins). Each lists the interpreted frame and the compiled one (mypyc's C functions are
# named CPyDef_<module>___<Class>___<method>, an async method <method>_<Class>_gen...).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("garbage collector", ("gc_collect",)),
    ("dead letters (log, headers, produce)", ("Pipeline._dead_letter", "dlq_producer.py:",
                                              "CPyDef_pipeline___Pipeline____dead_letter")),
    ("decode (events.decode)", ("worker/events.py:decode", ":CPyDef_events___decode")),
    ("map (mapping.build_entity)", ("mapping/__init__.py:build_entity",
                                    ":CPyDef_mapping___build_entity")),
    # One stage for both checks: with compiled callers, py-spy often cannot unwind the native
    # frames between the loop and the validator, so which check a sample is in is unknown.
    ("schema checks, input and XDM (jsonschema-rs)", ("worker/schemas.py:Validator",)),
    ("serialize (orjson.dumps, envelope)", ("worker/rendering.py:render",
                                            ":CPyDef_rendering___render")),
    ("batching, offsets, profile order", ("Pipeline._submit", "Pipeline._offer",
                                          "offsets.py:", "profile_order.py:",
                                          "CPyDef_pipeline___Pipeline____submit",
                                          "CPyDef_pipeline___Pipeline____offer",
                                          ":CPyDef_offsets___", ":CPyDef_profile_order___")),
    ("consume loop (rest of Pipeline._process)", ("Pipeline._process",
                                                  ":CPyDef_pipeline___Pipeline____process")),
    ("deliver: per-message accept (offsets, metrics)", (
        "Pipeline.accepted", "Pipeline.rejected", ":CPyDef_pipeline___Pipeline___accepted",
        ":CPyDef_pipeline___Pipeline___rejected")),
    ("deliver: 207 classification", ("responses.py:classify", ":CPyDef_responses___classify")),
    ("deliver: HTTP request (aiohttp, body)", ("Deliverer._send",
                                               ":CPyDef_delivery____send_Deliverer_gen")),
    ("deliver: other", ("aep/delivery.py:", ":CPyDef_delivery___")),
    ("Kafka consume (Message objects)", ("ConsumerOwner.consume", "cimpl", "thread.py:_worker")),
    ("start-up (imports, schemas)", ("importlib", "SchemaStore")),
)


def stages(path: Path) -> list[tuple[str, float]]:
    """Share of samples per stage of the worker (``STAGES``), largest first."""
    total = 0
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        count = int(m.group(2))
        joined = ";".join(frame_name(f) for f in m.group(1).split(";")[1:])
        total += count
        for stage, needles in STAGES:
            if any(re.search(n, joined) for n in needles):
                counts[stage] += count
                break
        else:
            counts["event loop, asyncio, other"] += count
    return [(stage, n / total) for stage, n in counts.most_common()] if total else []


def report(path: Path, top: int = 25, thread: str | None = None) -> str:
    total, inclusive, own = summarise(path, thread)
    if not total:
        return "no samples"
    lines = [f"{total} samples" + (f" (thread {thread})" if thread else "")]
    lines.append("by stage:")
    lines += [f"{share:>9.1%}  {stage}" for stage, share in stages(path)]
    lines.append(f"{'inclusive':>9} {'self':>6}  function")
    for name, n in inclusive.most_common(top):
        lines.append(f"{n / total:>9.1%} {own[name] / total:>6.1%}  {name}")
    lines.append("top self:")
    for name, n in own.most_common(top):
        lines.append(f"{n / total:>9.1%}  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", default=None, help="only stacks of this thread")
    args = parser.parse_args()
    print(report(args.stacks, args.top, args.thread))


if __name__ == "__main__":
    main()
