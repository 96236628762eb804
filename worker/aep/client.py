"""HTTP client for the AEP Data Collection Service (streaming ingestion).

One `aiohttp.ClientSession` per process (`make_session`), shared by the DCS client and the
IMS token provider. `DcsClient.post_batch` / `post_single` never raise for transport trouble:
timeouts, refused or reset connections and token failures come back as a `DcsResponse` with
`status=None` and a `Transport` reason, which `responses.classify` turns into an outcome.
The bearer token is never logged and never leaves this module except in the request header.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from worker.aep.auth import ImsConfigError, ImsUnavailable, TokenProvider
from worker.aep.responses import DcsResponse, Transport
from worker.logs import fresh_logger

__all__ = [
    "DcsClient",
    "HttpSettings",
    "batch_url",
    "inlet_id",
    "make_session",
    "single_url",
]


_log = fresh_logger("worker.aep.client")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Connection pool and TLS settings of the process-wide session."""

    connection_limit: int = 64
    limit_per_host: int = 0
    trust_env: bool = False
    """Honour HTTP(S)_PROXY / NO_PROXY (and ~/.netrc) from the environment."""
    ca_bundle: str | None = None
    """Extra CA certificates (PEM file) trusted in addition to the system store."""
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    keepalive_timeout: float = 30.0
    user_agent: str = "capillary-aep-worker"


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext | None:
    """The system trust store plus `ca_bundle`, or None (aiohttp's default) without one."""
    if ca_bundle is None:
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=ca_bundle)
    return ctx


def make_session(settings: HttpSettings | None = None) -> aiohttp.ClientSession:
    """The pooled session (call from inside the event loop)."""
    s = settings or HttpSettings()
    ctx = ssl_context(s.ca_bundle)
    connector = aiohttp.TCPConnector(
        limit=s.connection_limit,
        limit_per_host=s.limit_per_host,
        keepalive_timeout=s.keepalive_timeout,
        ssl=ctx if ctx is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=s.trust_env,
        timeout=aiohttp.ClientTimeout(total=s.request_timeout, sock_connect=s.connect_timeout),
        headers={"User-Agent": s.user_agent},
        raise_for_status=False,
    )


# -- URLs ----------------------------------------------------------------------------------


def _split_collection(url: str) -> tuple[str, str, bool]:
    """(prefix up to and including '/collection', inlet id, was_batch) of an inlet URL."""
    path = urlsplit(url).path.rstrip("/")
    marker = "/collection/"
    i = path.rfind(marker)
    if i < 0:
        raise ValueError(f"not a DCS inlet URL (expected .../collection/<inlet>): {url!r}")
    rest = path[i + len(marker) :].split("/")
    if len(rest) == 1 and rest[0] and rest[0] != "batch":
        return path[: i + len(marker) - 1], rest[0], False
    if len(rest) == 2 and rest[0] == "batch" and rest[1]:
        return path[: i + len(marker) - 1], rest[1], True
    raise ValueError(f"not a DCS inlet URL (expected .../collection/<inlet>): {url!r}")


