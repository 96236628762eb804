"""Event name → delivery targets, resolved once at start from the configured routes.

Each target pre-serializes the constant part of its DCS message (header and xdmMeta), so the
hot path serializes only the xdmEntity and concatenates bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from worker.aep.client import batch_url
from worker.config import RouteSettings
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
    batch_url: str
    dataset_id: str
    schema_id: str
    flow_id: str
    authenticated: bool
    validator: Validator
    size_limit: int
    prefix: bytes  # b'{"header":{...},"body":{"xdmMeta":{...},"xdmEntity":'
    headers: dict[str, str]

    def message(self, entity_json: bytes) -> bytes:
        return self.prefix + entity_json + b"}}"


def build_target(route: RouteSettings, org_id: str, schemas: SchemaStore) -> Target:
    schema_ref = {"id": route.schema_id, "contentType": CONTENT_TYPE}
    header = {
        "schemaRef": schema_ref,
        "imsOrgId": org_id,
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
    try:
        validator = schemas.xdm(route.schema_id)
    except Exception as exc:
        raise RoutingError(f"routes[{route.name}].schema_id: {exc}") from None
    return Target(
        name=route.name,
        family=route.family,
        batch_url=batch_url(route.inlet_url),
        dataset_id=route.dataset_id,
        schema_id=route.schema_id,
        flow_id=route.flow_id,
        authenticated=route.authenticated,
        validator=validator,
        size_limit=EVENT_SIZE_LIMIT if route.family == "experience_event" else RECORD_SIZE_LIMIT,
        prefix=prefix,
        headers={"x-adobe-flow-id": route.flow_id},
    )


def build_routes(
    routes: Iterable[RouteSettings],
    org_id: str,
    schemas: SchemaStore,
    mappers: Iterable[tuple[str, str]],
    default_families: dict[str, tuple[str, ...]],
) -> tuple[dict[str, Target], dict[str, tuple[Target, ...]]]:
    """Returns targets by name and, per event name, the targets it feeds (in route order)."""
    available = set(mappers)
    targets: dict[str, Target] = {}
    by_event: dict[str, list[Target]] = {}
    for route in routes:
        target = build_target(route, org_id, schemas)
        targets[target.name] = target
        if route.events is not None:
            names = list(route.events)
            missing = [n for n in names if (n, route.family) not in available]
            if missing:
                raise RoutingError(
                    f"routes[{route.name}].events: no {route.family} mapping for {missing}"
                )
        else:
            names = [n for n, fams in default_families.items() if route.family in fams]
        for name in names:
            by_event.setdefault(name, []).append(target)
    return targets, {k: tuple(v) for k, v in by_event.items()}
