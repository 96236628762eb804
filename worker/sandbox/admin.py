"""Inspection and control API under ``/sandbox/`` (never faulted, never authenticated).

GET    /sandbox/health                      {"status": "ok"}
GET    /sandbox/config                      org, IMS client ids, datasets, inlets, limits
POST   /sandbox/config                      {"token_lifetime_seconds": N}
GET    /sandbox/stats                       counters (see README)
GET    /sandbox/datasets                    datasets with their counts
GET    /sandbox/datasets/{id}/records       ?limit=100&offset=0, oldest kept first
GET    /sandbox/requests                    ?limit=100, recent DCS/IMS requests, newest last
GET    /sandbox/rejections                  ?limit=100, recent rejected messages, newest last
POST   /sandbox/reset                       forget records, counters, logs, faults
GET    /sandbox/faults                      current fault settings and counters
POST   /sandbox/faults                      merge fault settings (FaultConfig JSON)
DELETE /sandbox/faults                      no faults
GET    /sandbox/rate-limit                  rate limit: settings, totals, per-second counters
POST   /sandbox/tokens/revoke               every issued token becomes unknown (403)
GET    /sandbox/registry?id=<schema $id>    the schema the Schema Registry serves (xed-full)
PUT    /sandbox/registry?id=<schema $id>    serve this document instead (drift in tests)
DELETE /sandbox/registry?id=<schema $id>    the registry no longer has it (404)
POST   /sandbox/registry/reset              back to the configured registry
GET    /sandbox/batches                     ?dataSet=&status=, Catalog batches, newest first
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from worker.sandbox.faults import FaultConfigError
from worker.sandbox.keys import STATE
from worker.sandbox.state import SandboxState


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if value < 0:
        raise web.HTTPBadRequest(text=f"{name} must be >= 0")
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


def _set_token_lifetime(state: SandboxState, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise web.HTTPBadRequest(text="token_lifetime_seconds must be a positive number")
    state.tokens.lifetime_s = float(value)
    state.config = replace(state.config, token_lifetime_s=float(value))


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def get_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    c = state.config
    return _json(
        {
            "org_id": c.org_id,
            "ims_clients": [client.client_id for client in c.ims_clients],
            "datasets": [
                {
                    "id": d.id,
                    "schema_id": d.schema_id,
                    "profile_enabled": d.profile_enabled,
                    "behavior": d.behavior,
                }
                for d in c.datasets
            ],
            "inlets": [
                {
                    "id": i.id,
                    "auth_required": i.auth_required,
                    "datasets": list(i.datasets) if i.datasets is not None else None,
                    "failure_key": i.failure_key,
                    "failure_xaction_id": i.failure_xaction_id,
                }
                for i in c.inlets
            ],
            "max_body_bytes": c.max_body_bytes,
            "token_lifetime_seconds": state.tokens.lifetime_s,
            "require_flow_id": c.require_flow_id,
            "event_profile_max_bytes": c.event_profile_max_bytes,
            "record_profile_max_bytes": c.record_profile_max_bytes,
            "store": c.store,
            "max_records_per_dataset": c.max_records_per_dataset,
        }
    )


async def post_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = await _body(request)
    unknown = sorted(set(data) - {"token_lifetime_seconds"})
    if unknown:
        return _error(400, f"unsupported runtime settings: {', '.join(unknown)}")
    if "token_lifetime_seconds" in data:
        _set_token_lifetime(state, data["token_lifetime_seconds"])
    return await get_config(request)


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats())


async def datasets(request: web.Request) -> web.Response:
    state = request.app[STATE]
    counts = state.stats()["datasets"]
    return _json(
        [
            {
                "id": d.id,
                "schema_id": d.schema_id,
                "profile_enabled": d.profile_enabled,
                **counts[d.id],
            }
            for d in state.config.datasets
        ]
    )


async def records(request: web.Request) -> web.Response:
    state = request.app[STATE]
    dataset_id = request.match_info["dataset"]
    if state.config.dataset(dataset_id) is None:
        return _error(404, f"unknown dataset {dataset_id}")
    limit = _int_param(request, "limit", 100)
    offset = _int_param(request, "offset", 0)
    body = state.store.records_json(dataset_id, limit, offset)
    return web.Response(body=body, content_type="application/json")


def _tail(items: Any, limit: int) -> list[Any]:
    data = list(items)
    return data[-limit:] if limit else []


async def requests_log(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(_tail(state.request_log, _int_param(request, "limit", 100)))


async def rejections(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(_tail(state.rejections, _int_param(request, "limit", 100)))


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return _json({"reset": True})


async def get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE].faults.snapshot())


async def post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = await _body(request)
    lifetime = data.pop("token_lifetime_seconds", None)
    try:
        state.faults.update(data)
    except FaultConfigError as exc:
        return _error(400, str(exc))
    if lifetime is not None:
        _set_token_lifetime(state, lifetime)
    return _json(state.faults.snapshot())


async def rate_limit(request: web.Request) -> web.Response:
    """The rate limit's settings, totals and per-second counters (worker/sandbox/rate_limit)."""
    return _json(request.app[STATE].faults.rate.snapshot())


