"""Checks that a configuration can work against AEP, without ingesting anything.

Used by ``capillary-aep preflight`` and ``run --preflight`` (every check once) and by the
running worker (``SchemaDriftWatcher``: the schema comparison every
``aep.schema_drift_interval_s``).

Per credential set (the ``aep`` client and each route's own ``credentials``): an IMS token.
Per inlet: a probe that cannot ingest: ``POST .../collection/batch/<inlet>`` with an empty
``messages`` array. DCS answers an unknown inlet 404, a token it refuses 401/403, and a live
inlet 400 (an empty batch is invalid), so the answer tells the cases apart and nothing is
stored. Per route: its dataset in Catalog, and that the dataset uses the route's schema; the
schema in the Schema Registry; and the local XDM schema (``schemas/xdm/``, ``xdm.schemas_dir``)
against the registry's (``worker.xdm_view``: field paths, types, required flags; the differing
paths are named, never values).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from worker.aep.auth import ImsConfigError, ImsUnavailable, TokenProvider
from worker.aep.client import HttpSettings, batch_url, inlet_id, make_session
from worker.aep.platform import PlatformClient, PlatformError
from worker.config import RouteCredentials, Settings
from worker.connections import CredentialKey, credential_key
from worker.logs import get_logger
from worker.routing import Target
from worker.schemas import SchemaLoadError, SchemaStore
from worker.xdm_view import ResolveError, SchemaDiff, diff, fields, resolve

log = get_logger(__name__)

PROBE_BODY = b'{"messages":[]}'


@dataclass(slots=True)
class Check:
    check: str  # ims | inlet | dataset | registry | schema
    subject: str  # what was checked: a credential set, an inlet, a route
    status: str  # ok | fail | skip
    problem: str = ""  # short name of what is wrong: "bad secret", "unknown dataset", ...
    detail: str = ""
    paths: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Credentials:
    label: str  # "aep (client_id=...)" or "routes[...].credentials (client_id=...)"
    provider: TokenProvider
    token_ok: bool = False


def _provider(
    settings: Settings, creds: RouteCredentials | None, session: aiohttp.ClientSession
) -> TokenProvider:
    """A provider without the secret-rotation wait: a preflight answers at once."""
    aep = settings.aep
    source = aep if creds is None else creds
    return TokenProvider(
        ims_url=(creds.ims_url if creds is not None and creds.ims_url else aep.ims_url),
        client_id=(creds.client_id if creds is not None else aep.client_id or ""),
        client_secret=source.secret_value,
        scope=(creds.scopes if creds is not None and creds.scopes else aep.scopes),
        session=session,
        max_attempts=2,
        base_delay=0.2,
    )


class Preflight:
    """Every check of one configuration (``run()``), or the schema comparison alone
    (``schema_checks()``, the drift watcher's)."""

    def __init__(
        self,
        settings: Settings,
        targets: dict[str, Target],
        schemas: SchemaStore,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.schemas = schemas
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self.credentials: dict[CredentialKey, Credentials] = {}
        self.main_key: CredentialKey | None = None
        self._local_fields: dict[str, Any] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._own_session is None:
                aep = self.settings.aep
                self._own_session = make_session(HttpSettings(
                    trust_env=aep.trust_env,
                    ca_bundle=str(aep.ca_bundle) if aep.ca_bundle else None,
                    request_timeout=min(self.settings.delivery.request_timeout_s, 30.0),
                ))
            return self._own_session
        return self._session

    async def close(self) -> None:
        for creds in self.credentials.values():
            await creds.provider.close()
        if self._own_session is not None:
            await self._own_session.close()

    # -- credential sets -----------------------------------------------------------------------

    def _collect_credentials(self) -> None:
        if self.credentials:
            return
        aep = self.settings.aep
        if aep.client_id and (aep.client_secret is not None or aep.client_secret_file):
            self.main_key = credential_key(self.settings, None)
            self.credentials[self.main_key] = Credentials(
                f"aep (client_id={aep.client_id})",
                _provider(self.settings, None, self.session),
            )
        for target in self.targets.values():
            if target.credentials is None:
                continue
            key = credential_key(self.settings, target.credentials)
            if key not in self.credentials:
                self.credentials[key] = Credentials(
                    f"routes[{target.name}].credentials "
                    f"(client_id={target.credentials.client_id})",
                    _provider(self.settings, target.credentials, self.session),
                )

    def _key_of(self, target: Target) -> CredentialKey | None:
        """The credential set of a route's Platform calls (an unauthenticated route: aep's)."""
        if target.credentials is not None:
            return credential_key(self.settings, target.credentials)
        return self.main_key

    async def check_ims(self) -> list[Check]:
        self._collect_credentials()
        out: list[Check] = []
        for creds in self.credentials.values():
            try:
                await creds.provider.get()
            except ImsConfigError as exc:
                problem = "bad secret" if exc.error == "invalid_client" else "IMS refused"
                if exc.setting == "scopes":
                    problem = "bad scopes"
                out.append(Check("ims", creds.label, "fail", problem, str(exc)))
                continue
            except ImsUnavailable as exc:
                out.append(Check("ims", creds.label, "fail", "IMS unreachable", str(exc)))
                continue
            creds.token_ok = True
            out.append(Check("ims", creds.label, "ok", detail="token issued"))
        if not self.credentials:
            out.append(Check("ims", "aep", "skip", detail="no IMS credentials configured"))
        return out

    # -- inlets --------------------------------------------------------------------------------

    async def check_inlets(self) -> list[Check]:
        seen: dict[str, Target] = {}
        for target in self.targets.values():
            seen.setdefault(batch_url(target.url or target.batch_url), target)
        return list(await asyncio.gather(*(self._probe(url, t) for url, t in seen.items())))

    async def _probe(self, url: str, target: Target) -> Check:
        subject = f"inlet {inlet_id(url)} ({url})"
        headers = {"Content-Type": "application/json", **target.headers}
        if target.authenticated:
            key = credential_key(self.settings, target.credentials)
            creds = self.credentials.get(key)
            if creds is None or not creds.token_ok:
                return Check("inlet", subject, "skip", detail="no IMS token (see the ims check)")
            headers["Authorization"] = f"Bearer {await creds.provider.get()}"
        try:
            async with self.session.post(
                url, data=PROBE_BODY, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            return Check("inlet", subject, "fail", "unreachable inlet", "timed out after 15 s")
        except (aiohttp.ClientError, OSError) as exc:
            return Check(
                "inlet", subject, "fail", "unreachable inlet", f"{type(exc).__name__}: {exc}"
            )
        if status == 404:
            return Check("inlet", subject, "fail", "unknown inlet",
                         "DCS answered 404: no such inlet (check routes.inlet_url)")
        if status in (401, 403):
            why = ("the inlet needs authentication (routes.authenticated = false)"
                   if not target.authenticated else "the inlet refused the IMS token")
            return Check("inlet", subject, "fail", "inlet refused", f"HTTP {status}: {why}")
        if status < 500:  # 400 (the usual answer), other 4xx, 2xx: the inlet exists
            return Check("inlet", subject, "ok",
                         detail=f"live (HTTP {status} to an empty batch; nothing ingested)")
        return Check("inlet", subject, "fail", "inlet unavailable", f"HTTP {status}")

    # -- Catalog and Schema Registry -----------------------------------------------------------

    def _platform(self, target: Target) -> PlatformClient | None:
        key = self._key_of(target)
        creds = self.credentials.get(key) if key is not None else None
        if creds is None or not creds.token_ok:
            return None
        return PlatformClient(
            base_url=self.settings.aep.platform_url,
            tokens=creds.provider,
            org_id=target.ims_org_id or self.settings.aep.org_id,
            sandbox_name=target.headers.get("x-sandbox-name"),
            session=self.session,
        )

    def local_fields(self, schema_id: str) -> Any:
        found = self._local_fields.get(schema_id)
        if found is None:
            found = fields(resolve(schema_id, self.schemas.xdm_document))
            self._local_fields[schema_id] = found
        return found

    async def check_datasets(self) -> list[Check]:
        out: list[Check] = []
        for target in self.targets.values():
            subject = f"route {target.name}: dataset {target.dataset_id}"
            platform = self._platform(target)
            if platform is None:
                out.append(Check("dataset", subject, "skip",
                                 detail="no IMS token for the Platform APIs"))
                continue
            try:
                ds = await platform.dataset(target.dataset_id)
            except PlatformError as exc:
                problem = "unknown dataset" if exc.status == 404 else "catalog unavailable"
                if exc.status in (401, 403):
                    problem = "catalog refused"
                out.append(Check("dataset", subject, "fail", problem, str(exc)))
                continue
            ref = ds.get("schemaRef") if isinstance(ds.get("schemaRef"), dict) else {}
            uses = ref.get("id") if isinstance(ref, dict) else None
            if uses != target.schema_id:
                out.append(Check(
                    "dataset", subject, "fail", "wrong schema on dataset",
                    f"the dataset uses {uses}, the route sends {target.schema_id}",
                ))
            else:
                out.append(Check("dataset", subject, "ok", detail=f"uses {uses}"))
        return out

    async def schema_checks(self) -> list[Check]:
        """Registry presence and local-vs-registry comparison, per route."""
        out: list[Check] = []
        cache: dict[tuple[CredentialKey | None, str, str], Check | SchemaDiff] = {}
        for target in self.targets.values():
            subject = f"route {target.name}: schema {target.schema_id}"
            platform = self._platform(target)
            if platform is None:
                out.append(Check("registry", subject, "skip",
                                 detail="no IMS token for the Platform APIs"))
                continue
            key = (self._key_of(target), platform.org_id, target.schema_id)
            result = cache.get(key)
            if result is None:
                result = await self._compare(platform, target.schema_id)
                cache[key] = result
            if isinstance(result, Check):
                out.append(Check(result.check, subject, result.status, result.problem,
                                 result.detail))
                continue
            out.append(Check("registry", subject, "ok", detail="in the Schema Registry"))
            if result.drift:
                out.append(Check(
                    "schema", subject, "fail", "schema mismatch",
                    "; ".join(result.problems()), result.paths(),
                ))
            else:
                out.append(Check(
                    "schema", subject, "ok",
                    detail=f"local schema matches ({result.extra} optional registry-only "
                    "fields not sent)",
                ))
        return out

    async def _compare(self, platform: PlatformClient, schema_id: str) -> Check | SchemaDiff:
        try:
            remote = await platform.schema(schema_id)
        except PlatformError as exc:
            problem = "schema not in registry" if exc.status == 404 else "registry unavailable"
            return Check("registry", "", "fail", problem, str(exc))
        try:
            local = self.local_fields(schema_id)
        except (SchemaLoadError, ResolveError) as exc:
            return Check("schema", "", "fail", "local schema unusable", str(exc))
        try:
            theirs = fields(resolve_remote(remote))
        except ResolveError as exc:
            return Check("schema", "", "fail", "registry schema unusable", str(exc))
        return diff(local, theirs)

    async def run(self) -> list[Check]:
        checks = await self.check_ims()
        checks += await self.check_inlets()
        checks += await self.check_datasets()
        checks += await self.schema_checks()
        return checks


def resolve_remote(doc: dict[str, Any]) -> dict[str, Any]:
    """A registry answer is already resolved (xed-full); one that still has ``$ref``s to
    other documents cannot be resolved here and is an error."""

    def lookup(ref: str) -> dict[str, Any]:
        raise KeyError(ref)

    from worker.xdm_view import resolve_document

    return resolve_document(doc, lookup)


def failed(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


class SchemaDriftWatcher:
    """While the worker runs: the schema comparison every ``interval_s``; sets
    ``capaep_schema_drift{route}`` and logs ``schema_drift`` (WARNING) naming route and paths.
    Drift does not stop streaming (the worker validates locally before sending)."""

    def __init__(
        self,
        settings: Settings,
        targets: dict[str, Target],
        schemas: SchemaStore,
        providers: dict[CredentialKey, TokenProvider],
        session: aiohttp.ClientSession,
        metrics: Any,
        interval_s: float,
    ) -> None:
        self.preflight = Preflight(settings, targets, schemas, session)
        self.metrics = metrics
        self.interval_s = interval_s
        self.checks = 0
        pre = self.preflight
        main = credential_key(settings, None)
        for key, provider in providers.items():
            pre.credentials[key] = Credentials(key[1], provider, token_ok=True)
        if main in pre.credentials:
            pre.main_key = main
        elif settings.aep.client_id and (
            settings.aep.client_secret is not None or settings.aep.client_secret_file
        ):
            pre.main_key = main
            pre.credentials[main] = Credentials(
                "aep", _provider(settings, None, session), token_ok=True
            )
        self._own = {k for k in pre.credentials if k not in providers}

    async def check_once(self) -> list[Check]:
        checks = await self.preflight.schema_checks()
        self.checks += 1
        drift: dict[str, list[str]] = {}
        for check in checks:
            route = check.subject.split(":", 1)[0].removeprefix("route ")
            if check.check == "schema" and check.status == "fail":
                drift[route] = check.paths or [check.problem]
            elif check.status == "fail":
                log.warning("schema_drift_check_failed", route=route, problem=check.problem,
                            detail=check.detail[:300])
        for name in self.preflight.targets:
            if name in drift:
                self.metrics.schema_drift.labels(name).set(1)
                log.warning("schema_drift", route=name, paths=drift[name])
            elif any(c.subject.startswith(f"route {name}:") and c.check == "schema"
                     for c in checks):
                self.metrics.schema_drift.labels(name).set(0)
        return checks

    async def run(self) -> None:
        """The first check one interval after start (``run --preflight`` covers the start)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the watcher take the worker down
                log.warning("schema_drift_check_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def close(self) -> None:
        for key in self._own:
            await self.preflight.credentials[key].provider.close()
