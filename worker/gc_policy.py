"""Garbage-collector settings for the long-running worker process (``capillary-aep run``).

The hot path allocates tens of container objects per record (the decoded JSON tree, the XDM
entity) that die young and never form cycles, so reference counting frees them. With the
default thresholds (700, 10, 10) they still trigger a young collection every few dozen records
and promote the in-flight state, and every full collection re-scans the hundreds of thousands
of long-lived objects created at import (pydantic, aiohttp, schemas...). Profiled: ~6% of the
worker's CPU in ``gc_collect_main``.

``tune()`` freezes everything that exists once the process has started (moved out of the
collected generations: it is never garbage) and makes young collections rarer. Cyclic garbage
is still collected, only in larger steps; memory stays bounded by the in-flight caps.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young collections (default 700)


def tune() -> None:
    """Call once, after start-up, in a process that runs the worker and nothing else."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
