"""(Capillary orgId, event name) → delivery targets, resolved once at start from the routes.

A route matches events by name (its ``events``; default: its family's events; ``["*"]``: every
event its family maps) and by Capillary orgId (``capillary_org_ids``; default: any org). An
event feeds every matching route, in route order.

Each target pre-serializes the constant part of its message (the DCS header and xdmMeta, or
the Data Prep upsert header of a raw route), so the hot path serializes only the entity (or
the raw body) and concatenates bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from worker.aep.client import batch_url, single_url
from worker.config import RouteCredentials, RouteSettings, Settings
from worker.mapping.raw import upsert_prefix
from worker.schemas import SchemaStore, Validator

CONTENT_TYPE = "application/vnd.adobe.xed-full+json;version=1"
# Profile store limits (SPEC 2.4): ExperienceEvents over 10 KB, records over 100 KB are dropped.
EVENT_SIZE_LIMIT = 10 * 1024
RECORD_SIZE_LIMIT = 100 * 1024


class RoutingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    family: str
    batch_url: str  # the inlet's batch endpoint
    dataset_id: str
    schema_id: str
    flow_id: str
    authenticated: bool
    validator: Validator
    size_limit: int
    prefix: bytes  # b'{"header":{...},"body":{"xdmMeta":{...},"xdmEntity":' (raw: see below)
    headers: dict[str, str]  # x-adobe-flow-id, x-sandbox-name
    format: str = "xdm"  # "raw": source-shaped JSON to the single endpoint (worker.mapping.raw)
    url: str = ""  # where deliveries go: batch_url, or the single endpoint for raw
    suffix: bytes = b"}}"
    ordered: bool = False  # a profile family: updates never go backwards (worker.profile_order)
    ims_org_id: str = ""
    credentials: RouteCredentials | None = None  # None: the aep section's

    @property
    def raw(self) -> bool:
        return self.format == "raw"

    def message(self, entity_json: bytes) -> bytes:
        return b"".join((self.prefix, entity_json, self.suffix))  # one copy, not two


def build_target(
    route: RouteSettings,
    org_id: str,
    schemas: SchemaStore,
    *,
    schema_id: str | None = None,
    sandbox_name: str | None = None,
) -> Target:
    """``org_id``/``sandbox_name``: the ``aep`` defaults a route may override; ``schema_id``:
    the route's, expanded to a full ``$id`` (``XdmSettings.schema_id``)."""
    schema_id = schema_id or route.schema_id
    ims_org = route.ims_org_id or org_id
    try:
        validator = schemas.xdm(schema_id)
    except Exception as exc:
        raise RoutingError(f"routes[{route.name}].schema_id: {exc}") from None
    headers = {"x-adobe-flow-id": route.flow_id}
    sandbox = route.sandbox_name or sandbox_name
    if sandbox:
        headers["x-sandbox-name"] = sandbox
    if route.format == "raw":
        prefix, suffix = (
            upsert_prefix(route.flow_id, ims_org, route.dataset_id)
            if route.upsert
            else (b"", b"")
        )
        url = single_url(route.inlet_url)
    else:
        schema_ref = {"id": schema_id, "contentType": CONTENT_TYPE}
        header = {
            "schemaRef": schema_ref,
            "imsOrgId": ims_org,
            "datasetId": route.dataset_id,
            "flowId": route.flow_id,
            "source": {"name": route.source_name},
        }
        prefix = (
            b'{"header":'
            + orjson.dumps(header)
            + b',"body":{"xdmMeta":{"schemaRef":'
            + orjson.dumps(schema_ref)
            + b'},"xdmEntity":'
        )
        suffix = b"}}"
        url = batch_url(route.inlet_url)
    return Target(
        name=route.name,
        family=route.family,
        batch_url=batch_url(route.inlet_url),
        dataset_id=route.dataset_id,
        schema_id=schema_id,
        flow_id=route.flow_id,
        authenticated=route.authenticated,
        validator=validator,
        size_limit=EVENT_SIZE_LIMIT if route.family == "experience_event" else RECORD_SIZE_LIMIT,
        prefix=prefix,
        headers=headers,
        format=route.format,
        url=url,
        suffix=suffix,
        ordered=route.family.startswith("profile_"),
        ims_org_id=ims_org,
        credentials=route.credentials,
    )


Targets = tuple[Target, ...]


class RouteTable:
    """Targets per (Capillary orgId, event name). ``lookup`` is the hot path: one or two
    dict lookups, no allocation beyond the key tuple (and none without org-specific routes)."""

    __slots__ = ("_any_org", "_by_org")

    def __init__(self, any_org: dict[str, Targets], by_org: dict[tuple[int, str], Targets]):
        self._any_org = any_org  # routes for every org
        self._by_org = by_org  # (org, name) -> every matching route, org-specific or not

    def lookup(self, org_id: int, name: str) -> Targets | None:
        """The targets an event feeds, in route order; None when no route takes it."""
        if self._by_org:
            found = self._by_org.get((org_id, name))
            if found is not None:
                return found
        return self._any_org.get(name)

    def event_names(self) -> list[str]:
        return sorted(set(self._any_org) | {name for _, name in self._by_org})

    def org_ids(self) -> list[int]:
        """The orgIds named by org-specific routes."""
        return sorted({org for org, _ in self._by_org})

    def restricted(self, keep: Callable[[Target], bool]) -> RouteTable:
        """The same keys with only the targets ``keep`` accepts (possibly none: an empty
        tuple, unlike a missing key, means "routed, but to nothing here")."""
        return RouteTable(
            {k: tuple(t for t in ts if keep(t)) for k, ts in self._any_org.items()},
            {k: tuple(t for t in ts if keep(t)) for k, ts in self._by_org.items()},
        )


def _event_names(
    route: RouteSettings,
    available: set[tuple[str, str]],
    default_families: dict[str, tuple[str, ...]],
) -> list[str]:
    if route.events is None:
        return [n for n, fams in default_families.items() if route.family in fams]
    if route.events == ["*"]:
        return sorted(n for n, fam in available if fam == route.family)
    missing = [n for n in route.events if (n, route.family) not in available]
    if missing:
        raise RoutingError(f"routes[{route.name}].events: no {route.family} mapping for {missing}")
    return list(route.events)


def build_routes(
    settings: Settings,
    schemas: SchemaStore,
    mappers: Iterable[tuple[str, str]],
    default_families: dict[str, tuple[str, ...]],
) -> tuple[dict[str, Target], RouteTable]:
    """Returns targets by name and the route table."""
    available = set(mappers)
    targets: dict[str, Target] = {}
    matches: list[tuple[Target, frozenset[int] | None, list[str]]] = []
    for route in settings.routes:
        target = build_target(
            route, settings.aep.org_id, schemas,
            schema_id=settings.xdm.schema_id(route.schema_id),
            sandbox_name=settings.aep.sandbox_name,
        )
        targets[target.name] = target
        orgs = None if route.capillary_org_ids is None else frozenset(route.capillary_org_ids)
        matches.append((target, orgs, _event_names(route, available, default_families)))
    any_org: dict[str, list[Target]] = {}
    keys: set[tuple[int, str]] = set()
    for target, orgs, names in matches:
        for name in names:
            if orgs is None:
                any_org.setdefault(name, []).append(target)
            else:
                keys.update((org, name) for org in orgs)
    by_org = {
        (org, name): tuple(
            t for t, orgs, names in matches if name in names and (orgs is None or org in orgs)
        )
        for org, name in sorted(keys)
    }
    return targets, RouteTable({k: tuple(v) for k, v in any_org.items()}, by_org)
