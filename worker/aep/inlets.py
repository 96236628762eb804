"""Which DCS client serves which inlet URL; raw inlets through the single-message endpoint.

`InletRouter` is the `DcsTransport` the one `Deliverer` of a worker talks to. Each target URL
has its own `DcsClient` (its IMS credentials: one `TokenProvider` per distinct credential
set, shared by the routes that use it), so one worker can feed several AEP organisations.

URLs registered as *single* (raw routes) get one message per request on
`POST {base}/collection/{inlet}`: the pipeline hands them batches of exactly one message and
the `Deliverer` only ever splits or subsets batches, so a single URL's batch body is
`{"messages":[<payload>]}` and the payload alone is posted. Answers are mapped onto the batch
vocabulary the `Deliverer` understands:

- 2xx → that message accepted (the classifier knows the single endpoint's 200 body);
- 400 → ambiguous on the single endpoint (the message, or a deleted dataflow?). Treated as a
  request-level (configuration) answer: the delivery blocks and probes, never dead-letters.
  Only when the same URL accepted another message *after* this message's first 400 is it the
  message's fault: then it becomes a per-message 400 (dead-lettered, stage ``deliver``). A lone
  refused message with no other traffic is held, like a configuration error;
- everything else (401/403, 404, 413, 429, 5xx, transport) unchanged.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

import orjson

from worker.aep.client import DcsClient
from worker.aep.responses import DcsResponse, Transport

__all__ = ["InletRouter"]

_PREFIX: Final = b'{"messages":['
_SUFFIX: Final = b"]}"
_REFUSALS_KEPT: Final = 10_000


class InletRouter:
    def __init__(self, clients: Mapping[str, DcsClient], single: set[str] | None = None) -> None:
        self._clients = dict(clients)
        self._single = set(single or ())
        self._accepted: dict[str, int] = {}  # per single URL: 2xx answers so far
        # sha256 of a refused payload -> the URL's 2xx count at its first 400.
        self._refused: OrderedDict[bytes, int] = OrderedDict()

    @property
    def clients(self) -> list[DcsClient]:
        return list({id(c): c for c in self._clients.values()}.values())

    async def post_batch(
        self,
        url: str,
        body: bytes,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse:
        client = self._clients.get(url)
        if client is None:
            return DcsResponse(
                None, transport=Transport.INVALID_URL, detail=f"no client for {url!r} (a bug)"
            )
        if url not in self._single:
            return await client.post_batch(
                url, body, extra_headers,
                authenticated=authenticated, request_timeout=request_timeout,
            )
        if not (body.startswith(_PREFIX) and body.endswith(_SUFFIX)):
            raise ValueError("single-endpoint batch body is not {\"messages\":[...]}")
        payload = body[len(_PREFIX) : -len(_SUFFIX)]
        resp = await client.post_single(
            url, payload, extra_headers,
            authenticated=authenticated, request_timeout=request_timeout,
        )
        status = resp.status
        if status is not None and 200 <= status < 300:
            self._accepted[url] = self._accepted.get(url, 0) + 1
            return resp
        if status == 400:
            return self._refusal(url, payload, resp)
        return resp

    def _refusal(self, url: str, payload: bytes, resp: DcsResponse) -> DcsResponse:
        key = hashlib.sha256(url.encode() + b"\0" + payload).digest()
        accepted = self._accepted.get(url, 0)
        first = self._refused.get(key)
        if first is None:
            self._refused[key] = accepted
            if len(self._refused) > _REFUSALS_KEPT:
                self._refused.popitem(last=False)
            return resp
        if accepted <= first:
            return resp  # nothing got through since: still looks like configuration
        del self._refused[key]
        try:
            detail = orjson.loads(resp.body) if resp.body else {}
        except orjson.JSONDecodeError:
            detail = {}
        entry = {"statusCode": 400, "message": _message(detail)}
        return DcsResponse(
            207, resp.headers, orjson.dumps({"responses": [entry]}), elapsed=resp.elapsed
        )


def _message(body: object) -> str:
    if isinstance(body, dict):
        for key in ("message", "title", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
        report = body.get("report")
        if isinstance(report, dict) and isinstance(report.get("message"), str):
            return str(report["message"])[:300]
    return "HTTP 400 on the single-message endpoint"
