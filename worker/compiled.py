"""Whether the per-record modules run compiled (mypyc, ``deploy/mypyc/build.py``) or as Python.

The container image compiles them; a source checkout runs them as Python unless started from
the compiled copy (``make compiled``). Both behave the same (the test suite runs against both);
the compiled build needs about a third less CPU per event. The build reads ``HOT_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Final

__all__ = ["HOT_MODULES", "build_kind", "compiled_modules"]

# The per-record path: decode, mapping, rendering, routing, the pipeline's loops, batching,
# delivery and 207 parsing, profile ordering, the DLQ guard, the latency store. Left out:
# offsets (compiled, its tuple keys are rebuilt per call: finish measured 264 -> 356 ns),
# metrics (its collectors subclass prometheus-client's classes, which a native class cannot),
# and the I/O around the per-record path (asyncio, aiohttp and confluent-kafka are C already).
HOT_MODULES: Final[tuple[str, ...]] = (
    "worker.events",
    "worker.rendering",
    "worker.routing",
    "worker.profile_order",
    "worker.aep.responses",
    "worker.mapping",
    "worker.mapping.commerce",
    "worker.mapping.context",
    "worker.mapping.convert",
    "worker.mapping.customer",
    "worker.mapping.identity",
    "worker.mapping.points",
    "worker.mapping.promotion",
    "worker.mapping.raw",
    "worker.mapping.reward",
    "worker.mapping.tier",
    "worker.pipeline",
    "worker.dlq_guard",
    "worker.batching",
    "worker.accepted_store",
    "worker.aep.delivery",
)


def compiled_modules() -> list[str]:
    """The hot modules loaded from an extension module rather than a ``.py`` file."""
    out = []
    for name in HOT_MODULES:
        path = getattr(importlib.import_module(name), "__file__", None) or ""
        if path.endswith(".so"):
            out.append(name)
    return out


def build_kind() -> str:
    """``mypyc`` (all hot modules compiled), ``python`` (none) or ``partial``."""
    n = len(compiled_modules())
    return "python" if n == 0 else "mypyc" if n == len(HOT_MODULES) else "partial"
