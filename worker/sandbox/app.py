"""The aiohttp application: IMS token endpoints, DCS collection endpoints, and the admin API.

Request-level order on a DCS endpoint: injected faults -> unknown inlet (404) -> token (401
missing, 403 invalid/expired/injected) -> body size (413, Content-Length first, then the bytes
read) -> JSON and envelope (400) -> per message (207 entries, or the single endpoint's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_exceptions import HTTPRequestEntityTooLarge

from worker.sandbox.admin import add_admin_routes
from worker.sandbox.catalog import PlatformData, RequestTally
from worker.sandbox.config import RawFlowConfig
from worker.sandbox.dcs import Acceptance, Rejection
from worker.sandbox.faults import RequestFault, Target
from worker.sandbox.ims import ImsError, expires_in
from worker.sandbox.keys import STATE
from worker.sandbox.platform import add_platform_routes
from worker.sandbox.state import SandboxState

ERROR_TYPE = "https://ns.adobe.com/aep/errors/data-collection-service"
AUTH_ERROR_TYPE = "https://ns.adobe.com/aep/errors/data-collection-service-authorization"
_TITLES = {
    400: "Bad Request",
    401: "Authorization",
    403: "Authorization",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_INFO: web.RequestKey[dict[str, Any]] = web.RequestKey("sandbox_info", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A DCS error body. Authorization errors carry ``status`` as a string, like DCS does."""
    if status in (401, 403):
        body: dict[str, Any] = {
            "type": AUTH_ERROR_TYPE,
            "status": str(status),
            "title": "Authorization",
            "report": {"message": message},
        }
    else:
        body = {
            "type": ERROR_TYPE,
            "status": status,
            "title": _TITLES.get(status, "Error"),
            "report": {"message": message},
            "message": message,
        }
    return json_response(body, status, headers)


class DroppedResponse(web.Response):
    """Marker: the connection was reset and nothing is sent."""


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection with a TCP reset and no response (a connection-reset fault)."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return DroppedResponse(status=599)


async def apply_fault(
    request: web.Request, state: SandboxState, target: Target
) -> web.Response | None:
    fault: RequestFault | None = state.faults.request_fault(target)
    if fault is None:
        return None
    if fault.delay_s > 0:
        await asyncio.sleep(fault.delay_s)
    if fault.reset:
        return drop_connection(request)
    if fault.status is None:
        return None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    if fault.status == 401:
        return problem(401, "Unauthorized: Ims service token is empty", headers)
    return problem(fault.status, fault.message or "Injected fault", headers)


