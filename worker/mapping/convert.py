"""Value conversions shared by the mappers: ids, text, money, instants, dates (pure, small).

Every helper returns ``None`` for "nothing usable" (absent, null, empty, placeholder): the
mappers put the result in the entity as is and ``prune`` removes the ``None`` afterwards. The
``required_*`` variants raise :class:`MappingError` instead. No helper quotes a value in an error.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from typing import Any, Final

from worker.mapping.context import MappingContext, MappingError

_UTC: Final = UTC
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
    if kind is float and value == value and value not in (float("inf"), float("-inf")):
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


_SECONDS: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS" (a bounded memo)
_SECONDS_MAX: Final = 65_536


def rfc3339_ms(epoch_ms: int) -> str:
    """``1720439149123`` -> ``"2024-07-08T11:45:49.123Z"`` (UTC, millisecond precision).

    For instants known to be in range (``CanonicalEvent.created_at_ms`` is checked by decode).
    Events of a batch are close in time, so the formatted second is memoised (a pure cache).
    """
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{millis:03d}Z"


def _from_ms(epoch_ms: int) -> str | None:
    if not 0 <= epoch_ms < MAX_EPOCH_MS:
        return None
    return rfc3339_ms(epoch_ms)


def instant(value: Any, ctx: MappingContext) -> str | None:
    """A business instant as RFC 3339 UTC with milliseconds.

    Accepts epoch milliseconds (int or integral float) and ISO 8601 date-times; a date-time
    without an offset is local time in ``ctx.source_timezone``. Returns None when unusable.
    """
    kind = type(value)
    if kind is int:
        return _from_ms(value)
    if kind is float:
        if value == value and abs(value) < MAX_EPOCH_MS:
            return _from_ms(int(value))
        return None
    if kind is not str:
        return None
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
        utc = parsed.astimezone(_UTC).replace(tzinfo=None)
    except OverflowError:
        return None
    return utc.isoformat(timespec="milliseconds") + "Z"


def required_instant(value: Any, ctx: MappingContext, path: str) -> str:
    found = instant(value, ctx)
    if found is None:
        if value is None or value == "":
            raise MappingError("missing-field", path, "a date-time is required here")
        raise MappingError("bad-value", path, "not epoch milliseconds or an ISO 8601 date-time")
    return found


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
    if type(epoch_ms) is not int:
        return None
    try:
        moment = datetime.fromtimestamp(epoch_ms / 1000, ctx.zone)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.date().isoformat()
