"""The AEP sandbox over HTTP: IMS, DCS (207, 413, 400/401/403/404), validation, faults, storage."""

from __future__ import annotations

import asyncio
import copy
import email.utils
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
ORG = "EXAMPLEORG0123456789@AdobeOrg"
CONTENT_TYPE = "application/vnd.adobe.xed-full+json;version=1"


# -- message builders ----------------------------------------------------------------------------


def event_entity(n: int = 1, **extra: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "_id": f"{n:064x}",
        "timestamp": "2024-07-01T10:00:00Z",
        "eventType": "loyalty.pointsIssued",
        "identityMap": {
            "CapillaryCustomerId": [
                {"id": "379499720", "primary": True, "authenticatedState": "authenticated"}
            ]
        },
        "loyalty": {"pointsGained": [{"value": 120, "loyaltyProgramId": "1"}]},
        "_capillary": {"eventId": f"evt-{n}", "eventName": "pointsIssued", "orgId": 1655},
    }
    entity.update(extra)
    return entity


def profile_entity(n: int = 1, **extra: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "_id": f"p{n:063x}",
        "identityMap": {"CapillaryCustomerId": [{"id": str(n), "primary": True}]},
        "person": {"name": {"firstName": "Ada", "lastName": "Lovelace"}},
        "loyalty": {"tier": "Gold", "points": 1200, "tierExpiryDate": "2025-12-31"},
        "extSourceSystemAudit": {"lastUpdatedDate": "2024-07-01T10:00:00Z"},
        "_capillary": {"customerId": str(n), "orgId": 1655, "tierNumber": 3},
    }
    entity.update(extra)
    return entity


def message(
    entity: dict[str, Any] | None = None,
    dataset: str = "ds-loyalty-events",
    schema: str = EE,
    org: str = ORG,
    content_type: str = CONTENT_TYPE,
) -> dict[str, Any]:
    ref = {"id": schema, "contentType": content_type}
    return {
        "header": {
            "schemaRef": ref,
            "imsOrgId": org,
            "datasetId": dataset,
            "flowId": "flow-1",
            "source": {"name": "Capillary"},
        },
        "body": {"xdmMeta": {"schemaRef": dict(ref)}, "xdmEntity": entity or event_entity()},
    }


def profile_message(
    entity: dict[str, Any] | None = None, dataset: str = "ds-profile-customer"
) -> dict[str, Any]:
    return message(entity or profile_entity(), dataset=dataset, schema=PROFILE)


