"""What the worker reads from librdkafka's statistics (``stats_cb``, every
``statistics.interval.ms``): consumer lag per assigned partition and whether any broker
connection is up (the evidence that SASL authentication works again).

Lag is the end of the partition (last stable offset, else high watermark) minus the group's
committed offset: the worker commits only finished records, so this counts everything not yet
safely delivered. A partition with no committed offset yet counts from the log start when the
group starts at ``earliest``, and from the consumer's position when it starts at ``latest``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

TP = tuple[str, int]
_INVALID = -1001  # librdkafka's "no offset"


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    lags: dict[TP, int] = field(default_factory=dict)
    brokers_up: bool = False
    broker_states: dict[str, str] = field(default_factory=dict)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID


def parse_statistics(raw: str | bytes, start_position: str = "earliest") -> ConsumerStatistics:
    """Parse one statistics JSON document; unusable parts are skipped, never raised on."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ConsumerStatistics()
    if not isinstance(doc, dict):
        return ConsumerStatistics()
    states: dict[str, str] = {}
    brokers = doc.get("brokers")
    if isinstance(brokers, dict):
        for name, b in brokers.items():
            if isinstance(b, dict) and isinstance(b.get("state"), str):
                states[str(name)] = b["state"]
    lags: dict[TP, int] = {}
    topics = doc.get("topics")
    if isinstance(topics, dict):
        for topic, t in topics.items():
            parts = t.get("partitions") if isinstance(t, dict) else None
            if not isinstance(parts, dict):
                continue
            for p in parts.values():
                lag = _partition_lag(p, start_position)
                if lag is not None:
                    lags[(str(topic), p["partition"])] = lag
    return ConsumerStatistics(lags, any(s == "UP" for s in states.values()), states)


def _partition_lag(p: Any, start_position: str) -> int | None:
    if not isinstance(p, dict) or not p.get("desired") or _int(p.get("partition")) < 0:
        return None
    end = _int(p.get("ls_offset"))
    if end < 0:
        end = _int(p.get("hi_offset"))
    if end < 0:
        return None
    base = _int(p.get("committed_offset"))
    if base < 0:
        base = _int(p.get("lo_offset" if start_position == "earliest" else "app_offset"))
    if base < 0:
        return None
    return max(end - base, 0)


def statistics_handler(
    on_lags: Callable[[dict[TP, int]], None],
    on_brokers: Callable[[bool], None],
    start_position: str = "earliest",
) -> Callable[[str], None]:
    """A ``stats_cb``: runs on the consumer's thread, inside ``consume``; never raises."""

    def on_stats(raw: str) -> None:
        stats = parse_statistics(raw, start_position)
        on_lags(stats.lags)
        on_brokers(stats.brokers_up)

    return on_stats
