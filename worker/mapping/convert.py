"""Value conversions shared by the mappers: ids, text, money, instants, dates (pure, small).

Every helper returns ``None`` for "nothing usable" (absent, null, empty, placeholder): the
mappers put the result in the entity as is and ``prune`` removes the ``None`` afterwards. The
``required_*`` variants raise :class:`MappingError` instead. No helper quotes a value in an error.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from worker.events import CanonicalEvent
from worker.mapping.context import MappingContext, MappingError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_EPOCH_MS: Final = 253_402_300_800_000  # 10000-01-01T00:00:00Z


def text(value: Any) -> str | None:
    """A stripped non-empty string; integers (and integral floats) are formatted as integers."""
    kind = type(value)
    if kind is str:
        return value.strip() or None
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    return None


def id_text(value: Any) -> str | None:
    """An id as text: ``379499720.0`` -> ``"379499720"``, ``" 42 "`` -> ``"42"``."""
    return text(value)


def id_int(value: Any) -> int | None:
    """An id as an integer (for XDM integer fields): ints, integral floats, digit strings."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float and value.is_integer():
        return int(value)
    if kind is str:
        stripped = value.strip()
        if stripped.isdigit() and stripped.isascii():
            return int(stripped)
    return None


def number(value: Any) -> float | int | None:
    """A finite JSON number (bools are not numbers)."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float and value - value == 0.0:  # finite: inf - inf and nan - nan are nan
        return value  # type: ignore[no-any-return]
    return None


def obj(value: Any) -> dict[str, Any]:
    """The value if it is an object, else an empty one (``null`` where an object is expected)."""
    return value if type(value) is dict else {}


def items(value: Any) -> list[Any]:
    """The value if it is an array, else an empty one."""
    return value if type(value) is list else []


def currency(value: Any) -> str | None:
    """ISO 4217 code, upper-cased; anything that is not three letters is dropped."""
    code = text(value)
    if code is None or len(code) != 3 or not code.isalpha() or not code.isascii():
        return None
    return code.upper()


_MINUTES: dict[int, str] = {}  # epoch minute -> "YYYY-MM-DDTHH:MM:" (a bounded memo)
_MINUTES_MAX: Final = 4096  # ~3 days of minutes; a bigger memo grew with every new minute
_SECONDS_TEXT: Final = tuple(f"{n:02d}" for n in range(60))
_MILLIS_TEXT: Final = tuple(f".{n:03d}Z" for n in range(1000))
# The last instant formatted and its text (one tuple: replaced atomically): an event formats
# its createdAt for several fields, and again for each target it feeds.
_last: tuple[int, str] = (-1, "")


def rfc3339_ms(epoch_ms: int) -> str:
    """``1720439149123`` -> ``"2024-07-08T11:45:49.123Z"`` (UTC, millisecond precision).

    For instants known to be in range (``CanonicalEvent.created_at_ms`` is checked by decode).
    Events of a batch are close in time, so the formatted minute is memoised, and so is the
    last instant (pure caches).
    """
    global _last
    last = _last
    if last[0] == epoch_ms:
        return last[1]
    minutes, millis = divmod(epoch_ms, 60_000)
    prefix = _MINUTES.get(minutes)
    if prefix is None:
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        prefix = _MINUTES[minutes] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minutes * 60))
    seconds, millis = divmod(millis, 1000)
    text = prefix + _SECONDS_TEXT[seconds] + _MILLIS_TEXT[millis]
    _last = (epoch_ms, text)
    return text


def _from_ms(epoch_ms: int) -> str | None:
    if not 0 <= epoch_ms < MAX_EPOCH_MS:
        return None
    return rfc3339_ms(epoch_ms)


def instant_ms(value: Any, ctx: MappingContext) -> int | None:
    """A business instant as epoch milliseconds (1970 to 9999), or None when unusable.

    Accepts epoch milliseconds (int or integral float) and ISO 8601 date-times; a date-time
    without an offset is local time in ``ctx.source_timezone``.
    """
    kind = type(value)
    if kind is int:
        millis: int = value
    elif kind is float:
        if not (value == value and abs(value) < MAX_EPOCH_MS):
            return None
        millis = int(value)
    elif kind is str:
        raw = value.strip()
        if len(raw) < 16 or not _DATE_RE.match(raw):
            return None
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=ctx.zone)
        try:
            delta = parsed - _EPOCH
        except OverflowError:
            return None
        millis = delta // _ONE_MS
    else:
        return None
    return millis if 0 <= millis < MAX_EPOCH_MS else None


def instant(value: Any, ctx: MappingContext) -> str | None:
    """A business instant as RFC 3339 UTC with milliseconds (see :func:`instant_ms`)."""
    millis = instant_ms(value, ctx)
    return None if millis is None else rfc3339_ms(millis)


def required_instant(value: Any, ctx: MappingContext, path: str) -> str:
    return rfc3339_ms(required_instant_ms(value, ctx, path))


def required_instant_ms(value: Any, ctx: MappingContext, path: str) -> int:
    found = instant_ms(value, ctx)
    if found is None:
        if value is None or value == "":
            raise MappingError("missing-field", path, "a date-time is required here")
        raise MappingError(
            "bad-value", path, "not epoch milliseconds or an ISO 8601 date-time (1970 to 9999)"
        )
    return found


def event_timestamp(business_ms: int, created_ms: int, ctx: MappingContext) -> str:
    """An ExperienceEvent ``timestamp``: the business time, unless it lies in the future.

    AEP wants timestamps in the past. "The future" is measured from the Kafka record's
    timestamp when the pipeline set one (``ctx.clamps.record``; never later than now), else
    from now: so a redelivery or a replay, any time later, maps the record the same way. A
    business time later than that + ``max_future_skew_ms`` (a device clock, a wrong time zone)
    is clamped to Capillary's ``createdAt``; when ``createdAt`` itself is that far ahead, to
    the reference instant. Each clamp is counted in ``ctx.clamps`` for the pipeline's metric.
    """
    now_ms = ref_ms = int(ctx.clock() * 1000)
    record = ctx.clamps.record
    if record is not None:
        ts_type, ts = record.timestamp()
        if ts_type != 0 and 0 < ts < now_ms:  # type 0: TIMESTAMP_NOT_AVAILABLE
            ref_ms = ts
    limit = ref_ms + ctx.max_future_skew_ms
    if business_ms <= limit:
        return rfc3339_ms(business_ms)
    ctx.clamps.count += 1
    if created_ms <= limit:
        return rfc3339_ms(created_ms)
    return rfc3339_ms(ref_ms)


def business_timestamp(event: CanonicalEvent, ctx: MappingContext) -> str:
    """The ExperienceEvent ``timestamp`` of an event: ``enteredAt`` where the event has one
    (the business time, e.g. a bill's), else ``createdAt``; clamped when in the future."""
    entered = event.data.get("enteredAt")
    if entered is None or entered == "":
        business = event.created_at_ms
    else:
        business = required_instant_ms(entered, ctx, "/enteredAt")
    return event_timestamp(business, event.created_at_ms, ctx)


def calendar_date(value: Any) -> str | None:
    """``"2124-08-19"`` stays as is when it is a real calendar date; placeholders give None."""
    if type(value) is not str:
        return None
    raw = value.strip()
    if len(raw) != 10 or not _DATE_RE.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        return None


def local_date(epoch_ms: Any, ctx: MappingContext) -> str | None:
    """The calendar date of an epoch-milliseconds instant in ``ctx.source_timezone``."""
    if type(epoch_ms) is float and epoch_ms.is_integer():
        epoch_ms = int(epoch_ms)
    if type(epoch_ms) is not int or not 0 <= epoch_ms < MAX_EPOCH_MS:
        return None
    try:
        moment = datetime.fromtimestamp(epoch_ms / 1000, ctx.zone)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.date().isoformat()


def any_date(value: Any, ctx: MappingContext) -> str | None:
    """An XDM date (``YYYY-MM-DD``) from a date string, or the local calendar date (in
    ``ctx.source_timezone``) of an epoch-milliseconds or ISO date-time instant."""
    found = calendar_date(value)
    if found is not None:
        return found
    if type(value) is str:
        millis = instant_ms(value, ctx)
        return None if millis is None else local_date(millis, ctx)
    return local_date(value, ctx)