# -- HTTP helpers --------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_token(
    http: aiohttp.ClientSession, sb: SandboxHandle, legacy: bool = False
) -> dict[str, Any]:
    url = sb.ims_legacy_url if legacy else sb.ims_token_url
    async with http.post(
        url,
        data={
            "client_id": sb.client_id,
            "client_secret": sb.client_secret,
            "grant_type": "client_credentials",
            "scope": "openid,AdobeID,read_organizations",
        },
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def token_of(http: aiohttp.ClientSession, sb: SandboxHandle) -> str:
    return str((await get_token(http, sb))["access_token"])


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else orjson.dumps(body)
    async with http.post(url, data=data, headers=hdrs) as resp:
        text = await resp.read()
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = text
        return resp.status, parsed, resp.headers


async def post_batch(
    http: aiohttp.ClientSession,
    sb: SandboxHandle,
    messages: list[Any],
    *,
    token: str | None = None,
    inlet: str = "capillary-inlet",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    if token is None and inlet == "capillary-inlet":
        token = await token_of(http, sb)
    return await post(
        http, sb.batch_url(inlet), body={"messages": messages}, token=token, headers=headers
    )


# -- IMS -----------------------------------------------------------------------------------------


async def test_ims_v3_answers_seconds_and_legacy_milliseconds(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    v3 = await get_token(http, sandbox)
    legacy = await get_token(http, sandbox, legacy=True)
    assert v3["token_type"] == "bearer" and legacy["token_type"] == "bearer"
    assert v3["expires_in"] == 86399
    assert legacy["expires_in"] == 86_399_000
    assert v3["access_token"] != legacy["access_token"]
    assert len(v3["access_token"]) >= 32
    assert sandbox.stats()["ims"]["tokens_issued"] == 2


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_id": "nobody", "client_secret": "sandbox-secret"}, 400, "invalid_client"),
        ({"client_id": "sandbox-client", "client_secret": "wrong"}, 401, "invalid_client"),
        (
            {"client_id": "sandbox-client", "client_secret": "sandbox-secret", "grant_type": None},
            400,
            "invalid_request",
        ),
        (
            {
                "client_id": "sandbox-client",
                "client_secret": "sandbox-secret",
                "grant_type": "authorization_code",
            },
            400,
            "unsupported_grant_type",
        ),
    ],
)
async def test_ims_errors_use_the_oauth_shape(
    sandbox: SandboxHandle,
    http: aiohttp.ClientSession,
    form: dict[str, str | None],
    status: int,
    error: str,
) -> None:
    data = {"grant_type": "client_credentials", "scope": "openid", **form}
    data = {k: v for k, v in data.items() if v is not None}
    for url in (sandbox.ims_token_url, sandbox.ims_legacy_url):
        async with http.post(url, data=data) as resp:
            assert resp.status == status
            body = await resp.json()
            assert body["error"] == error
            assert body["error_description"]
            assert "sandbox-secret" not in str(body) and "wrong" not in str(body)


async def test_tokens_really_expire_on_both_endpoints(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    sandbox.set_token_lifetime(1)
    v3 = await get_token(http, sandbox)
    legacy = await get_token(http, sandbox, legacy=True)
    assert v3["expires_in"] == 1
    assert legacy["expires_in"] == 1000
    for tok in (v3["access_token"], legacy["access_token"]):
        status, _, _ = await post_batch(http, sandbox, [message()], token=tok)
        assert status == 207
    await asyncio.sleep(1.1)
    for tok in (v3["access_token"], legacy["access_token"]):
        status, body, _ = await post_batch(http, sandbox, [message()], token=tok)
        assert status == 403
        assert body["status"] == "403"
        assert "expired" in body["report"]["message"]
    fresh = await token_of(http, sandbox)
    status, _, _ = await post_batch(http, sandbox, [message()], token=fresh)
    assert status == 207


async def test_revoked_tokens_are_rejected(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    tok = await token_of(http, sandbox)
    assert sandbox.revoke_tokens() == 1
    status, _, _ = await post_batch(http, sandbox, [message()], token=tok)
    assert status == 403


# -- DCS batch: 207 ------------------------------------------------------------------------------


async def test_207_has_one_result_per_message_in_order(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    no_flow = message(event_entity(9))
    del no_flow["header"]["flowId"]
    messages = [
        message(event_entity(1)),
        message(event_entity(2, timestamp="yesterday")),
        message(event_entity(3, eventType=None)),
        profile_message(),
        message(event_entity(4), schema=PROFILE),
        message(event_entity(5), dataset="ds-nowhere"),
        message(event_entity(6), org="OTHER@AdobeOrg"),
        no_flow,
        {"header": {}},
        message(event_entity(7), dataset="ds-commerce-events"),
    ]
    status, body, _ = await post_batch(http, sandbox, messages)
    assert status == 207
    assert body["inletId"] == "capillary-inlet"
    assert isinstance(body["receivedTimeMs"], int)
    batch_id = body["batchId"]
    responses = body["responses"]
    assert len(responses) == len(messages)
    ok = [i for i, r in enumerate(responses) if "xactionId" in r]
    assert ok == [0, 3, 9]
    for i in ok:
        assert responses[i] == {"xactionId": f"{batch_id}:{i}"}
    failed = {i: r for i, r in enumerate(responses) if i not in ok}
    assert all(r["statusCode"] == 400 and "xactionId" not in r for r in failed.values())
    assert "/timestamp" in failed[1]["message"] and "format" in failed[1]["message"]
    assert "/eventType" in failed[2]["message"] and "null" in failed[2]["message"]
    assert "schemaRef" in failed[4]["message"]
    assert "unknown dataset" in failed[5]["message"]
    assert "imsOrgId" in failed[6]["message"]
    assert "flowId" in failed[7]["message"]
    assert failed[8]["message"]
    stats = sandbox.stats()
    assert stats["messages"] == {
        "received": 10,
        "accepted": 3,
        "rejected": 7,
        "rejected_by_status": {"400": 7},
        "rejected_by_reason": stats["messages"]["rejected_by_reason"],
    }
    assert stats["datasets"]["ds-loyalty-events"]["accepted"] == 1
    assert stats["datasets"]["ds-loyalty-events"]["rejected"] == 5  # 1, 2, 4, 6, 7
    assert stats["datasets"]["ds-profile-customer"]["accepted"] == 1
    assert stats["datasets"]["ds-commerce-events"]["accepted"] == 1
    assert stats["requests"]["by_status"]["207"] == 1
    assert [r["index"] for r in sandbox.rejections()] == [1, 2, 4, 5, 6, 7, 8]


async def test_failure_entries_use_statuscode_or_status(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    bad = message(event_entity(1, timestamp="nope"))
    _, body, _ = await post_batch(http, sandbox, [bad])
    assert set(body["responses"][0]) == {"statusCode", "message"}
    sandbox.set_faults(failure_key="status")
    _, body, _ = await post_batch(http, sandbox, [bad])
    assert set(body["responses"][0]) == {"status", "message"}
    assert body["responses"][0]["status"] == 400
    sandbox.clear_faults()
    _, body, _ = await post_batch(http, sandbox, [bad])
    assert "statusCode" in body["responses"][0]


async def test_inlet_config_chooses_the_failure_shape(
    sandbox_factory: Any, http: aiohttp.ClientSession
) -> None:
    sb = sandbox_factory(
        inlets=[
            {
                "id": "status-inlet",
                "auth_required": False,
                "failure_key": "status",
                "failure_xaction_id": True,
            },
            {"id": "events-only", "auth_required": False, "datasets": ["ds-loyalty-events"]},
        ]
    )
    status, body, _ = await post_batch(
        http, sb, [message(), message(event_entity(2, timestamp="x"))], inlet="status-inlet"
    )
    assert status == 207
    second = body["responses"][1]
    assert second["status"] == 400 and second["xactionId"] == f"{body['batchId']}:1"
    _, body, _ = await post_batch(http, sb, [profile_message()], inlet="events-only")
    assert "not connected to this inlet" in body["responses"][0]["message"]
    status, _, _ = await post_batch(http, sb, [message()], inlet="capillary-inlet")
    assert status == 404


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.adobe.xed-full+json;version=1",
        "application/vnd.adobe.xed-full+json; version=1.0",
        "application/vnd.adobe.xed-full-notext+json; version=1",
    ],
)
async def test_schema_ref_matches_by_id_whatever_the_content_type(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, content_type: str
) -> None:
    _, body, _ = await post_batch(http, sandbox, [message(content_type=content_type)])
    assert "xactionId" in body["responses"][0]


# -- request-level errors ------------------------------------------------------------------------


async def test_body_limit_is_inclusive(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    limit = 1_000_000
    tok = await token_of(http, sandbox)
    base = orjson.dumps({"messages": [message()]})
    exact = base + b" " * (limit - len(base))
    assert len(exact) == limit
    status, body, _ = await post(http, sandbox.batch_url(), raw=exact, token=tok)
    assert status == 207 and "xactionId" in body["responses"][0]
    status, body, _ = await post(http, sandbox.batch_url(), raw=exact + b" ", token=tok)
    assert status == 413
    assert "1000000" in body["report"]["message"]

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    # Without Content-Length (chunked): the bytes read decide.
    hdrs = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    async with http.post(sandbox.batch_url(), data=chunks(exact + b"  "), headers=hdrs) as resp:
        assert resp.status == 413
    async with http.post(sandbox.batch_url(), data=chunks(exact), headers=hdrs) as resp:
        assert resp.status == 207
    assert sandbox.stats()["requests"]["by_status"] == {"200": 1, "207": 2, "413": 2}


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'{"messages": {}}', b'{"messages": []}', b'{"msgs": [1]}', b""],
)
async def test_malformed_requests_are_400_not_207(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, raw: bytes
) -> None:
    tok = await token_of(http, sandbox)
    status, body, _ = await post(http, sandbox.batch_url(), raw=raw, token=tok)
    assert status == 400
    assert body["report"]["message"]


async def test_unknown_inlet_is_404(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    status, _, _ = await post_batch(http, sandbox, [message()], inlet="no-such-inlet", token="x")
    assert status == 404
    status, _, _ = await post(http, sandbox.inlet_url("no-such-inlet"), body=message())
    assert status == 404


async def test_missing_token_is_401_with_the_dcs_body(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    for url in (sandbox.batch_url(), sandbox.inlet_url()):
        status, body, _ = await post(http, url, body={"messages": [message()]})
        assert status == 401
        assert body == {
            "type": "https://ns.adobe.com/aep/errors/data-collection-service-authorization",
            "status": "401",
            "title": "Authorization",
            "report": {"message": body["report"]["message"]},
        }
        assert body["report"]["message"].endswith("Ims service token is empty")


async def test_invalid_token_is_403_and_open_inlet_needs_none(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post_batch(http, sandbox, [message()], token="not-a-token")
    assert status == 403 and body["status"] == "403"
    status, body, _ = await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert status == 207 and "xactionId" in body["responses"][0]


# -- per-message validation ----------------------------------------------------------------------


async def test_xdm_violations_name_path_and_keyword_never_the_value(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    secret = "ada.lovelace@example.com"
    wrong_type = event_entity(1)
    wrong_type["_capillary"]["orgId"] = secret
    unknown_top = event_entity(2, secretField=secret)
    unknown_nested = event_entity(3)
    unknown_nested["_capillary"]["email"] = secret
    missing = event_entity(4)
    del missing["timestamp"]
    bad_enum = event_entity(5)
    bad_enum["identityMap"]["Email"] = [{"id": secret, "authenticatedState": secret}]
    profile_bad_date = profile_entity(6)
    profile_bad_date["loyalty"]["tierExpiryDate"] = "2025-12-31T00:00:00Z"
    _, body, _ = await post_batch(
        http,
        sandbox,
        [
            message(wrong_type),
            message(unknown_top),
            message(unknown_nested),
            message(missing),
            message(bad_enum),
            profile_message(profile_bad_date),
        ],
    )
    msgs = [r["message"] for r in body["responses"]]
    assert all(secret not in m for m in msgs), msgs
    assert "/_capillary/orgId: type" in msgs[0]
    assert "propertyNames" in msgs[1] and "secretField" in msgs[1]
    assert "/_capillary: additionalProperties" in msgs[2] and "email" in msgs[2]
    assert "required" in msgs[3] and "timestamp" in msgs[3]
    assert "/identityMap/Email/0/authenticatedState: enum" in msgs[4]
    assert "/loyalty/tierExpiryDate: format" in msgs[5]
    assert all(EE in m for m in msgs[:5])


@pytest.mark.parametrize(
    ("mutate", "where", "kind"),
    [
        (lambda e: e.update(eventType=None), "/eventType", "null"),
        (lambda e: e["_capillary"].update(billNumber=""), "/_capillary/billNumber", "empty string"),
        (lambda e: e.update(commerce={}), "/commerce", "empty object"),
        (
            lambda e: e["loyalty"].update(pointsRedemption=[]),
            "/loyalty/pointsRedemption",
            "empty array",
        ),
        (
            lambda e: e["identityMap"]["CapillaryCustomerId"][0].update(id=None),
            "/identityMap/CapillaryCustomerId/0/id",
            "null",
        ),
    ],
)
async def test_null_and_empty_values_are_rejected(
    sandbox: SandboxHandle, http: aiohttp.ClientSession, mutate: Any, where: str, kind: str
) -> None:
    entity = event_entity(1)
    mutate(entity)
    _, body, _ = await post_batch(http, sandbox, [message(entity)])
    entry = body["responses"][0]
    assert entry["statusCode"] == 400
    assert entry["message"].startswith(f"{where}: {kind} value")


async def test_strings_that_look_empty_are_fine(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    entity = event_entity(1)
    entity["_capillary"]["billNumber"] = 'null "" {} []'
    _, body, _ = await post_batch(http, sandbox, [message(entity)])
    assert "xactionId" in body["responses"][0]


def _padded(entity: dict[str, Any], path: tuple[str, str], size: int) -> dict[str, Any]:
    """``entity`` with a string field padded so the compact JSON is exactly ``size`` bytes."""
    out = copy.deepcopy(entity)
    out[path[0]][path[1]] = ""
    base = len(orjson.dumps(out))
    out[path[0]][path[1]] = "x" * (size - base)
    assert len(orjson.dumps(out)) == size
    return out


async def test_profile_size_limits(
    sandbox: SandboxHandle, sandbox_factory: Any, http: aiohttp.ClientSession
) -> None:
    ee_limit, record_limit = 10 * 1024, 100 * 1024
    ee_at = _padded(event_entity(1), ("_capillary", "billNumber"), ee_limit)
    ee_over = _padded(event_entity(2), ("_capillary", "billNumber"), ee_limit + 1)
    rec_at = _padded(profile_entity(3), ("_capillary", "upgradeType"), record_limit)
    rec_over = _padded(profile_entity(4), ("_capillary", "upgradeType"), record_limit + 1)
    _, body, _ = await post_batch(
        http,
        sandbox,
        [message(ee_at), message(ee_over), profile_message(rec_at), profile_message(rec_over)],
    )
    r = body["responses"]
    assert "xactionId" in r[0] and "xactionId" in r[2]
    assert r[1]["statusCode"] == 400 and "ExperienceEvent" in r[1]["message"]
    assert str(ee_limit) in r[1]["message"]
    assert r[3]["statusCode"] == 400 and "record" in r[3]["message"]
    # A dataset that is not Profile-enabled has no such limit.
    lake = sandbox_factory(
        datasets=[{"id": "ds-lake", "schema_id": EE, "profile_enabled": False}],
        inlets=[{"id": "lake", "auth_required": False}],
    )
    _, body, _ = await post_batch(http, lake, [message(ee_over, dataset="ds-lake")], inlet="lake")
    assert "xactionId" in body["responses"][0]


# -- the single endpoint -------------------------------------------------------------------------


async def test_single_endpoint(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tok = await token_of(http, sandbox)
    status, body, _ = await post(http, sandbox.inlet_url(), body=message(), token=tok)
    assert status == 200
    assert set(body) == {"inletId", "xactionId", "receivedTimeMs"}
    assert body["inletId"] == "capillary-inlet"
    status, body, _ = await post(
        http, sandbox.inlet_url(), body=message(event_entity(2, timestamp="x")), token=tok
    )
    assert status == 400
    assert "/timestamp: format" in body["report"]["message"]
    sandbox.set_faults(message_faults=[{"contains": "evt-3", "status": 503}])
    status, _, _ = await post(http, sandbox.inlet_url(), body=message(event_entity(3)), token=tok)
    assert status == 503
    assert sandbox.stats()["requests"]["by_endpoint"]["single"] == 3


async def test_sync_validation_is_counted_and_rate_limited(
    sandbox_factory: Any, http: aiohttp.ClientSession
) -> None:
    sb = sandbox_factory(sync_validation_per_minute=2)
    url = sb.inlet_url("open-inlet") + "?syncValidation=true"
    statuses = [(await post(http, url, body=message(event_entity(i))))[0] for i in range(3)]
    assert statuses == [200, 200, 429]
    assert sb.stats()["sync_validation_requests"] == 3


# -- storage and inspection ----------------------------------------------------------------------


async def test_records_are_readable_through_the_inspection_api(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    headers = {"x-sandbox-name": "dev", "x-adobe-flow-id": "flow-hdr"}
    _, body, _ = await post_batch(
        http, sandbox, [message(event_entity(i)) for i in range(5)], headers=headers
    )
    records = sandbox.records("ds-loyalty-events")
    assert [r["xdmEntity"]["_capillary"]["eventId"] for r in records] == [
        f"evt-{i}" for i in range(5)
    ]
    first = records[0]
    assert first["xactionId"] == body["responses"][0]["xactionId"]
    assert first["header"]["datasetId"] == "ds-loyalty-events"
    assert first["receivedTimeMs"] == body["receivedTimeMs"]
    assert first["sandboxName"] == "dev" and first["flowIdHeader"] == "flow-hdr"
    page = sandbox.records("ds-loyalty-events", limit=2, offset=3)
    assert [r["xdmEntity"]["_capillary"]["eventId"] for r in page] == ["evt-3", "evt-4"]
    log = sandbox.requests()
    assert log[-1]["sandboxName"] == "dev" and log[-1]["messages"] == 5
    assert log[-1]["hasAuthorization"] is True
    sandbox.reset()
    assert sandbox.records("ds-loyalty-events") == []
    assert sandbox.stats()["messages"]["received"] == 0


async def test_duplicates_are_counted_per_dataset_and_across(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    same = event_entity(1)
    await post_batch(
        http,
        sandbox,
        [
            message(same),
            message(same),
            message(same, dataset="ds-commerce-events"),
            message(event_entity(2)),
        ],
    )
    stats = sandbox.stats()
    assert stats["datasets"]["ds-loyalty-events"]["distinct_ids"] == 2
    assert stats["datasets"]["ds-loyalty-events"]["duplicate_ids"] == 1
    assert stats["datasets"]["ds-commerce-events"]["duplicate_ids"] == 0
    assert stats["all_datasets"] == {"distinct_ids": 2, "duplicate_ids": 2}


async def test_memory_store_keeps_the_newest_and_counts_the_dropped(
    sandbox_factory: Any, http: aiohttp.ClientSession
) -> None:
    sb = sandbox_factory(max_records_per_dataset=2)
    await post_batch(http, sb, [message(event_entity(i)) for i in range(3)], inlet="open-inlet")
    assert [e["_capillary"]["eventId"] for e in sb.entities("ds-loyalty-events")] == [
        "evt-1",
        "evt-2",
    ]
    counts = sb.stats()["datasets"]["ds-loyalty-events"]
    assert counts["accepted"] == 3 and counts["stored"] == 2 and counts["dropped"] == 1


async def test_count_mode_stores_nothing_but_counts(
    sandbox_factory: Any, http: aiohttp.ClientSession
) -> None:
    sb = sandbox_factory(store="count")
    _, body, _ = await post_batch(
        http,
        sb,
        [message(event_entity(i)) for i in range(4)] + [message(event_entity(0))],
        inlet="open-inlet",
    )
    assert all("xactionId" in r for r in body["responses"])
    assert sb.records("ds-loyalty-events") == []
    counts = sb.stats()["datasets"]["ds-loyalty-events"]
    assert counts["accepted"] == 5 and counts["stored"] == 0
    assert counts["distinct_ids"] == 4 and counts["duplicate_ids"] == 1


async def test_jsonl_store_appends_every_accepted_record(
    sandbox_factory: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "accepted.jsonl"
    sb = sandbox_factory(store=f"jsonl:{path}")
    await post_batch(
        http,
        sb,
        [message(event_entity(1)), profile_message(), message(event_entity(2, _id=None))],
        inlet="open-inlet",
    )
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["datasetId"] for line in lines] == ["ds-loyalty-events", "ds-profile-customer"]
    assert lines[0]["xdmEntity"]["_capillary"]["eventId"] == "evt-1"
    assert len(sb.records("ds-profile-customer")) == 1


# -- fault injection -----------------------------------------------------------------------------


async def test_next_faults_are_deterministic_429_with_both_retry_after_forms_then_503(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    tok = await token_of(http, sandbox)
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    sandbox.set_faults(
        next=[
            {"status": 429, "retry_after": "1"},
            {"status": 429, "retry_after": when},
            {"status": 503},
            {"status": 500},
        ]
    )
    results = [await post_batch(http, sandbox, [message()], token=tok) for _ in range(5)]
    assert [r[0] for r in results] == [429, 429, 503, 500, 207]
    assert results[0][2]["Retry-After"] == "1"
    assert results[1][2]["Retry-After"] == when
    assert email.utils.parsedate_to_datetime(when).timestamp() > time.time()
    assert "Retry-After" not in results[2][2]
    assert results[0][1]["status"] == 429
    stats = sandbox.stats()
    assert stats["faults_injected"] == {"429": 2, "503": 1, "500": 1}
    assert stats["messages"]["accepted"] == 1  # faulted requests accept nothing


async def test_random_shares_with_http_date_retry_after(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    sandbox.set_faults(share_429=1.0, retry_after_seconds=5, retry_after_format="http-date", seed=7)
    status, _, headers = await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert status == 429
    retry_at = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert time.time() + 3 < retry_at < time.time() + 7
    sandbox.set_faults(share_429=0.0, share_503=0.5, seed=42)
    first = [
        (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] for _ in range(20)
    ]
    sandbox.set_faults(seed=42)
    second = [
        (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] for _ in range(20)
    ]
    assert first == second  # a seed makes the dice reproducible
    assert set(first) == {207, 503}


async def test_per_message_fault_by_substring(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    sandbox.set_faults(
        message_faults=[
            {"contains": "evt-2", "status": 503, "times": 1},
            {"contains": "evt-3", "status": 400, "message": "poison"},
        ]
    )
    batch = [message(event_entity(i)) for i in (1, 2, 3)]
    _, body, _ = await post_batch(http, sandbox, batch, inlet="open-inlet")
    r = body["responses"]
    assert "xactionId" in r[0]
    assert r[1]["statusCode"] == 503
    assert r[2] == {"statusCode": 400, "message": "poison"}
    _, body, _ = await post_batch(http, sandbox, batch, inlet="open-inlet")
    r = body["responses"]
    assert "xactionId" in r[1]  # times=1 used up
    assert r[2]["statusCode"] == 400  # forever
    assert sandbox.stats()["faults_injected"] == {"message_503": 1, "message_400": 2}


async def test_connection_reset(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    sandbox.set_faults(next=[{"reset": True}])
    with pytest.raises(aiohttp.ClientError):
        await post_batch(http, sandbox, [message()], inlet="open-inlet")
    status, _, _ = await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert status == 207
    sandbox.set_faults(reset_share=1.0)
    with pytest.raises(aiohttp.ClientError):
        await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert sandbox.stats()["requests"]["by_status"]["reset"] == 2


async def test_outage_window(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    sandbox.set_faults(outage_seconds=0.8)
    statuses = [
        (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] for _ in range(3)
    ]
    assert statuses == [503, 503, 503]
    await asyncio.sleep(0.9)
    assert (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] == 207
    sandbox.set_faults(outage_seconds=0.5, outage_mode="reset")
    with pytest.raises(aiohttp.ClientError):
        await post_batch(http, sandbox, [message()], inlet="open-inlet")
    await asyncio.sleep(0.6)
    assert (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] == 207


async def test_auth_403_next(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    tok = await token_of(http, sandbox)
    sandbox.set_faults(auth_403_next=2)
    statuses = [(await post_batch(http, sandbox, [message()], token=tok))[0] for _ in range(3)]
    assert statuses == [403, 403, 207]
    # the open inlet is not authenticated, so it is not affected
    sandbox.set_faults(auth_403_next=1)
    assert (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] == 207


async def test_latency(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    sandbox.set_faults(latency_ms=300)
    started = time.monotonic()
    await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert time.monotonic() - started >= 0.3
    sandbox.set_faults(latency_ms=0, latency_spike_ms=400, latency_spike_share=1.0)
    started = time.monotonic()
    await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert time.monotonic() - started >= 0.4


async def test_ims_can_be_faulted_too(sandbox: SandboxHandle, http: aiohttp.ClientSession) -> None:
    sandbox.set_faults(targets=["ims"], next=[{"status": 503}])
    async with http.post(sandbox.ims_token_url, data={"grant_type": "client_credentials"}) as r:
        assert r.status == 503
    assert (await get_token(http, sandbox))["access_token"]
    assert (await post_batch(http, sandbox, [message()], inlet="open-inlet"))[0] == 207


async def test_bad_fault_settings_are_400(sandbox: SandboxHandle) -> None:
    with pytest.raises(AssertionError, match="400"):
        sandbox.set_faults(share_429=2)
    with pytest.raises(AssertionError, match="400"):
        sandbox.set_faults(bogus=1)


async def test_stop_refuses_connections_and_start_reuses_the_port(
    sandbox: SandboxHandle, http: aiohttp.ClientSession
) -> None:
    await post_batch(http, sandbox, [message()], inlet="open-inlet")
    port = sandbox.port
    sandbox.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_batch(http, sandbox, [message()], inlet="open-inlet")
    sandbox.start()
    assert sandbox.port == port
    status, _, _ = await post_batch(http, sandbox, [message()], inlet="open-inlet")
    assert status == 207
    assert len(sandbox.records("ds-loyalty-events")) == 2  # state survives the restart


# -- the command line ----------------------------------------------------------------------------


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "sandbox",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--store",
            "count",
            "--token-lifetime",
            "60",
            "--seed",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text().strip():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        base = ready.read_text().strip()
        import urllib.parse
        import urllib.request

        form = urllib.parse.urlencode(
            {
                "client_id": "sandbox-client",
                "client_secret": "sandbox-secret",
                "grant_type": "client_credentials",
            }
        ).encode()
        with urllib.request.urlopen(base + "/ims/token/v3", data=form, timeout=10) as resp:
            assert orjson.loads(resp.read())["expires_in"] == 60
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert base.encode() in out and b"stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
