"""Points in time and durations as operators type them: ISO 8601, parsed strictly (pure).

A date-time must say its time zone (``Z`` or ``+05:30``): at 3 a.m. a replay from "02:00" in
the wrong zone replays the wrong hours, so a naive time is refused rather than guessed.
Durations are ISO 8601 ``PnW``/``PnDTnHnMnS`` (as ``kafka-consumer-groups --by-duration``);
years and months are refused because their length depends on the calendar.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class TimeSpecError(ValueError):
    """The text is not a usable date-time or duration; the message says what is expected."""


def parse_duration(text: str) -> timedelta:
    """``PT6H``, ``P1DT30M``, ``PT90S``, ``P2W`` -> timedelta (strictly positive)."""
    raw = text.strip().upper()
    match = _DURATION.match(raw)
    if match is None or raw in ("P", "PT") or raw.endswith("T"):
        if re.match(r"^P(\d+Y|\d+M)", raw):
            raise TimeSpecError(
                f"duration {text!r}: years and months are ambiguous; use days (P30D) or hours"
            )
        raise TimeSpecError(
            f"duration {text!r} is not ISO 8601 (expected e.g. PT6H, PT30M, P1D, P1DT12H)"
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    delta = timedelta(**parts)
    if delta <= timedelta(0):
        raise TimeSpecError(f"duration {text!r} must be longer than zero")
    return delta


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 date-time with an explicit zone -> aware datetime."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise TimeSpecError(
            f"date-time {text!r} is not ISO 8601 (expected e.g. 2024-07-01T06:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise TimeSpecError(
            f"date-time {text!r} has no time zone: add Z (UTC) or an offset such as +05:30"
        )
    return value


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """A date-time, or a duration meaning that long before ``now`` (``PT6H`` = six hours ago)."""
    raw = text.strip()
    if raw.upper().startswith("P"):
        return (now or datetime.now(UTC)) - parse_duration(raw)
    return parse_datetime(raw)


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string (``-`` for none)."""
    if ms is None or ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
