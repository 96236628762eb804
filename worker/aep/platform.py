"""A client for AEP's Platform APIs: Catalog (datasets, batches), Schema Registry, Data Access.

Requests go to ``aep.platform_url`` (``https://platform.adobe.io``) with the headers Adobe's
gateway wants: ``Authorization: Bearer <IMS token>``, ``x-api-key`` (the IMS client id),
``x-gw-ims-org-id`` and, when set, ``x-sandbox-name``. Tokens come from the worker's
``TokenProvider`` (a 401 drops the token and the request is tried once more with a new one);
the session follows the worker's conventions (``aep.ca_bundle``, ``aep.trust_env``).

Every failure is a ``PlatformError(status, message)``: ``status`` is the HTTP status, or
``None`` when no answer came (connection refused, timeout, IMS refused the credentials).
Messages never carry the token or the client secret.

    async with PlatformClient.from_settings(settings) as platform:
        ds = await platform.dataset("5ba9452f7de80400007fc52a")
        schema = await platform.schema(ds["schemaRef"]["id"])
        for batch in await platform.failed_batches(ds_id, since_ms):
            rows = await platform.failed_rows(batch.batch_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from worker.aep.auth import ImsConfigError, ImsUnavailable, TokenProvider
from worker.aep.client import HttpSettings, make_session
from worker.config import Settings

__all__ = ["FailedBatch", "PlatformClient", "PlatformError"]

XED_FULL = "application/vnd.adobe.xed-full+json; version=1"
_PAGE = 100
_MAX_PAGES = 100


class PlatformError(Exception):
    """A Platform API call failed: ``status`` (None: no HTTP answer) and a message."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FailedBatch:
    batch_id: str
    dataset_id: str
    created_ms: int
    status: str
    errors: list[str]


