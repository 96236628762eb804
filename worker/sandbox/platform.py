"""The sandbox's Platform APIs (``/data/foundation/...``): Catalog, Schema Registry, Data Access.

Every request needs what Adobe's API gateway needs: ``Authorization: Bearer <token>`` (a token
from this sandbox's IMS, not expired or revoked), ``x-api-key`` (an IMS client id the sandbox
knows) and ``x-gw-ims-org-id`` (the sandbox's org). ``x-sandbox-name`` is recorded.

GET /data/foundation/catalog/dataSets/{id}                 {"<id>": {name, schemaRef, ...}}
GET /data/foundation/catalog/batches                       ?dataSet=&status=&createdAfter=
                                                           &createdBefore=&limit=&start=&orderBy=
GET /data/foundation/catalog/batches/{id}                  {"<id>": {...}}
GET /data/foundation/schemaregistry/tenant/schemas/{id}    urlencoded $id or meta:altId;
                                                           Accept xed-full (resolved) or xed
GET /data/foundation/export/batches/{id}/failed            failed files of a batch
GET /data/foundation/export/batches/{id}/failed?path=F     the file: JSON lines of failed rows
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from worker.sandbox.catalog import CatalogBatch, alt_id
from worker.sandbox.keys import STATE
from worker.sandbox.state import SandboxState

CATALOG = "/data/foundation/catalog"
REGISTRY = "/data/foundation/schemaregistry"
EXPORT = "/data/foundation/export"
FAILED_FILE = "failed_records_0.json"
_XED_FULL = "application/vnd.adobe.xed-full+json"
_XED = "application/vnd.adobe.xed+json"


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=content_type)


def _gateway_error(status: int, code: str, message: str) -> web.Response:
    """The Adobe I/O gateway's answer shape: ``{"error_code", "message"}``."""
    return _json({"error_code": code, "message": message}, status)


def _problem(status: int, code: str, title: str, detail: str) -> web.Response:
    """A Platform service error (problem+json with the service's error type)."""
    return _json(
        {
            "type": f"http://ns.adobe.com/aep/errors/{code}",
            "title": title,
            "status": status,
            "report": {"timestamp": time.strftime("%m-%d-%Y %H:%M:%S"), "detailed-message": detail},
            "detail": detail,
        },
        status,
    )


def _authorize(request: web.Request, state: SandboxState) -> web.Response | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _gateway_error(401, "401013", "Oauth token is not valid")
    verdict = state.tokens.check(token.strip())
    if verdict != "valid":
        return _gateway_error(401, "401013", "Oauth token is not valid")
    api_key = request.headers.get("x-api-key")
    if not api_key:
        return _gateway_error(403, "403000", "Api Key is required")
    if api_key not in {c.client_id for c in state.config.ims_clients}:
        return _gateway_error(403, "403003", "Api Key is invalid")
    org = request.headers.get("x-gw-ims-org-id")
    if org != state.config.org_id:
        return _gateway_error(403, "403025", "Profile is not valid")
    return None


def _noted(endpoint: str, handler: Any) -> Any:
    """Authorize, serve, and log the request (``/sandbox/requests``, request counters)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        refused = _authorize(request, state)
        response = refused if refused is not None else await handler(request, state)
        state.note_request(
            endpoint,
            None,
            str(response.status),
            {
                "timeMs": int(time.time() * 1000),
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "hasAuthorization": "Authorization" in request.headers,
                "sandboxName": request.headers.get("x-sandbox-name"),
                "messages": 0,
            },
        )
        return response

    return wrapped


# -- Catalog -----------------------------------------------------------------------------------


def _only(props: str | None, doc: dict[str, Any]) -> dict[str, Any]:
    """Catalog's ``properties=a,b`` filter."""
    if not props:
        return doc
    wanted = {p.strip() for p in props.split(",") if p.strip()}
    return {k: v for k, v in doc.items() if k in wanted}


async def dataset(request: web.Request, state: SandboxState) -> web.Response:
    dataset_id = request.match_info["id"]
    config = state.config
    found = config.dataset(dataset_id)
    if found is None:
        return _problem(
            404, "CAT-1404-404", "Not Found", f"Requested resource dataSets/{dataset_id} not found"
        )
    created = int(state.started_at * 1000)
    doc = {
        "name": found.id,
        "description": f"Sandbox dataset {found.id}",
        "imsOrg": config.org_id,
        "created": created,
        "updated": created,
        "version": "1.0.0",
        "schemaRef": {"id": found.schema_id, "contentType": f"{_XED};version=1"},
        "tags": {"unifiedProfile": [f"enabled:{str(found.profile_enabled).lower()}"]},
        "files": f"@/dataSetFiles?dataSetId={found.id}",
    }
    return _json({found.id: _only(request.query.get("properties"), doc)})


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            body=orjson.dumps({"title": "Bad Request", "status": 400,
                               "detail": f"{name} must be an integer"}),
            content_type="application/json",
        ) from None