def _with_path(url: str, path: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def batch_url(url: str) -> str:
    """`{base}/collection/{inlet}` or `{base}/collection/batch/{inlet}` -> the batch form."""
    prefix, inlet, _ = _split_collection(url)
    return _with_path(url, f"{prefix}/batch/{inlet}")


def single_url(url: str) -> str:
    """Either inlet URL form -> `{base}/collection/{inlet}`."""
    prefix, inlet, _ = _split_collection(url)
    return _with_path(url, f"{prefix}/{inlet}")


def inlet_id(url: str) -> str:
    """The inlet id of either URL form (for logs)."""
    return _split_collection(url)[1]


# -- client --------------------------------------------------------------------------------


class DcsClient:
    """POSTs to DCS inlets; transport failures are returned, not raised."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        tokens: TokenProvider | None = None,
        sandbox_name: str | None = None,
        flow_id: str | None = None,
        request_timeout: float | None = None,
        own_session: bool = False,
    ) -> None:
        self.session = session
        self.tokens = tokens
        self.sandbox_name = sandbox_name
        self.flow_id = flow_id
        self.request_timeout = request_timeout
        self._own_session = own_session
        self.requests = 0
        self.transport_errors = 0

    @classmethod
    def create(
        cls,
        http: HttpSettings | None = None,
        *,
        tokens: TokenProvider | None = None,
        sandbox_name: str | None = None,
        flow_id: str | None = None,
    ) -> DcsClient:
        """A client owning its own session (closed by `close()`)."""
        return cls(
            make_session(http),
            tokens=tokens,
            sandbox_name=sandbox_name,
            flow_id=flow_id,
            own_session=True,
        )

    async def close(self) -> None:
        if self._own_session and not self.session.closed:
            await self.session.close()

    def __repr__(self) -> str:
        return (
            f"DcsClient(sandbox_name={self.sandbox_name!r}, flow_id={self.flow_id!r}, "
            f"authenticated={self.tokens is not None})"
        )

    async def post_batch(
        self,
        url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse:
        """POST a `{"messages": [...]}` body to the inlet's batch endpoint."""
        return await self._post(batch_url, url, body, extra_headers, authenticated, request_timeout)

    async def post_single(
        self,
        url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse:
        """POST one message to the inlet's single-message endpoint."""
        return await self._post(
            single_url, url, body, extra_headers, authenticated, request_timeout
        )

    async def _post(
        self,
        endpoint: Callable[[str], str],
        inlet_url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None,
        authenticated: bool | None,
        request_timeout: float | None,
    ) -> DcsResponse:
        started = time.monotonic()
        try:
            url = endpoint(inlet_url)
        except ValueError as e:
            return DcsResponse(None, transport=Transport.INVALID_URL, detail=str(e))
        headers = {"Content-Type": "application/json"}
        if self.flow_id:
            headers["x-adobe-flow-id"] = self.flow_id
        if self.sandbox_name:
            headers["x-sandbox-name"] = self.sandbox_name
        if extra_headers:
            headers.update(extra_headers)

        token: str | None = None
        use_auth = self.tokens is not None if authenticated is None else authenticated
        if use_auth:
            if self.tokens is None:
                return DcsResponse(
                    None,
                    transport=Transport.IMS_CONFIG,
                    detail="authenticated inlet but no IMS credentials configured "
                    "(check aep.client_id / aep.client_secret)",
                )
            try:
                token = await self.tokens.get()
            except ImsConfigError as e:
                return DcsResponse(None, transport=Transport.IMS_CONFIG, detail=str(e))
            except ImsUnavailable as e:
                return DcsResponse(None, transport=Transport.IMS_UNAVAILABLE, detail=str(e))
            headers["Authorization"] = f"Bearer {token}"

        t = request_timeout if request_timeout is not None else self.request_timeout
        kwargs: dict[str, Any] = {}
        if t is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=t)
        self.requests += 1
        try:
            async with self.session.post(
                url, data=body, headers=headers, allow_redirects=False, **kwargs
            ) as resp:
                raw = await resp.read()
                resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except TimeoutError:
            return self._failed(Transport.TIMEOUT, "request timed out", started, url)
        except aiohttp.InvalidURL as e:
            return self._failed(Transport.INVALID_URL, _describe(e), started, url)
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            ConnectionError,
        ) as e:
            return self._failed(Transport.CONNECTION, _describe(e), started, url)
        except (aiohttp.ClientError, OSError) as e:
            return self._failed(Transport.OTHER, _describe(e), started, url)

        if status in (401, 403) and token is not None and self.tokens is not None:
            # Only drops it if still current: a burst of 401s costs one refresh.
            self.tokens.invalidate(token)
        return DcsResponse(status, resp_headers, raw, elapsed=time.monotonic() - started)

    def _failed(self, kind: Transport, detail: str, started: float, url: str) -> DcsResponse:
        self.transport_errors += 1
        elapsed = time.monotonic() - started
        _log().debug("dcs.transport_error", cause=kind.value, detail=detail, url=url)
        return DcsResponse(None, transport=kind, detail=detail, elapsed=elapsed)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__