def _error_text(raw: bytes) -> str:
    """The useful part of an error body (gateway ``message``, problem ``detail``/``title``)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    if isinstance(doc, dict):
        for key in ("detail", "message", "title", "error_description", "error"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                code = doc.get("error_code") or doc.get("type")
                return f"{value} ({code})" if isinstance(code, str) else value
    return raw[:200].decode(errors="replace")


class PlatformClient:
    """Async context manager; ``from_settings`` builds one for the ``aep`` credentials."""

    def __init__(
        self,
        *,
        base_url: str,
        tokens: TokenProvider,
        org_id: str,
        sandbox_name: str | None = None,
        session: aiohttp.ClientSession | None = None,
        http: HttpSettings | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.api_key = tokens.client_id
        self.org_id = org_id
        self.sandbox_name = sandbox_name
        self._session = session
        self._http = http
        self._own_session: aiohttp.ClientSession | None = None
        self._own_tokens = False
        self._timeout = request_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformClient:
        """The ``aep`` section's credentials, org, sandbox, CA bundle and proxy settings
        (``PlatformError`` without ``aep.client_id``)."""
        aep = settings.aep
        http = HttpSettings(
            trust_env=aep.trust_env,
            ca_bundle=str(aep.ca_bundle) if aep.ca_bundle else None,
            request_timeout=settings.delivery.request_timeout_s,
        )
        try:
            tokens = TokenProvider.from_settings(aep)
        except ImsConfigError as exc:  # no aep.client_id
            raise PlatformError(None, str(exc)) from None
        client = cls(
            base_url=aep.platform_url,
            tokens=tokens,
            org_id=aep.org_id,
            sandbox_name=aep.sandbox_name,
            http=http,
            request_timeout=settings.delivery.request_timeout_s,
        )
        client._own_tokens = True
        return client

    def __repr__(self) -> str:
        return (
            f"PlatformClient(base_url={self.base_url!r}, api_key={self.api_key!r}, "
            f"org_id={self.org_id!r}, sandbox_name={self.sandbox_name!r})"
        )

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_tokens:
            await self.tokens.close()
        if self._own_session is not None and not self._own_session.closed:
            await self._own_session.close()
        self._own_session = None

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        if self._own_session is None or self._own_session.closed:
            self._own_session = make_session(self._http)
            if self._own_tokens and self.tokens._session is None:
                self.tokens._session = self._own_session
        return self._own_session

    # -- requests ------------------------------------------------------------------------------

    async def _headers(self, accept: str) -> tuple[dict[str, str], str]:
        try:
            token = await self.tokens.get()
        except ImsConfigError as exc:
            raise PlatformError(None, f"IMS refused the credentials: {exc}") from None
        except ImsUnavailable as exc:
            raise PlatformError(None, f"IMS unavailable: {exc}") from None
        headers = {
            "Authorization": f"Bearer {token}",
            "x-api-key": self.api_key,
            "x-gw-ims-org-id": self.org_id,
            "Accept": accept,
        }
        if self.sandbox_name:
            headers["x-sandbox-name"] = self.sandbox_name
        return headers, token

    async def _get(
        self, path: str, params: dict[str, str] | None = None, accept: str = "application/json"
    ) -> bytes:
        url = self.base_url + path
        session = self._session_for_request()
        for attempt in (1, 2):
            headers, token = await self._headers(accept)
            try:
                async with session.get(
                    url,
                    params=params,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
            except TimeoutError:
                raise PlatformError(None, f"{path}: timed out after {self._timeout}s") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise PlatformError(
                    None, f"{path}: cannot reach {self.base_url}: {type(exc).__name__}: {exc}"
                ) from None
            if status == 401 and attempt == 1:
                self.tokens.invalidate(token)  # expired or revoked: one retry with a new one
                continue
            if status >= 400:
                raise PlatformError(status, f"{path}: {_error_text(raw)}")
            return raw
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_json(
        self, path: str, params: dict[str, str] | None = None, accept: str = "application/json"
    ) -> Any:
        raw = await self._get(path, params, accept)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PlatformError(200, f"{path}: the answer is not JSON") from None

    # -- public API ----------------------------------------------------------------------------

    async def dataset(self, dataset_id: str) -> dict[str, Any]:
        """The Catalog dataset (``name``, ``schemaRef{id, contentType}``, ...)."""
        path = f"/data/foundation/catalog/dataSets/{quote(dataset_id, safe='')}"
        doc = await self._get_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get(dataset_id), dict):
            raise PlatformError(200, f"{path}: no dataset {dataset_id} in the answer")
        found: dict[str, Any] = doc[dataset_id]
        return found

    async def schema(self, schema_id: str) -> dict[str, Any]:
        """The tenant schema (by ``$id`` or ``meta:altId``), fully resolved (xed-full)."""
        path = f"/data/foundation/schemaregistry/tenant/schemas/{quote(schema_id, safe='')}"
        doc = await self._get_json(path, accept=XED_FULL)
        if not isinstance(doc, dict):
            raise PlatformError(200, f"{path}: the answer is not a schema")
        return doc

    async def failed_batches(self, dataset_id: str, since_ms: int) -> list[FailedBatch]:
        """The dataset's failed Catalog batches created after ``since_ms``, newest first."""
        out: list[FailedBatch] = []
        for page in range(_MAX_PAGES):
            params = {
                "dataSet": dataset_id,
                "status": "failed",
                "createdAfter": str(since_ms),
                "orderBy": "desc:created",
                "limit": str(_PAGE),
                "start": str(page * _PAGE),
            }
            doc = await self._get_json("/data/foundation/catalog/batches", params)
            if not isinstance(doc, dict):
                raise PlatformError(200, "catalog/batches: the answer is not an object")
            for batch_id, batch in doc.items():
                if isinstance(batch, dict):
                    out.append(_failed_batch(batch_id, batch, dataset_id))
            if len(doc) < _PAGE:
                break
        return out

    async def failed_rows(self, batch_id: str) -> list[dict[str, Any]]:
        """Every failed row of a batch (Data Access failed files, JSON lines), in file order."""
        base = f"/data/foundation/export/batches/{quote(batch_id, safe='')}/failed"
        listing = await self._get_json(base)
        files = listing.get("data") if isinstance(listing, dict) else None
        rows: list[dict[str, Any]] = []
        for entry in files or ():
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            raw = await self._get(base, {"path": name}, accept="application/octet-stream")
            for line in raw.splitlines():
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    rows.append({"_corrupt_record": line.decode(errors="replace")})
                    continue
                if isinstance(row, dict):
                    rows.append(row)
        return rows


def _failed_batch(batch_id: str, batch: dict[str, Any], dataset_id: str) -> FailedBatch:
    related = batch.get("relatedObjects") or []
    ds = next(
        (
            o.get("id") for o in related
            if isinstance(o, dict) and o.get("type") == "dataSet" and isinstance(o.get("id"), str)
        ),
        dataset_id,
    )
    errors = []
    for err in batch.get("errors") or ():
        if isinstance(err, dict):
            code = err.get("code")
            text = err.get("description") or err.get("message") or ""
            errors.append(f"{code}: {text}" if code else str(text))
        else:
            errors.append(str(err))
    created = batch.get("created")
    return FailedBatch(
        batch_id=batch_id,
        dataset_id=str(ds),
        created_ms=int(created) if isinstance(created, int | float) else 0,
        status=str(batch.get("status", "")),
        errors=errors,
    )
