"""How big each chaos scenario is: ``SHORT`` in ``make test``, ``FULL`` in ``make chaos``.

The full sizes are the ones the issue states (100,000 events and at least 10 SIGKILLs, a
60-second AEP outage, tokens expiring every 20 s...). The short ones keep every fault but
shrink counts and outages so the ten scenarios together stay within a few minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    name: str
    timeout_s: float  # per scenario (pytest-timeout)
    # 1. crash loop
    crash_events: int
    crash_kills: int
    crash_life_s: tuple[float, float]  # killed this long (random) after its assignment
    crash_latency_ms: float  # AEP answers this slowly while the kills go on
    # 2. AEP faults
    fault_events: int
    # 3. AEP outage
    outage_events: int
    outage_s: float
    # 4. broker restart
    broker_events: int
    broker_down_s: float
    # 5. auth churn
    auth_events: int
    token_lifetime_s: float
    auth_403_burst: int
    # 6. poison corpus
    poison_valid: int
    poison_rounds: int  # copies of the whole corpus spread through the valid events
    # 7. DLQ unavailable
    dlq_events: int
    dlq_down_s: float
    # 8. rebalance storm
    storm_events: int
    storm_changes: int
    storm_interval_s: tuple[float, float]
    # 9. graceful stop under load
    sigterm_events: int
    sigterm_drain_s: float
    # 10. bad deploy guard
    guard_events: int
    guard_max_consecutive: int


SHORT = Sizes(
    name="short",
    timeout_s=150,
    crash_events=3_000,
    crash_kills=3,
    crash_life_s=(0.5, 3.0),
    crash_latency_ms=50,
    fault_events=2_000,
    outage_events=1_500,
    outage_s=4,
    broker_events=1_500,
    broker_down_s=1,
    auth_events=1_000,
    token_lifetime_s=1.5,
    auth_403_burst=5,
    poison_valid=1_000,
    poison_rounds=1,
    dlq_events=600,
    dlq_down_s=2,
    storm_events=2_000,
    storm_changes=4,
    storm_interval_s=(1.5, 3.0),
    sigterm_events=8_000,
    sigterm_drain_s=2,
    guard_events=600,
    guard_max_consecutive=50,
)

FULL = Sizes(
    name="full",
    timeout_s=1_200,
    crash_events=100_000,
    crash_kills=12,
    crash_life_s=(0.5, 8.0),
    crash_latency_ms=50,
    fault_events=20_000,
    outage_events=12_000,
    outage_s=60,
    broker_events=20_000,
    broker_down_s=15,
    auth_events=10_000,
    token_lifetime_s=20,
    auth_403_burst=20,
    poison_valid=10_000,
    poison_rounds=5,
    dlq_events=5_000,
    dlq_down_s=20,
    storm_events=20_000,
    storm_changes=20,
    storm_interval_s=(2.0, 5.0),
    sigterm_events=40_000,
    sigterm_drain_s=5,
    guard_events=5_000,
    guard_max_consecutive=200,
)

ENV = "CHAOS_FULL"


def select(full_option: bool) -> Sizes:
    """``--chaos-full`` or ``CHAOS_FULL=1`` selects the full sizes."""
    env = os.environ.get(ENV, "").strip().lower()
    return FULL if full_option or env in ("1", "true", "yes") else SHORT
