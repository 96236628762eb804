"""What a DCS answer means: pure classification of (status, headers, body) into an `Outcome`.

Request level (`Outcome.kind`; the full table with what the deliverer does is in README.md):

    2xx with a per-message `responses` list ...... RESULTS (each message by position)
    200 single-message body (n == 1) ............. RESULTS (one accepted result)
    2xx whose body cannot be mapped .............. RESULTS, every message RETRYABLE + anomaly
    400, 404, other 4xx, 3xx ..................... CONFIG (pause + probe; never dead-letter)
    401, 403 ..................................... AUTH (new token, retry once, then CONFIG-like)
    413 .......................................... TOO_LARGE (split; one message -> rejected)
    408, 429, 502, 503, 504, other 5xx, 1xx ...... RETRYABLE (backoff, Retry-After honoured)
    500 .......................................... SERVER_ERROR (retry, then split to isolate)
    no answer (timeout, connection, IMS down) .... RETRYABLE
    IMS configuration error, invalid inlet URL ... CONFIG

Per message (`ItemResult.kind`), by position in `responses`:

    `xactionId` and no status, or a 2xx status ... ACCEPTED
    `statusCode` / `status` (int or str) 4xx ..... REJECTED (dead-letter), except 408/429
    408, 429, 5xx other than 500 ................. RETRYABLE
    500 .......................................... SERVER_ERROR (isolation, like request 500)
    no usable status and no `xactionId`, unknown
    status, entry not an object, entry missing ... RETRYABLE + anomaly

When the list length differs from the batch, positions are in doubt: entries are still read
by position, but no message is ever rejected on such a response (a would-be `REJECTED`
becomes `RETRYABLE`). Never is anything treated as permanently failed without a clear
per-message 4xx at a trustworthy position.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "DcsResponse",
    "ItemKind",
    "ItemResult",
    "Kind",
    "Outcome",
    "Transport",
    "classify",
    "parse_retry_after",
    "request_kind",
]

REASON_MAX = 300


class Transport(StrEnum):
    """Why there is no HTTP answer."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    IMS_UNAVAILABLE = "ims-unavailable"
    IMS_CONFIG = "ims-config"
    INVALID_URL = "invalid-url"
    OTHER = "client-error"


@dataclass(frozen=True, slots=True)
class DcsResponse:
    """One DCS answer as received: status (None when no answer), headers, raw body.

    `headers` keys are lower-case. `detail` describes a transport failure (never a token).
    """

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    transport: Transport | None = None
    detail: str = ""
    elapsed: float = 0.0

    def header(self, name: str) -> str | None:
        name = name.lower()
        v = self.headers.get(name)
        if v is not None:
            return v
        for k, val in self.headers.items():
            if k.lower() == name:
                return val
        return None


class Kind(StrEnum):
    RESULTS = "results"
    CONFIG = "config"
    AUTH = "auth"
    TOO_LARGE = "too_large"
    RETRYABLE = "retryable"
    SERVER_ERROR = "server_error"


class ItemKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RETRYABLE = "retryable"
    SERVER_ERROR = "server_error"


_ITEM_KINDS = tuple(k.value for k in ItemKind)


@dataclass(slots=True)
class ItemResult:
    """One message's verdict. Read-only by convention: one is made per message of every 207,
    and a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~4x more."""

    kind: ItemKind
    status: int | None = None
    xaction_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    status: int | None
    cause: str
    """Short machine-readable cause: "http-429", "timeout", "connection", "207", ..."""
    reason: str = ""
    """Human-readable explanation (from the body when there is one), truncated."""
    retry_after: float | None = None
    items: tuple[ItemResult, ...] = ()
    batch_id: str | None = None
    request_id: str | None = None
    anomaly: str | None = None
    """Set when the body did not match the batch (count mismatch, unparsable...)."""

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(_ITEM_KINDS, 0)
        for it in self.items:
            out[it.kind] += 1  # a StrEnum member is its value as a dict key (no .value lookup)
        return out