async def delete_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear()
    return _json(state.faults.snapshot())


async def revoke_tokens(request: web.Request) -> web.Response:
    return _json({"revoked": request.app[STATE].tokens.revoke_all()})


def _schema_id(request: web.Request) -> str:
    schema_id = request.query.get("id")
    if not schema_id:
        raise web.HTTPBadRequest(text="id (the schema's $id) is required")
    return schema_id


async def get_registry(request: web.Request) -> web.Response:
    platform = request.app[STATE].platform
    schema_id = _schema_id(request)
    if schema_id not in platform.schema_ids():
        return _error(404, f"the registry has no schema {schema_id}")
    try:
        return _json(platform.resolved_schema(schema_id))
    except KeyError as exc:
        return _error(500, str(exc))


async def put_registry(request: web.Request) -> web.Response:
    platform = request.app[STATE].platform
    schema_id = _schema_id(request)
    platform.set_override(schema_id, await _body(request))
    return _json({"id": schema_id, "overridden": True})


async def delete_registry(request: web.Request) -> web.Response:
    platform = request.app[STATE].platform
    schema_id = _schema_id(request)
    platform.remove_schema(schema_id)
    return _json({"id": schema_id, "removed": True})


async def reset_registry(request: web.Request) -> web.Response:
    request.app[STATE].platform.reset_registry()
    return _json({"reset": True})


async def catalog_batches(request: web.Request) -> web.Response:
    state = request.app[STATE]
    found = state.platform.find_batches(
        request.query.get("dataSet"), request.query.get("status"), None, None
    )
    found.reverse()
    return _json(
        [
            {"id": b.id, **b.to_json(state.config.org_id), "rows": len(b.rows)}
            for b in found[: _int_param(request, "limit", 100)]
        ]
    )


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/sandbox/health", health)
    r.add_get("/sandbox/config", get_config)
    r.add_post("/sandbox/config", post_config)
    r.add_get("/sandbox/stats", stats)
    r.add_get("/sandbox/datasets", datasets)
    r.add_get("/sandbox/datasets/{dataset}/records", records)
    r.add_get("/sandbox/requests", requests_log)
    r.add_get("/sandbox/rejections", rejections)
    r.add_post("/sandbox/reset", reset)
    r.add_get("/sandbox/faults", get_faults)
    r.add_post("/sandbox/faults", post_faults)
    r.add_delete("/sandbox/faults", delete_faults)
    r.add_get("/sandbox/rate-limit", rate_limit)
    r.add_post("/sandbox/tokens/revoke", revoke_tokens)
    r.add_get("/sandbox/registry", get_registry)
    r.add_put("/sandbox/registry", put_registry)
    r.add_delete("/sandbox/registry", delete_registry)
    r.add_post("/sandbox/registry/reset", reset_registry)
    r.add_get("/sandbox/batches", catalog_batches)
