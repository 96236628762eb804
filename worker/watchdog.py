"""Once a second on the worker's loop: refresh gauges and probe state, and stop the worker when
Kafka keeps refusing its credentials.

It also proves the loop turns (``HealthState.beat``): the probe thread reports a loop that
stopped turning as not live, with that reason, instead of timing out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from worker.health import HealthState
from worker.logs import get_logger
from worker.metrics import TokenCounters
from worker.secret_rotation import SaslCredentials

log = get_logger(__name__)


class Observed(Protocol):
    def observe(self) -> None: ...


async def watch(
    health: HealthState,
    pipeline: Observed,
    tokens: Iterable[TokenCounters],
    sasl: SaslCredentials | None,
    on_give_up: Callable[[str], None],
    interval_s: float = 1.0,
) -> None:
    providers = tuple(tokens)
    while True:
        health.beat()
        try:
            # Ready needs a token once obtained from each credential set; a later refresh
            # failure shows as blocked delivery instead.
            health.token_ok = all(p.refreshes > 0 for p in providers)
            if sasl is not None and sasl.enabled:
                health.kafka_auth = sasl.failing()
                why = sasl.gave_up()
                if why is not None:
                    on_give_up(why)
            pipeline.observe()
        except Exception:  # a bug here must not silence the beat (the probe would say wedged)
            log.exception("watchdog_tick_failed")
        await asyncio.sleep(interval_s)