# -- Retry-After ---------------------------------------------------------------------------


def parse_retry_after(
    value: str | None, *, cap: float, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from a `Retry-After` value, or None if absent or unusable.

    Accepts delta-seconds (`"120"`, also `"1.5"`) and an HTTP-date (IMF-fixdate, RFC 850,
    asctime; a date without zone is UTC). A date in the past gives 0. The result is in
    [0, cap]. Negative, non-finite or unparsable values give None (the caller falls back to
    its own backoff).
    """
    if value is None:
        return None
    v = value.strip()
    if not v or len(v) > 64:
        return None
    seconds: float
    if v[0].isdigit() or v[0] in "+-.":
        try:
            seconds = float(v)
        except ValueError:
            return None
        if math.isnan(seconds) or seconds < 0:
            return None
        if math.isinf(seconds):
            return max(0.0, cap)
    else:
        try:
            when = parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            seconds = when.timestamp() - now()
        except (OverflowError, OSError, ValueError):
            return None
    return min(max(0.0, seconds), max(0.0, cap))


# -- classification ------------------------------------------------------------------------


def _status_of(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        s = v.strip()
        if s.isascii() and s.isdigit():  # "²".isdigit() is True, and int("²") raises
            return int(s)
    return None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _reason_of(body: Any) -> str:
    """A short human reason from an error body (DCS, IMS or problem+json shapes)."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for key in ("title", "message", "detail", "error", "error_description"):
        t = _text(body.get(key))
        if t and t not in parts:
            parts.append(t)
    report = body.get("report")
    if isinstance(report, dict):
        t = _text(report.get("message"))
        if t and t not in parts:
            parts.append(t)
    return ": ".join(parts)[:REASON_MAX]


def _item_kind_for_status(code: int) -> ItemKind:
    if 200 <= code < 300:
        return ItemKind.ACCEPTED
    if code == 500:
        return ItemKind.SERVER_ERROR
    if code in (408, 429) or 500 <= code < 600:
        return ItemKind.RETRYABLE
    if 400 <= code < 500:
        return ItemKind.REJECTED
    return ItemKind.RETRYABLE  # 1xx/3xx/garbage per message: not a clear verdict


def _item(entry: Any) -> tuple[ItemResult, bool]:
    """One per-message entry -> (result, anomalous)."""
    if type(entry) is dict and len(entry) == 1:  # the common case: {"xactionId": "..."}
        xid = entry.get("xactionId")
        if type(xid) is str and xid:
            return ItemResult(ItemKind.ACCEPTED, None, xid), False
    if not isinstance(entry, dict):
        return ItemResult(ItemKind.RETRYABLE, reason="response entry is not an object"), True
    xid = _text(entry.get("xactionId"))
    raw = entry.get("statusCode", entry.get("status"))
    code = _status_of(raw)
    reason = _reason_of(entry)
    if raw is not None and code is None:
        return ItemResult(
            ItemKind.RETRYABLE, None, xid, reason or f"unrecognised status {str(raw)[:40]!r}"
        ), True
    if code is None:
        if xid is not None:
            return ItemResult(ItemKind.ACCEPTED, None, xid), False
        return ItemResult(ItemKind.RETRYABLE, None, None, "entry without xactionId or status"), True
    kind = _item_kind_for_status(code)
    anomalous = not (200 <= code < 300 or 400 <= code < 600)
    return ItemResult(kind, code, xid, "" if kind is ItemKind.ACCEPTED else reason), anomalous


def _results(
    status: int,
    body: Any,
    n: int,
    batch_id: str | None,
    request_id: str | None,
    retry_after: float | None,
) -> Outcome:
    cause = f"http-{status}"
    responses = body.get("responses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        xid = _text(body.get("xactionId")) if isinstance(body, dict) else None
        if n == 1 and (xid is not None or status == 200):
            # The single endpoint: 200 {"inletId", "xactionId", "receivedTimeMs"}.
            return Outcome(
                Kind.RESULTS,
                status,
                cause,
                items=(ItemResult(ItemKind.ACCEPTED, status, xid),),
                batch_id=batch_id,
                request_id=request_id,
            )
        items = tuple(
            ItemResult(ItemKind.RETRYABLE, status, None, "no per-message results in response")
            for _ in range(n)
        )
        return Outcome(
            Kind.RESULTS,
            status,
            cause,
            reason="no per-message results",
            items=items,
            batch_id=batch_id,
            request_id=request_id,
            retry_after=retry_after,
            anomaly=f"HTTP {status} without a 'responses' list for {n} message(s)",
        )

    trusted = len(responses) == n
    anomalies: list[str] = []
    if not trusted:
        anomalies.append(f"{len(responses)} result(s) for {n} message(s)")
    out: list[ItemResult] = []
    odd = 0
    for i in range(n):
        if i >= len(responses):
            out.append(ItemResult(ItemKind.RETRYABLE, None, None, "missing from response"))
            continue
        res, bad = _item(responses[i])
        odd += bad
        if not trusted and res.kind is ItemKind.REJECTED:
            res = ItemResult(
                ItemKind.RETRYABLE,
                res.status,
                res.xaction_id,
                f"not rejected: result positions in doubt ({res.reason})"[:REASON_MAX],
            )
        out.append(res)
    if odd:
        anomalies.append(f"{odd} unusable result entr{'y' if odd == 1 else 'ies'}")
    return Outcome(
        Kind.RESULTS,
        status,
        cause,
        items=tuple(out),
        batch_id=batch_id,
        request_id=request_id,
        retry_after=retry_after,
        anomaly="; ".join(anomalies) or None,
    )


_TRANSPORT_KIND = {
    Transport.TIMEOUT: Kind.RETRYABLE,
    Transport.CONNECTION: Kind.RETRYABLE,
    Transport.IMS_UNAVAILABLE: Kind.RETRYABLE,
    Transport.OTHER: Kind.RETRYABLE,
    Transport.IMS_CONFIG: Kind.CONFIG,
    Transport.INVALID_URL: Kind.CONFIG,
}


def request_kind(status: int) -> Kind:
    """The request-level kind of a non-2xx HTTP status (see the module table)."""
    if status in (401, 403):
        return Kind.AUTH
    if status == 413:
        return Kind.TOO_LARGE
    if status == 500:
        return Kind.SERVER_ERROR
    if status in (408, 429) or status >= 500:
        return Kind.RETRYABLE
    if 300 <= status < 500:
        return Kind.CONFIG
    return Kind.RETRYABLE  # 1xx or nonsense


def classify(
    resp: DcsResponse,
    n_messages: int,
    *,
    retry_after_cap: float = 300.0,
    now: Callable[[], float] = time.time,
) -> Outcome:
    """Classify one DCS answer to a request carrying `n_messages` messages."""
    request_id = resp.header("x-request-id")
    if resp.status is None:
        transport = resp.transport or Transport.OTHER
        return Outcome(
            _TRANSPORT_KIND[transport],
            None,
            transport.value,
            reason=resp.detail[:REASON_MAX],
            request_id=request_id,
        )
    status = resp.status
    body: Any
    try:
        body = orjson.loads(resp.body) if resp.body else None
    except orjson.JSONDecodeError:
        body = None
    batch_id = _text(body.get("batchId")) if isinstance(body, dict) else None
    retry_after = parse_retry_after(resp.header("retry-after"), cap=retry_after_cap, now=now)

    if 200 <= status < 300:
        return _results(status, body, n_messages, batch_id, request_id, retry_after)

    kind = request_kind(status)
    reason = _reason_of(body)
    if not reason and resp.body and body is None:
        reason = resp.body[:120].decode("utf-8", "replace")
    return Outcome(
        kind,
        status,
        f"http-{status}",
        reason=reason or f"HTTP {status}",
        retry_after=retry_after,
        batch_id=batch_id,
        request_id=request_id,
    )
