"""Where the worker's CPU goes, per stage, measured inside a real run (not sampled).

Run by ``bench_worker`` as a child process over the main backlog: the same worker as
``capillary-aep run --exit-when-drained`` (settings from the ``CAPILLARY_AEP_*`` environment),
with the stage functions wrapped in a timer that adds up the event-loop thread's CPU
(``time.thread_time_ns``) spent inside each. Prints one JSON object: µs of CPU per consumed
event by stage, and the main thread's and the process's totals from the first consumed record
to the end. Each wrapped call costs ~0.3 µs of its own, so these totals run a few µs per event
above an unwrapped run; the shares are what this is for.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson

import worker.pipeline as pipeline_module
import worker.rendering as rendering_module
from worker import gc_policy
from worker.aep.delivery import Deliverer
from worker.config import load_settings
from worker.logs import configure
from worker.pipeline import Pipeline
from worker.runner import run_worker
from worker.schemas import Validator

_spent: dict[str, int] = {}
_clock = time.thread_time_ns
_in_render = [False]
_started: dict[str, float] = {}


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = _clock()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[name] = _spent.get(name, 0) + _clock() - t

    return wrapper


def _instrument() -> None:
    process = Pipeline._process

    def first_process(self: Pipeline, msgs: list[Any]) -> None:
        if not _started:
            _started.update(thread=time.thread_time(), process=time.process_time())
        process(self, msgs)

    Pipeline._process = _timed("pipeline._process (all)", first_process)  # type: ignore[method-assign]
    pipeline_module.decode = _timed("decode (events.decode)", pipeline_module.decode)
    render = rendering_module.render

    def render_flagged(*args: Any) -> bytes:
        _in_render[0] = True
        try:
            return render(*args)
        finally:
            _in_render[0] = False

    pipeline_module.render = _timed("render (all)", render_flagged)  # type: ignore[assignment]
    rendering_module.build_entity = _timed(
        "map (mapping.build_entity)", rendering_module.build_entity
    )
    rendering_module.orjson = SimpleNamespace(  # type: ignore[assignment]
        dumps=_timed("serialize (orjson.dumps of the entity)", orjson.dumps)
    )
    check = Validator.first_violation

    def first_violation(self: Validator, instance: Any) -> Any:
        name = "XDM schema check" if _in_render[0] else "input schema check"
        t = _clock()
        try:
            return check(self, instance)
        finally:
            _spent[name] = _spent.get(name, 0) + _clock() - t

    Validator.first_violation = first_violation  # type: ignore[method-assign]
    for name in ("_offer", "_submit", "_dead_letter", "accepted"):
        setattr(Pipeline, name, _timed(f"pipeline.{name}", getattr(Pipeline, name)))
    Deliverer._on_results = _timed("delivery: 207 results (incl. accepted)",  # type: ignore[method-assign]
                                   Deliverer._on_results)


def main() -> int:
    settings = load_settings()
    configure(settings.log_level)  # JSON logs on stderr, as `capillary-aep run` does
    _instrument()
    gc_policy.tune()
    result = asyncio.run(run_worker(settings, exit_when_drained=True, install_signals=False))
    if result.exit_code != 0 or not _started:
        sys.stderr.write(f"worker exited {result.exit_code}: {result.error}\n")
        return 1
    events = result.metrics.total(result.metrics.consumed)
    main_thread = time.thread_time() - _started["thread"]
    process = time.process_time() - _started["process"]
    stages = {k: round(v / events / 1000, 2) for k, v in sorted(_spent.items(), key=lambda kv: -kv[1])}
    out = {
        "events": events,
        "main_thread_us_per_event": round(main_thread / events * 1e6, 2),
        "process_us_per_event": round(process / events * 1e6, 2),
        "stages_us_per_event": stages,
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