async def batches(request: web.Request, state: SandboxState) -> web.Response:
    q = request.query
    limit = _int(request, "limit", 20) or 20
    if not 1 <= limit <= 100:
        return _problem(400, "CAT-1400-400", "Bad Request", "limit must be between 1 and 100")
    start = _int(request, "start", 0) or 0
    found = state.platform.find_batches(
        q.get("dataSet"), q.get("status"),
        _int(request, "createdAfter", None), _int(request, "createdBefore", None),
    )
    order = q.get("orderBy", "desc:created")
    found.sort(key=lambda b: b.created_ms, reverse=not order.startswith("asc"))
    page = found[start : start + limit]
    org = state.config.org_id
    return _json({b.id: _only(q.get("properties"), b.to_json(org)) for b in page})


def _batch(state: SandboxState, batch_id: str) -> CatalogBatch | None:
    return state.platform.batches.get(batch_id)


async def batch(request: web.Request, state: SandboxState) -> web.Response:
    batch_id = request.match_info["id"]
    found = _batch(state, batch_id)
    if found is None:
        return _problem(
            404, "CAT-1404-404", "Not Found", f"Requested resource batches/{batch_id} not found"
        )
    return _json({found.id: found.to_json(state.config.org_id)})


# -- Data Access -------------------------------------------------------------------------------


async def failed(request: web.Request, state: SandboxState) -> web.Response:
    batch_id = request.match_info["id"]
    found = _batch(state, batch_id)
    if found is None:
        return _problem(404, "DAS-1404-404", "Not Found", f"Batch {batch_id} not found")
    path = request.query.get("path")
    body = b"\n".join(found.rows) + (b"\n" if found.rows else b"")
    if path is None:
        base = f"{request.scheme}://{request.host}{EXPORT}/batches/{batch_id}/failed"
        files = (
            [{"name": FAILED_FILE, "length": str(len(body)),
              "_links": {"self": {"href": f"{base}?path={FAILED_FILE}"}}}]
            if found.rows
            else []
        )
        return _json({"data": files, "_page": {"limit": 100, "count": len(files)}})
    if path != FAILED_FILE or not found.rows:
        return _problem(404, "DAS-1404-404", "Not Found", f"File {path} not found in batch")
    return web.Response(body=body, content_type="application/octet-stream")


# -- Schema Registry ---------------------------------------------------------------------------


async def schema(request: web.Request, state: SandboxState) -> web.Response:
    prefix = f"{REGISTRY}/tenant/schemas/"
    raw = request.raw_path.split("?", 1)[0]
    key = unquote(raw[len(prefix):]) if raw.startswith(prefix) else ""
    accept = request.headers.get("Accept", "")
    full = _XED_FULL in accept
    if not full and _XED not in accept:
        return _problem(
            406, "XDM-1006-406", "Not Acceptable",
            "Accept must be application/vnd.adobe.xed-full+json; version=1 (or xed+json)",
        )
    platform = state.platform
    schema_id = platform.lookup_id(key)
    if schema_id is None or schema_id.startswith("https://ns.adobe.com/xdm/"):
        return _problem(404, "XDM-1010-404", "Not Found", f"Schema {key} not found")
    try:
        doc = platform.resolved_schema(schema_id) if full else platform.raw_schema(schema_id)
    except KeyError as exc:
        return _problem(500, "XDM-1500-500", "Internal Server Error", str(exc))
    served = dict(doc)
    served.setdefault("$id", schema_id)
    served["meta:altId"] = alt_id(schema_id)
    served["meta:resourceType"] = "schemas"
    served["meta:containerId"] = "tenant"
    served["version"] = str(served.get("version", "1.0"))
    content_type = (_XED_FULL if full else _XED)
    return _json(served, content_type=content_type)


def add_platform_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{CATALOG}/dataSets/{{id}}", _noted("catalog", dataset))
    r.add_get(f"{CATALOG}/batches", _noted("catalog", batches))
    r.add_get(f"{CATALOG}/batches/{{id}}", _noted("catalog", batch))
    r.add_get(f"{EXPORT}/batches/{{id}}/failed", _noted("data_access", failed))
    r.add_get(f"{REGISTRY}/tenant/schemas/{{key:.+}}", _noted("schema_registry", schema))