@web.middleware
async def bookkeeping(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count DCS/IMS requests by status and keep the recent-requests log."""
    response = await handler(request)
    info = request.get(_INFO)
    if info is not None:
        status = "reset" if isinstance(response, DroppedResponse) else str(response.status)
        state = request.app[STATE]
        state.note_request(info.pop("_endpoint"), info.pop("_inlet", None), status, info)
    return response


def _request_info(request: web.Request, endpoint: str, inlet: str | None) -> dict[str, Any]:
    headers = request.headers
    info: dict[str, Any] = {
        "_endpoint": endpoint,
        "_inlet": inlet,
        "timeMs": int(time.time() * 1000),
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "contentType": headers.get("Content-Type"),
        "contentLength": request.content_length,
        "hasAuthorization": "Authorization" in headers,
        "sandboxName": headers.get("x-sandbox-name"),
        "flowId": headers.get("x-adobe-flow-id") or request.query.get("x-adobe-flow-id"),
        "messages": 0,
    }
    request[_INFO] = info
    return info


# -- IMS ---------------------------------------------------------------------------------------


async def _ims_token(request: web.Request, legacy: bool) -> web.StreamResponse:
    state = request.app[STATE]
    _request_info(request, "ims_legacy" if legacy else "ims_v3", None)
    faulted = await apply_fault(request, state, "ims")
    if faulted is not None:
        return faulted
    form: dict[str, str] = {k: v for k, v in request.query.items()}
    if request.can_read_body:
        try:
            posted = await request.post()
        except (ValueError, HTTPRequestEntityTooLarge):
            return json_response(
                {"error": "invalid_request", "error_description": "unreadable form body"}, 400
            )
        form.update({k: v for k, v in posted.items() if isinstance(v, str)})
    try:
        token, lifetime = state.tokens.issue(form)
    except ImsError as exc:
        return json_response(exc.body(), exc.status)
    return json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in(lifetime, legacy),
        }
    )


async def ims_token_v3(request: web.Request) -> web.StreamResponse:
    return await _ims_token(request, legacy=False)


async def ims_token_legacy(request: web.Request) -> web.StreamResponse:
    return await _ims_token(request, legacy=True)


# -- DCS ---------------------------------------------------------------------------------------


def _bearer(request: web.Request) -> str:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


async def _collection(request: web.Request, batch: bool) -> web.StreamResponse:
    state = request.app[STATE]
    inlet_id = request.match_info["inlet"]
    info = _request_info(request, "batch" if batch else "single", inlet_id)
    faulted = await apply_fault(request, state, "dcs")
    if faulted is not None:
        return faulted
    config = state.config
    inlet = config.inlet(inlet_id)
    if inlet is None:
        return problem(404, f"Inlet not found: {inlet_id}")
    if inlet.auth_required:
        token = _bearer(request)
        if not token:
            return problem(401, "Unauthorized: Ims service token is empty")
        verdict = state.tokens.check(token)
        if verdict == "expired":
            return problem(403, "Forbidden: Ims service token is expired")
        if verdict != "valid":
            return problem(403, "Forbidden: Ims service token is invalid")
        if state.faults.take_auth_403():
            return problem(403, "Forbidden: Ims service token is not authorized (injected)")
    limit = config.max_body_bytes
    too_large = f"Request body exceeds the {limit} byte limit"
    if request.content_length is not None and request.content_length > limit:
        return problem(413, too_large)
    try:
        raw = await request.read()
    except HTTPRequestEntityTooLarge:
        return problem(413, too_large)
    except ConnectionResetError:
        # The client went away mid-body (e.g. a worker cancelling at shutdown): nothing to answer.
        state.counters.client_disconnects += 1
        raise web.HTTPBadRequest(text="client disconnected") from None
    info["bytes"] = len(raw)
    if len(raw) > limit:
        return problem(413, too_large)
    state.counters.bytes_received += len(raw)
    sync_validation = request.query.get("syncValidation", "").lower() == "true"
    if sync_validation:
        state.counters.sync_validation_requests += 1
        if not batch and not _sync_validation_allowed(state):
            return problem(
                429, "syncValidation is limited to 60 requests per minute", {"Retry-After": "60"}
            )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return problem(400, "Malformed JSON body")
    now_ms = int(time.time() * 1000)
    if batch:
        messages = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(messages, list):
            return problem(400, "Batch body must be an object with a messages array")
        if not messages:
            return problem(400, "Batch has no messages")
        info["messages"] = len(messages)
        throttled = _rate_limited(state, len(messages))
        if throttled is not None:
            return throttled
        return _batch(request, state, inlet_id, messages, now_ms)
    info["messages"] = 1
    throttled = _rate_limited(state, 1)
    if throttled is not None:
        return throttled
    flow = config.raw_flow(info["flowId"])
    if flow is not None:
        return _raw(request, state, inlet_id, doc, now_ms, flow)
    return _single(request, state, inlet_id, doc, now_ms)


def _rate_limited(state: SandboxState, messages: int) -> web.Response | None:
    """429 above the configured accepted rate (worker/sandbox/rate_limit.py)."""
    retry_after = state.faults.rate.admit(messages)
    if retry_after is None:
        return None
    return problem(
        429, "Too many requests: the organisation's rate limit is exceeded",
        {"Retry-After": retry_after},
    )


def _sync_validation_allowed(state: SandboxState) -> bool:
    now = time.monotonic()
    times = state.sync_validation_times
    while times and now - times[0] > 60:
        times.popleft()
    if len(times) >= state.config.sync_validation_per_minute:
        return False
    times.append(now)
    return True


def _record_base(request: web.Request, inlet_id: str, now_ms: int) -> dict[str, Any]:
    """The per-request part of every stored record (copied per message, then completed)."""
    return {
        "xdmEntity": None,
        "header": None,
        "receivedTimeMs": now_ms,
        "xactionId": None,
        "inletId": inlet_id,
        "datasetId": None,
        "flowIdHeader": request.headers.get("x-adobe-flow-id")
        or request.query.get("x-adobe-flow-id"),
        "sandboxName": request.headers.get("x-sandbox-name"),
    }


def _record(base: dict[str, Any], accepted: Acceptance, xaction_id: str) -> bytes:
    record = base.copy()
    record["xdmEntity"] = accepted.entity
    record["header"] = accepted.header
    record["xactionId"] = xaction_id
    record["datasetId"] = accepted.dataset_id
    return orjson.dumps(record)


def _batch(
    request: web.Request, state: SandboxState, inlet_id: str, messages: list[Any], now_ms: int
) -> web.Response:
    inlet = state.config.inlet(inlet_id)
    assert inlet is not None
    batch_id = state.xaction_id(now_ms)
    key = state.failure_key(inlet.failure_key)
    with_xaction = inlet.failure_xaction_id
    check = state.checker.check
    store = state.store
    keep = store.keeps_records
    base = _record_base(request, inlet_id, now_ms)
    faults = state.faults
    platform = state.platform
    async_active = platform.async_active
    tally = RequestTally()
    by_dataset = tally.accepted
    responses: list[dict[str, Any]] = []
    accepted = 0
    for index, message in enumerate(messages):
        if faults.has_message_faults:
            hit = faults.message_fault(orjson.dumps(message))
            if hit is not None:
                status, text = hit
                entry: dict[str, Any] = {key: status, "message": text}
                if with_xaction:
                    entry["xactionId"] = f"{batch_id}:{index}"
                responses.append(entry)
                dataset = _dataset_of(message)
                state.note_rejection(inlet_id, dataset, index, status, "injected", text)
                continue
        result = check(message, inlet)
        if isinstance(result, Rejection):
            entry = {key: result.status, "message": result.message}
            if with_xaction:
                entry["xactionId"] = f"{batch_id}:{index}"
            responses.append(entry)
            state.note_rejection(
                inlet_id, result.dataset_id, index, result.status, result.reason, result.message
            )
            continue
        xaction_id = f"{batch_id}:{index}"
        responses.append({"xactionId": xaction_id})
        accepted += 1
        if async_active and _fails_later(platform, tally, message, result):
            continue
        record = _record(base, result, xaction_id) if keep else None
        store.add(result.dataset_id, result.entity.get("_id"), record)
        by_dataset[result.dataset_id] = by_dataset.get(result.dataset_id, 0) + 1
    store.flush()
    platform.record_request(now_ms, inlet_id, tally)
    counters = state.counters
    counters.messages_received += len(messages)
    counters.messages_accepted += accepted
    inlet_counts = counters.inlet(inlet_id)
    inlet_counts.messages += len(messages)
    inlet_counts.accepted += accepted
    return json_response(
        {
            "inletId": inlet_id,
            "batchId": batch_id,
            "receivedTimeMs": now_ms,
            "responses": responses,
        },
        207,
    )


def _single(
    request: web.Request, state: SandboxState, inlet_id: str, message: Any, now_ms: int
) -> web.Response:
    inlet = state.config.inlet(inlet_id)
    assert inlet is not None
    counters = state.counters
    counters.messages_received += 1
    counters.inlet(inlet_id).messages += 1
    if state.faults.has_message_faults:
        hit = state.faults.message_fault(orjson.dumps(message))
        if hit is not None:
            status, text = hit
            state.note_rejection(inlet_id, _dataset_of(message), 0, status, "injected", text)
            return problem(status, text)
    result = state.checker.check(message, inlet)
    if isinstance(result, Rejection):
        state.note_rejection(
            inlet_id, result.dataset_id, 0, result.status, result.reason, result.message
        )
        return problem(result.status, result.message)
    xaction_id = state.xaction_id(now_ms)
    counters.messages_accepted += 1
    if _accepted_one(state, inlet_id, now_ms, message, result):
        record = (
            _record(_record_base(request, inlet_id, now_ms), result, xaction_id)
            if state.store.keeps_records
            else None
        )
        state.store.add(result.dataset_id, result.entity.get("_id"), record)
        state.store.flush()
    counters.inlet(inlet_id).accepted += 1
    return json_response({"inletId": inlet_id, "xactionId": xaction_id, "receivedTimeMs": now_ms})


def _raw(
    request: web.Request,
    state: SandboxState,
    inlet_id: str,
    doc: Any,
    now_ms: int,
    flow: RawFlowConfig,
) -> web.Response:
    """A raw (Data Prep) message on the single endpoint: mapped, checked, stored."""
    inlet = state.config.inlet(inlet_id)
    assert inlet is not None
    counters = state.counters
    counters.messages_received += 1
    counters.inlet(inlet_id).messages += 1
    if state.faults.has_message_faults:
        hit = state.faults.message_fault(orjson.dumps(doc))
        if hit is not None:
            status, text = hit
            state.note_rejection(inlet_id, flow.dataset, 0, status, "injected", text)
            return problem(status, text)
    result, operation = state.checker.check_raw(doc, flow, inlet)
    if isinstance(result, Rejection):
        state.note_rejection(
            inlet_id, result.dataset_id, 0, result.status, result.reason, result.message
        )
        return problem(result.status, result.message)
    xaction_id = state.xaction_id(now_ms)
    counters.messages_accepted += 1
    if _accepted_one(state, inlet_id, now_ms, doc, result):
        record = None
        if state.store.keeps_records:
            base = _record_base(request, inlet_id, now_ms)
            base["operation"] = operation
            record = _record(base, result, xaction_id)
        state.store.add(result.dataset_id, result.entity.get("_id"), record)
        state.store.flush()
    counters.inlet(inlet_id).accepted += 1
    return json_response({"inletId": inlet_id, "xactionId": xaction_id, "receivedTimeMs": now_ms})


def _fails_later(
    platform: PlatformData, tally: RequestTally, message: Any, result: Acceptance
) -> bool:
    """Accepted at DCS, but picked by an async-fail fault: its row goes to a failed batch."""
    error = platform.async_failure(message)
    if error is None:
        return False
    tally.failed.setdefault(result.dataset_id, []).append((result.entity, error))
    return True


def _accepted_one(
    state: SandboxState, inlet_id: str, now_ms: int, message: Any, result: Acceptance
) -> bool:
    """Catalog bookkeeping of one message accepted on the single endpoint; False when an
    async-fail fault picked it (not stored: its row goes to a failed batch)."""
    platform = state.platform
    tally = RequestTally()
    kept = not (platform.async_active and _fails_later(platform, tally, message, result))
    if kept:
        tally.accepted[result.dataset_id] = 1
    platform.record_request(now_ms, inlet_id, tally)
    return kept


def _dataset_of(message: Any) -> str | None:
    if isinstance(message, dict):
        header = message.get("header")
        if isinstance(header, dict):
            ds = header.get("datasetId")
            if isinstance(ds, str):
                return ds
    return None


async def collection_batch(request: web.Request) -> web.StreamResponse:
    return await _collection(request, batch=True)


async def collection_single(request: web.Request) -> web.StreamResponse:
    return await _collection(request, batch=False)


def build_app(state: SandboxState) -> web.Application:
    # aiohttp's own limit is a backstop; the DCS handler enforces max_body_bytes exactly.
    app = web.Application(
        middlewares=[bookkeeping],
        client_max_size=max(state.config.max_body_bytes, 1024 * 1024) + 1,
    )
    app[STATE] = state
    app.router.add_post("/ims/token/v3", ims_token_v3)
    app.router.add_post("/ims/token", ims_token_legacy)
    app.router.add_post("/collection/batch/{inlet}", collection_batch)
    app.router.add_post("/collection/{inlet}", collection_single)
    add_admin_routes(app)
    add_platform_routes(app)
    return app
