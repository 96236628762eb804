"""The sandbox's Platform APIs (Catalog, Schema Registry, Data Access) and ``PlatformClient``,
over HTTP against the real sandbox server with real IMS tokens."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from tests.fixtures.sandbox import SandboxHandle
from tests.integration.worker_harness import EE_SCHEMA, make_settings
from worker.aep.platform import FailedBatch, PlatformClient, PlatformError

pytestmark = pytest.mark.integration

CT = "application/vnd.adobe.xed-full+json;version=1"
XED_FULL = "application/vnd.adobe.xed-full+json; version=1"


def message(n: int, dataset: str = "ds-loyalty-events", **extra: Any) -> dict[str, Any]:
    ref = {"id": EE_SCHEMA, "contentType": CT}
    entity = {
        "_id": f"evt-{n:04d}",
        "timestamp": "2024-07-01T10:00:00Z",
        "eventType": "loyalty.pointsIssued",
        "identityMap": {"CapillaryCustomerId": [{"id": str(1000 + n), "primary": True}]},
        **extra,
    }
    return {
        "header": {"schemaRef": ref, "imsOrgId": "EXAMPLEORG0123456789@AdobeOrg",
                   "datasetId": dataset, "flowId": "flow-1"},
        "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity},
    }


async def token(session: aiohttp.ClientSession, sandbox: SandboxHandle) -> str:
    async with session.post(sandbox.ims_token_url, data={
        "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
        "grant_type": "client_credentials", "scope": "openid",
    }) as resp:
        assert resp.status == 200
        return str((await resp.json())["access_token"])


def headers(tok: str, sandbox: SandboxHandle, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}", "x-api-key": sandbox.client_id,
            "x-gw-ims-org-id": sandbox.org_id, "x-sandbox-name": "prod", **extra}


async def get(
    session: aiohttp.ClientSession, url: str, hdrs: dict[str, str]
) -> tuple[int, Any, str]:
    async with session.get(url, headers=hdrs) as resp:
        raw = await resp.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        return resp.status, body, resp.headers.get("Content-Type", "")


async def test_catalog_dataset_and_gateway_auth(sandbox: SandboxHandle) -> None:
    url = f"{sandbox.platform_url}/data/foundation/catalog/dataSets/ds-loyalty-events"
    async with aiohttp.ClientSession() as session:
        tok = await token(session, sandbox)
        status, body, _ = await get(session, url, headers(tok, sandbox))
        assert status == 200
        ds = body["ds-loyalty-events"]
        assert ds["schemaRef"]["id"] == EE_SCHEMA
        assert ds["schemaRef"]["contentType"].startswith("application/vnd.adobe.xed+json")
        assert ds["imsOrg"] == sandbox.org_id and ds["name"] == "ds-loyalty-events"

        status, body, _ = await get(session, url + "?properties=name", headers(tok, sandbox))
        assert body == {"ds-loyalty-events": {"name": "ds-loyalty-events"}}

        status, body, _ = await get(
            session, url.replace("ds-loyalty-events", "ds-nope"), headers(tok, sandbox)
        )
        assert status == 404 and body["status"] == 404 and "ds-nope" in body["detail"]

        no_token = {k: v for k, v in headers(tok, sandbox).items() if k != "Authorization"}
        status, body, _ = await get(session, url, no_token)
        assert (status, body) == (401, {"error_code": "401013",
                                        "message": "Oauth token is not valid"})
        status, body, _ = await get(session, url, headers("not-a-token", sandbox))
        assert status == 401
        status, body, _ = await get(session, url, headers(tok, sandbox, **{"x-api-key": "x"}))
        assert (status, body["error_code"]) == (403, "403003")
        status, body, _ = await get(
            session, url, headers(tok, sandbox, **{"x-gw-ims-org-id": "OTHER@AdobeOrg"})
        )
        assert status == 403
        sandbox.revoke_tokens()
        status, _, _ = await get(session, url, headers(tok, sandbox))
        assert status == 401


async def test_schema_registry_resolved_altid_accept_and_override(sandbox: SandboxHandle) -> None:
    base = f"{sandbox.platform_url}/data/foundation/schemaregistry/tenant/schemas/"
    async with aiohttp.ClientSession() as session:
        tok = await token(session, sandbox)
        full = headers(tok, sandbox, Accept=XED_FULL)
        status, doc, ctype = await get(session, base + quote(EE_SCHEMA, safe=""), full)
        assert status == 200 and ctype.startswith("application/vnd.adobe.xed-full+json")
        assert "$ref" not in orjson.dumps(doc).decode() and "allOf" not in doc
        assert doc["$id"] == EE_SCHEMA
        assert doc["meta:altId"] == "_capillary.schemas.loyalty-experience-event"
        props = doc["properties"]
        assert {"_id", "timestamp", "identityMap", "loyalty", "_capillary"} <= set(props)
        assert props["timestamp"]["format"] == "date-time"
        assert set(doc["required"]) >= {"_id", "timestamp", "identityMap"}

        status, by_alt, _ = await get(session, base + doc["meta:altId"], full)
        assert status == 200 and by_alt == doc

        status, raw, _ = await get(session, base + quote(EE_SCHEMA, safe=""),
                                   headers(tok, sandbox, Accept="application/vnd.adobe.xed+json"))
        assert status == 200 and "allOf" in raw  # the unresolved form keeps its $refs

        status, body, _ = await get(session, base + quote(EE_SCHEMA, safe=""),
                                    headers(tok, sandbox, Accept="application/json"))
        assert status == 406
        status, body, _ = await get(session, base + "_capillary.schemas.nope", full)
        assert status == 404 and body["status"] == 404

        changed = dict(doc)
        changed["properties"] = {k: v for k, v in props.items() if k != "loyalty"}
        sandbox.set_registry_schema(EE_SCHEMA, changed)
        status, now, _ = await get(session, base + quote(EE_SCHEMA, safe=""), full)
        assert "loyalty" not in now["properties"]
        sandbox.remove_registry_schema(EE_SCHEMA)
        status, _, _ = await get(session, base + quote(EE_SCHEMA, safe=""), full)
        assert status == 404
        sandbox.reset_registry()
        status, again, _ = await get(session, base + quote(EE_SCHEMA, safe=""), full)
        assert status == 200 and again == doc


async def test_async_fail_fault_forms_failed_batches_with_rows(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(async_fail_substring="evt-0002", async_fail_message="bad loyalty value")
    since = int(time.time() * 1000) - 1
    msgs = [message(1), message(2), message(3), message(4, dataset="ds-commerce-events")]
    async with aiohttp.ClientSession() as session:
        tok = await token(session, sandbox)
        async with session.post(
            sandbox.batch_url(), data=orjson.dumps({"messages": msgs}),
            headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 207
            answer = await resp.json()
        assert all("xactionId" in r for r in answer["responses"])  # DCS accepted all four
        # The failed record is not in the dataset.
        assert sorted(e["_id"] for e in sandbox.entities("ds-loyalty-events")) == [
            "evt-0001", "evt-0003"]

        q = f"dataSet=ds-loyalty-events&createdAfter={since}"
        url = f"{sandbox.platform_url}/data/foundation/catalog/batches?{q}"
        status, all_batches, _ = await get(session, url, headers(tok, sandbox))
        assert status == 200
        by_status = {b["status"]: (bid, b) for bid, b in all_batches.items()}
        assert set(by_status) == {"success", "failed"}
        ok_id, ok = by_status["success"]
        failed_id, failed = by_status["failed"]
        assert ok["metrics"]["recordsWritten"] == 2 and failed["metrics"]["failedRecordCount"] == 1
        assert failed["relatedObjects"] == [{"type": "dataSet", "id": "ds-loyalty-events"}]
        assert failed["errors"][0]["description"] == "bad loyalty value"
        assert len(ok_id) == 26 and ok_id.isalnum()

        status, only_failed, _ = await get(session, url + "&status=failed", headers(tok, sandbox))
        assert list(only_failed) == [failed_id]
        status, none_after, _ = await get(
            session, url.replace(str(since), str(failed["created"])) + "&status=failed",
            headers(tok, sandbox),
        )
        assert none_after == {}

        export = f"{sandbox.platform_url}/data/foundation/export/batches/{failed_id}/failed"
        status, listing, _ = await get(session, export, headers(tok, sandbox))
        assert status == 200 and len(listing["data"]) == 1
        href = listing["data"][0]["_links"]["self"]["href"]
        async with session.get(href, headers=headers(tok, sandbox)) as resp:
            assert resp.status == 200
            raw = await resp.read()
        rows = [orjson.loads(line) for line in raw.splitlines()]
        assert [r["_id"] for r in rows] == ["evt-0002"]
        assert rows[0]["_errors"][0]["message"] == "bad loyalty value"

        status, empty, _ = await get(
            session, export.replace(failed_id, ok_id), headers(tok, sandbox)
        )
        assert status == 200 and empty["data"] == []
        status, _, _ = await get(session, export.replace(failed_id, "NOPE"), headers(tok, sandbox))
        assert status == 404
    assert sandbox.faults()["injected"]["async_fail"] == 1


def _settings(sandbox: SandboxHandle, **aep: Any) -> Any:
    return make_settings(
        "127.0.0.1:1", sandbox, topics=["t"], group="g", dlq_topic="dlq",
        aep={"platform_url": sandbox.platform_url, **aep},
    )


async def test_platform_client_against_sandbox(sandbox: SandboxHandle) -> None:
    sandbox.set_faults(async_fail_substring="evt-0007")
    since = int(time.time() * 1000) - 1
    async with aiohttp.ClientSession() as session:
        tok = await token(session, sandbox)
        async with session.post(
            sandbox.batch_url(),
            data=orjson.dumps({"messages": [message(6), message(7), message(8)]}),
            headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 207

    async with PlatformClient.from_settings(_settings(sandbox)) as platform:
        ds = await platform.dataset("ds-loyalty-events")
        assert ds["schemaRef"]["id"] == EE_SCHEMA
        schema = await platform.schema(EE_SCHEMA)
        assert "loyalty" in schema["properties"]
        assert (await platform.schema("_capillary.schemas.loyalty-profile"))["$id"].endswith(
            "loyalty-profile")
        batches = await platform.failed_batches("ds-loyalty-events", since)
        assert len(batches) == 1 and isinstance(batches[0], FailedBatch)
        assert batches[0].status == "failed" and batches[0].dataset_id == "ds-loyalty-events"
        assert batches[0].created_ms > since and batches[0].errors
        rows = await platform.failed_rows(batches[0].batch_id)
        assert [r["_id"] for r in rows] == ["evt-0007"]
        assert await platform.failed_batches("ds-commerce-events", since) == []

        with pytest.raises(PlatformError) as err:
            await platform.dataset("ds-missing")
        assert err.value.status == 404 and "ds-missing" in err.value.message
        with pytest.raises(PlatformError) as err:
            await platform.schema("https://ns.adobe.com/capillary/schemas/nope")
        assert err.value.status == 404

        sandbox.revoke_tokens()  # a 401 drops the token and retries once with a new one
        assert (await platform.dataset("ds-loyalty-events"))["name"] == "ds-loyalty-events"

    settings = _settings(sandbox, client_secret="wrong-secret")
    async with PlatformClient.from_settings(settings) as platform:
        with pytest.raises(PlatformError) as err:
            await platform.dataset("ds-loyalty-events")
        assert err.value.status is None and "invalid_client" in str(err.value)
        assert "wrong-secret" not in str(err.value)


async def test_platform_client_unreachable(sandbox: SandboxHandle) -> None:
    settings = _settings(sandbox, platform_url="http://127.0.0.1:9")
    async with PlatformClient.from_settings(settings) as platform:
        with pytest.raises(PlatformError) as err:
            await platform.dataset("ds-loyalty-events")
        assert err.value.status is None and "cannot reach" in err.value.message


async def test_registry_overrides_and_removals_from_config(
    sandbox_factory: Any, tmp_path: Any
) -> None:
    drifted = {"$id": EE_SCHEMA, "type": "object", "properties": {"_id": {"type": "integer"}}}
    path = tmp_path / "drifted.json"
    path.write_bytes(orjson.dumps(drifted))
    profile = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
    sandbox = sandbox_factory(registry_overrides={EE_SCHEMA: str(path)},
                              registry_removed=[profile])
    async with PlatformClient.from_settings(_settings(sandbox)) as platform:
        assert (await platform.schema(EE_SCHEMA))["properties"] == drifted["properties"]
        with pytest.raises(PlatformError) as err:
            await platform.schema(profile)
        assert err.value.status == 404
    sandbox.reset_registry()  # back to the configured state: still overridden and removed
    assert sandbox.registry_schema(EE_SCHEMA)["properties"] == drifted["properties"]


def test_registry_override_file_errors_name_the_setting(tmp_path: Any) -> None:
    from worker.sandbox.config import SandboxConfig, SandboxConfigError

    with pytest.raises(SandboxConfigError, match="registry_overrides"):
        SandboxConfig.from_mapping({"registry_overrides": {EE_SCHEMA: str(tmp_path / "nope")}})
    with pytest.raises(SandboxConfigError, match="registry_overrides"):
        SandboxConfig.from_mapping({"registry_overrides": {EE_SCHEMA: [1, 2]}})
