"""Adobe IMS access tokens (OAuth server-to-server, client credentials), cached and shared.

`TokenProvider.get()` returns a cached token. Ahead of expiry (at `refresh_ratio` of its
lifetime) one background refresh starts while callers keep the still-valid token; once the
token is expired or invalidated, callers wait on that same single refresh (single-flight:
one IMS request at a time however many requests are in flight).

Errors are split by what the caller can do about them:

- `ImsConfigError`: IMS refused the credentials or the request (`invalid_client`,
  `unauthorized_client`, `invalid_scope`, any 400/401/403/404...). Retrying does not help; the
  message names the setting to check. Before raising, the optional `reload_secret` hook is
  called once and the request retried (a rotated secret in a mounted file).
- `ImsUnavailable`: 5xx, 429, timeouts, connection errors that persisted through a bounded
  number of jittered exponential retries. The caller pauses and tries again later.

The client secret is a `SecretStr` or a callable returning one (or a str), read on every
request; it never appears in logs, reprs or exception messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlparse

import aiohttp
import orjson
from pydantic import SecretStr

from worker.logs import fresh_logger

__all__ = [
    "ImsConfigError",
    "ImsError",
    "ImsUnavailable",
    "SecretSource",
    "TokenProvider",
]


_log = fresh_logger("worker.aep.auth")


SecretSource = SecretStr | Callable[[], str | SecretStr | None]
"""The client secret, or a callable read on every token request (e.g. a mounted file)."""

MS_THRESHOLD = 1_000_000
"""An `expires_in` above this is milliseconds (legacy `/ims/token`), not seconds."""

_CONFIG_ERRORS = {
    "invalid_client": ("client_id", "IMS does not recognise the client id / secret pair"),
    "unauthorized_client": ("client_id", "the client is not allowed the client_credentials grant"),
    "invalid_scope": ("scopes", "IMS rejected the requested scopes"),
    "invalid_grant": ("client_secret", "IMS rejected the grant"),
    "unsupported_grant_type": ("ims_url", "this IMS endpoint does not support client_credentials"),
    "invalid_request": ("ims_url", "IMS rejected the token request"),
}

_SETTING_NAMES = {
    "client_id": "aep.client_id and aep.client_secret / aep.client_secret_file",
    "client_secret": "aep.client_secret / aep.client_secret_file",
    "scopes": "aep.scopes",
    "ims_url": "aep.ims_url",
}


class ImsError(Exception):
    """Base of the token errors."""


class ImsConfigError(ImsError):
    """IMS refused the request: a configuration problem. `setting` names what to check."""

    def __init__(self, message: str, *, setting: str, error: str | None, status: int | None):
        super().__init__(message)
        self.setting = setting
        self.error = error
        self.status = status


class ImsUnavailable(ImsError):
    """IMS could not be reached or kept failing transiently; try again later."""


class _Transient(Exception):
    """One failed attempt worth retrying (internal)."""


def _is_legacy(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/ims/token")


class TokenProvider:
    """Client-credentials tokens from IMS: cached, refreshed ahead of expiry, single-flight."""

    def __init__(
        self,
        *,
        ims_url: str,
        client_id: str,
        client_secret: SecretSource,
        scope: str | Sequence[str],
        session: aiohttp.ClientSession | None = None,
        reload_secret: Callable[[], Awaitable[None] | None] | None = None,
        refresh_ratio: float = 0.8,
        expires_in_unit: Literal["auto", "s", "ms"] = "auto",
        max_attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        request_timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < refresh_ratio <= 1:
            raise ValueError("refresh_ratio must be in (0, 1]")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.ims_url = ims_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope if isinstance(scope, str) else ",".join(scope)
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self._reload_secret = reload_secret
        self._refresh_ratio = refresh_ratio
        if expires_in_unit == "auto":
            expires_in_unit = "ms" if _is_legacy(ims_url) else "s"
            self._unit_auto = True
        else:
            self._unit_auto = False
        self._unit = expires_in_unit
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = request_timeout
        self._sleep = sleep
        self._rng = rng
        self._clock = clock

        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._inflight: asyncio.Task[str] | None = None

        # Counters (plain attributes; metrics read them).
        self.refreshes = 0
        """Tokens obtained."""
        self.failures = 0
        """Failed IMS attempts (each retry counts)."""
        self.config_errors = 0
        """ImsConfigError raised."""
        self.invalidations = 0
        """Tokens dropped after a 401/403 from DCS."""

    @classmethod
    def from_settings(
        cls, aep: Any, session: aiohttp.ClientSession | None = None, **kw: Any
    ) -> TokenProvider:
        """From `worker.config.AepSettings` (duck-typed). The secret is read through
        `aep.secret_value()` on every token request, so a rotated secret file is picked up."""
        if not aep.client_id:
            raise ImsConfigError(
                "aep.client_id is not set", setting="client_id", error=None, status=None
            )
        return cls(
            ims_url=aep.ims_url,
            client_id=aep.client_id,
            client_secret=aep.secret_value,
            scope=aep.scopes,
            session=session,
            **kw,
        )

    def __repr__(self) -> str:
        state = "cached" if self._token else "none"
        return (
            f"TokenProvider(ims_url={self.ims_url!r}, client_id={self.client_id!r}, token={state})"
        )

    # -- public API -----------------------------------------------------------------------

    async def get(self) -> str:
        """A valid access token; refreshes (once, shared) when needed."""
        now = self._clock()
        token = self._token
        if token is not None and now < self._expires_at:
            if now >= self._refresh_at and self._inflight is None:
                # Ahead of expiry: refresh in the background, keep serving the current token.
                # After a failed one, wait a while before the next (not one per request).
                self._refresh_at = now + min(30.0, max(1.0, (self._expires_at - now) / 4))
                self._start_refresh(background=True)
            return token
        task = self._inflight or self._start_refresh(background=False)
        # shield: a cancelled caller must not cancel the refresh shared with other callers.
        return await asyncio.shield(task)

    async def headers(self) -> dict[str, str]:
        """`{"Authorization": "Bearer <token>"}`."""
        return {"Authorization": f"Bearer {await self.get()}"}

    def invalidate(self, token: str) -> bool:
        """Drop `token` (after a 401/403) so the next get() refreshes.

        Does nothing if `token` is no longer the current one (another caller already
        refreshed): a burst of 401s costs one refresh, not one each. Returns True if dropped.
        """
        if token != self._token:
            return False
        self._token = None
        self._expires_at = self._refresh_at = 0.0
        self.invalidations += 1
        _log().info("ims.token.invalidated", ims_url=self.ims_url)
        return True

    @property
    def has_token(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at

    async def close(self) -> None:
        """Cancel a refresh in flight; close the session this provider created itself."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    # -- refresh --------------------------------------------------------------------------

    def _start_refresh(self, *, background: bool) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._refresh())
        self._inflight = task

        def done(t: asyncio.Task[str]) -> None:
            if self._inflight is t:
                self._inflight = None
            if t.cancelled():
                return
            exc = t.exception()  # marks it retrieved
            if exc is not None and background:
                _log().warning(
                    "ims.token.background_refresh_failed",
                    ims_url=self.ims_url,
                    error=str(exc),
                    error_type=type(exc).__name__,
                )

        task.add_done_callback(done)
        return task

    async def _refresh(self) -> str:
        reloaded = False
        while True:
            try:
                token, lifetime = await self._fetch_with_retries()
            except ImsConfigError:
                if self._reload_secret is None or reloaded:
                    self.config_errors += 1
                    raise
                reloaded = True
                _log().warning("ims.token.reloading_secret", ims_url=self.ims_url)
                res = self._reload_secret()
                if inspect.isawaitable(res):
                    await res
                continue
            now = self._clock()
            self._token = token
            self._refresh_at = now + lifetime * self._refresh_ratio
            # Treat the token as expired slightly early (requests in flight, clock skew).
            self._expires_at = now + lifetime - min(30.0, lifetime * 0.1)
            self.refreshes += 1
            _log().info(
                "ims.token.refreshed", ims_url=self.ims_url, expires_in_s=round(lifetime, 3)
            )
            return token

    def _delay(self, attempt: int) -> float:
        cap = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return float(self._rng() * cap)

    async def _fetch_with_retries(self) -> tuple[str, float]:
        last = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await self._fetch_once()
            except _Transient as e:
                self.failures += 1
                last = str(e)
                if attempt == self._max_attempts:
                    break
                delay = self._delay(attempt)
                _log().warning(
                    "ims.token.retry",
                    ims_url=self.ims_url,
                    attempt=attempt,
                    error=last,
                    delay_s=round(delay, 3),
                )
                await self._sleep(delay)
            except ImsConfigError:
                self.failures += 1
                raise
        raise ImsUnavailable(
            f"IMS at {self.ims_url} unavailable after {self._max_attempts} attempts: {last}"
        )

    def _secret_value(self) -> str:
        src = self._secret
        value = src if isinstance(src, SecretStr) else src()
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value:
            raise ImsConfigError(
                "IMS client secret is empty: check aep.client_secret / aep.client_secret_file",
                setting="client_secret",
                error=None,
                status=None,
            )
        return value

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession()
        return self._own_session

    async def _fetch_once(self) -> tuple[str, float]:
        secret = self._secret_value()
        form = {
            "client_id": self.client_id,
            "client_secret": secret,
            "grant_type": "client_credentials",
            "scope": self.scope,
        }
        session = self._session_for_request()
        try:
            async with session.post(
                self.ims_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError:
            raise _Transient(f"timeout after {self._timeout}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise _Transient(f"{type(e).__name__}: {self._scrub(str(e), secret)}") from None

        body = self._parse(raw)
        if status == 200:
            return self._token_from(body, secret)
        error = body.get("error") if isinstance(body.get("error"), str) else None
        desc_raw = body.get("error_description")
        desc = self._scrub(desc_raw if isinstance(desc_raw, str) else "", secret)
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status}" + (f" {error}" if error else ""))
        setting, what = _CONFIG_ERRORS.get(error or "", ("", ""))
        if not setting:
            setting = {400: "client_id", 401: "client_id", 403: "client_id"}.get(status, "ims_url")
            what = f"IMS answered HTTP {status}"
        msg = (
            f"{what} (HTTP {status}{', ' + error if error else ''}"
            f"{': ' + desc if desc else ''}); check {_SETTING_NAMES[setting]}"
            f" (client_id={self.client_id!r}, ims_url={self.ims_url!r})"
        )
        _log().error(
            "ims.token.config_error",
            ims_url=self.ims_url,
            status=status,
            error=error,
            setting=setting,
        )
        raise ImsConfigError(msg, setting=setting, error=error, status=status)

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return {}
        return body if isinstance(body, dict) else {}

    def _token_from(self, body: dict[str, Any], secret: str) -> tuple[str, float]:
        token = body.get("access_token")
        expires = body.get("expires_in")
        if isinstance(expires, str):
            try:
                expires = float(expires)
            except ValueError:
                expires = None
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(expires, int | float)
            or isinstance(expires, bool)
            or expires <= 0
        ):
            raise _Transient("HTTP 200 without access_token/expires_in")
        seconds = float(expires)
        if self._unit == "ms" or (self._unit_auto and seconds > MS_THRESHOLD):
            seconds /= 1000.0
        return token, seconds

    @staticmethod
    def _scrub(text: str, secret: str) -> str:
        if secret and secret in text:
            text = text.replace(secret, "***")
        return text[:300]
