"""IMS tokens and the DCS client against the real AEP sandbox (worker/sandbox) over HTTP."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web
from pydantic import SecretStr

from tests.fixtures.sandbox import SandboxHandle
from worker.aep.auth import ImsConfigError, ImsUnavailable, TokenProvider
from worker.aep.client import DcsClient, HttpSettings, batch_url, inlet_id, make_session, single_url
from worker.aep.responses import ItemKind, Kind, Transport, classify
from worker.sandbox.app import build_app
from worker.sandbox.config import SandboxConfig
from worker.sandbox.state import SandboxState

pytestmark = pytest.mark.integration

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
CT = "application/vnd.adobe.xed-full+json;version=1"


def message(n: int, org: str = "EXAMPLEORG0123456789@AdobeOrg", **extra: Any) -> bytes:
    ref = {"id": EE, "contentType": CT}
    entity = {
        "_id": f"{n:064x}",
        "timestamp": "2024-07-01T10:00:00Z",
        "eventType": "loyalty.pointsIssued",
        "identityMap": {"CapillaryCustomerId": [{"id": str(1000 + n), "primary": True}]},
        **extra,
    }
    return orjson.dumps(
        {
            "header": {
                "schemaRef": ref,
                "imsOrgId": org,
                "datasetId": "ds-loyalty-events",
                "flowId": "flow-1",
                "source": {"name": "Capillary"},
            },
            "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity},
        }
    )


def body_of(*msgs: bytes) -> bytes:
    return b'{"messages":[' + b",".join(msgs) + b"]}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session(HttpSettings(connection_limit=16, request_timeout=10))
    try:
        yield s
    finally:
        await s.close()


def provider(
    sb: SandboxHandle, session: aiohttp.ClientSession, *, legacy: bool = False, **kw: Any
) -> TokenProvider:
    kw.setdefault("client_secret", SecretStr(sb.client_secret))
    kw.setdefault("base_delay", 0.01)
    kw.setdefault("max_delay", 0.05)
    return TokenProvider(
        ims_url=sb.ims_legacy_url if legacy else sb.ims_token_url,
        client_id=sb.client_id,
        scope=["openid", "AdobeID", "read_organizations"],
        session=session,
        **kw,
    )


def issued(sb: SandboxHandle) -> int:
    return int(sb.stats()["ims"]["tokens_issued"])


# -- IMS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["v3", "legacy"])
async def test_token_issued_cached_and_lifetime_in_seconds(
    sandbox: SandboxHandle, session: aiohttp.ClientSession, legacy: bool
) -> None:
    tp = provider(sandbox, session, legacy=legacy)
    t1 = await tp.get()
    t2 = await tp.get()
    assert t1 == t2
    assert issued(sandbox) == 1
    assert tp.refreshes == 1
    # 86399 s on v3, 86399000 ms on legacy: either way about a day.
    remaining = tp._expires_at - time.monotonic()
    assert 80_000 < remaining < 86_400
    assert await tp.headers() == {"Authorization": f"Bearer {t1}"}


@pytest.mark.parametrize("legacy", [False, True], ids=["v3", "legacy"])
async def test_token_refreshed_on_expiry(
    sandbox: SandboxHandle, session: aiohttp.ClientSession, legacy: bool
) -> None:
    sandbox.set_token_lifetime(1)
    tp = provider(sandbox, session, legacy=legacy)
    client = DcsClient(session, tokens=tp)
    t1 = await tp.get()
    r = await client.post_batch(sandbox.inlet_url(), body_of(message(1)))
    assert r.status == 207
    await asyncio.sleep(1.1)
    t2 = await tp.get()
    assert t2 != t1
    assert tp.refreshes == 2 and issued(sandbox) == 2
    r = await client.post_batch(sandbox.inlet_url(), body_of(message(2)))
    assert r.status == 207


async def test_refresh_ahead_of_expiry_in_background(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    sandbox.set_token_lifetime(2)
    tp = provider(sandbox, session, refresh_ratio=0.5)
    t1 = await tp.get()
    await asyncio.sleep(1.1)  # past 50 % of 2 s, not expired
    assert await tp.get() == t1  # served at once; a refresh started behind it
    for _ in range(100):
        if tp.refreshes == 2:
            break
        await asyncio.sleep(0.01)
    assert tp.refreshes == 2
    assert await tp.get() != t1


async def test_single_flight_under_concurrency(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    sandbox.set_faults(targets=["ims"], latency_ms=100)
    tp = provider(sandbox, session)
    tokens = await asyncio.gather(*(tp.get() for _ in range(50)))
    assert len(set(tokens)) == 1
    assert issued(sandbox) == 1
    # A burst of invalidations of the same token costs one refresh.
    for _ in range(10):
        tp.invalidate(tokens[0])
    again = await asyncio.gather(*(tp.get() for _ in range(50)))
    assert len(set(again)) == 1 and again[0] != tokens[0]
    assert issued(sandbox) == 2
    assert tp.invalidate(tokens[0]) is False  # stale: ignored


async def test_cancelled_caller_does_not_cancel_shared_refresh(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    sandbox.set_faults(targets=["ims"], latency_ms=200)
    tp = provider(sandbox, session)
    first = asyncio.create_task(tp.get())
    second = asyncio.create_task(tp.get())
    await asyncio.sleep(0.05)
    first.cancel()
    token = await second
    assert token
    assert issued(sandbox) == 1


async def test_wrong_secret_is_a_config_error_naming_the_setting(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    tp = provider(sandbox, session, client_secret=SecretStr("not-the-secret"))
    with structlog.testing.capture_logs() as logs, pytest.raises(ImsConfigError) as err:
        await tp.get()
    e = err.value
    assert e.error == "invalid_client" and e.status == 401
    assert "aep.client_secret" in str(e)
    assert "not-the-secret" not in str(e) and "not-the-secret" not in repr(tp)
    assert "not-the-secret" not in repr(logs)
    assert tp.config_errors == 1
    # Not retried: one request to IMS.
    assert sandbox.stats()["ims"]["failures"] == 1


async def test_unknown_client_is_a_config_error(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    tp = TokenProvider(
        ims_url=sandbox.ims_token_url,
        client_id="nobody",
        client_secret=SecretStr("x"),
        scope="openid",
        session=session,
    )
    with pytest.raises(ImsConfigError, match=r"aep\.client_id"):
        await tp.get()


async def test_rotated_secret_is_reloaded_once(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    mounted = {"secret": "old-secret"}
    reloads = 0

    async def reload_secret() -> None:
        nonlocal reloads
        reloads += 1
        mounted["secret"] = sandbox.client_secret  # the rotated file now has the right one

    tp = provider(
        sandbox, session, client_secret=lambda: mounted["secret"], reload_secret=reload_secret
    )
    assert await tp.get()
    assert reloads == 1

    # Still wrong after the reload: give up with the config error (one reload per refresh).
    mounted["secret"] = "stale"
    tp2 = provider(sandbox, session, client_secret=lambda: "stale", reload_secret=lambda: None)
    with pytest.raises(ImsConfigError):
        await tp2.get()


async def test_ims_5xx_retried_then_unavailable(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    sandbox.set_faults(targets=["ims"], next=[{"status": 503}, {"reset": True}, {"status": 429}])
    tp = provider(sandbox, session, max_attempts=5)
    assert await tp.get()
    assert tp.failures == 3 and tp.refreshes == 1

    sandbox.set_faults(targets=["ims"], next=[{"status": 500}] * 3)
    tp2 = provider(sandbox, session, max_attempts=3)
    with pytest.raises(ImsUnavailable, match="after 3 attempts"):
        await tp2.get()


async def test_ims_down_is_unavailable(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    sandbox.stop()
    tp = provider(sandbox, session, max_attempts=2)
    with pytest.raises(ImsUnavailable):
        await tp.get()


# -- DCS client -------------------------------------------------------------------------------


def test_inlet_url_forms() -> None:
    base = "https://dcs.adobedc.net/collection"
    assert batch_url(f"{base}/abc") == f"{base}/batch/abc"
    assert batch_url(f"{base}/batch/abc") == f"{base}/batch/abc"
    assert batch_url(f"{base}/abc?x-adobe-flow-id=f") == f"{base}/batch/abc?x-adobe-flow-id=f"
    assert single_url(f"{base}/batch/abc") == f"{base}/abc"
    assert single_url(f"{base}/abc/") == f"{base}/abc"
    assert inlet_id(f"{base}/batch/abc") == "abc"
    assert batch_url("http://h/prefix/collection/x") == "http://h/prefix/collection/batch/x"
    for bad in ("https://dcs.adobedc.net/other/abc", f"{base}/", f"{base}/batch", f"{base}/a/b"):
        with pytest.raises(ValueError):
            batch_url(bad)


async def test_post_batch_authenticated_with_headers(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    tp = provider(sandbox, session)
    client = DcsClient(session, tokens=tp, sandbox_name="prod", flow_id="flow-9")
    for url in (sandbox.inlet_url(), sandbox.batch_url()):
        r = await client.post_batch(url, body_of(message(1), message(2)))
        out = classify(r, 2)
        assert out.kind is Kind.RESULTS
        assert [i.kind for i in out.items] == [ItemKind.ACCEPTED] * 2
        assert out.batch_id
    req = sandbox.requests(limit=1)[0]
    assert req["hasAuthorization"] is True
    assert req["sandboxName"] == "prod" and req["flowId"] == "flow-9"
    assert req["contentType"] == "application/json"
    assert req["path"] == "/collection/batch/capillary-inlet"
    assert sandbox.accepted() == 4


async def test_post_single(sandbox: SandboxHandle, session: aiohttp.ClientSession) -> None:
    client = DcsClient(session, tokens=provider(sandbox, session))
    r = await client.post_single(sandbox.batch_url(), message(7))
    out = classify(r, 1)
    assert r.status == 200 and out.items[0].kind is ItemKind.ACCEPTED
    assert out.items[0].xaction_id
    assert sandbox.requests(limit=1)[0]["path"] == "/collection/capillary-inlet"


async def test_open_inlet_without_credentials(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    client = DcsClient(session)
    r = await client.post_batch(sandbox.inlet_url(sandbox.open_inlet), body_of(message(1)))
    assert r.status == 207
    assert sandbox.requests(limit=1)[0]["hasAuthorization"] is False
    # The authenticated inlet without a token: 401, classified as auth.
    r = await client.post_batch(sandbox.inlet_url(), body_of(message(1)))
    assert classify(r, 1).kind is Kind.AUTH
    # Asking for auth without credentials configured: a config outcome, no request sent.
    n = sandbox.stats()["requests"]["total"]
    r = await client.post_batch(sandbox.inlet_url(), body_of(message(1)), authenticated=True)
    assert r.status is None and r.transport is Transport.IMS_CONFIG
    assert sandbox.stats()["requests"]["total"] == n


async def test_403_invalidates_the_token(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    tp = provider(sandbox, session)
    client = DcsClient(session, tokens=tp)
    assert (await client.post_batch(sandbox.inlet_url(), body_of(message(1)))).status == 207
    old = await tp.get()
    sandbox.revoke_tokens()
    r = await client.post_batch(sandbox.inlet_url(), body_of(message(2)))
    assert r.status == 403 and classify(r, 1).kind is Kind.AUTH
    assert tp.invalidations == 1
    assert (await client.post_batch(sandbox.inlet_url(), body_of(message(2)))).status == 207
    assert await tp.get() != old


async def test_transport_failures_are_returned_not_raised(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    client = DcsClient(session)
    url = sandbox.inlet_url(sandbox.open_inlet)

    sandbox.set_faults(next=[{"reset": True}])
    r = await client.post_batch(url, body_of(message(1)))
    assert r.status is None and r.transport is Transport.CONNECTION
    assert classify(r, 1).kind is Kind.RETRYABLE

    sandbox.set_faults(next=[{"delay_ms": 500, "status": 503}])
    r = await client.post_batch(url, body_of(message(1)), request_timeout=0.1)
    assert r.status is None and r.transport is Transport.TIMEOUT

    sandbox.stop()
    r = await client.post_batch(url, body_of(message(1)))
    assert r.status is None and r.transport is Transport.CONNECTION
    sandbox.start()
    assert (await client.post_batch(url, body_of(message(1)))).status == 207
    assert client.transport_errors == 3


async def test_ims_trouble_becomes_an_outcome(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    bad = DcsClient(session, tokens=provider(sandbox, session, client_secret=SecretStr("nope")))
    r = await bad.post_batch(sandbox.inlet_url(), body_of(message(1)))
    assert r.transport is Transport.IMS_CONFIG
    out = classify(r, 1)
    assert out.kind is Kind.CONFIG and "aep.client_secret" in out.reason

    sandbox.set_faults(targets=["ims"], next=[{"status": 503}] * 2)
    down = DcsClient(session, tokens=provider(sandbox, session, max_attempts=2))
    r = await down.post_batch(sandbox.inlet_url(), body_of(message(1)))
    assert r.transport is Transport.IMS_UNAVAILABLE
    assert classify(r, 1).kind is Kind.RETRYABLE


async def test_token_never_logged_or_shown(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    tp = provider(sandbox, session)
    client = DcsClient(session, tokens=tp, sandbox_name="prod")
    with structlog.testing.capture_logs() as logs:
        await client.post_batch(sandbox.inlet_url(), body_of(message(1)))
        token = await tp.get()
        sandbox.revoke_tokens()
        await client.post_batch(sandbox.inlet_url(), body_of(message(2)))
        sandbox.set_faults(next=[{"reset": True}])
        r = await client.post_batch(sandbox.inlet_url(), body_of(message(3)))
    text = repr(logs) + repr(tp) + repr(client) + repr(r)
    assert token not in text
    assert sandbox.client_secret not in text


async def test_client_owning_its_session(sandbox: SandboxHandle) -> None:
    client = DcsClient.create(HttpSettings(trust_env=True, connection_limit=2))
    try:
        r = await client.post_batch(sandbox.inlet_url(sandbox.open_inlet), body_of(message(1)))
        assert r.status == 207
    finally:
        await client.close()
    assert client.session.closed


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_extra_ca_bundle_for_tls(tmp_path: Path) -> None:
    """The sandbox app behind TLS with a private CA: refused by default, accepted with
    `ca_bundle` (e.g. a corporate proxy's CA)."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(build_app(SandboxState(SandboxConfig())), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}/collection/open-inlet"
    try:
        plain = DcsClient.create(HttpSettings())
        trusted = DcsClient.create(HttpSettings(ca_bundle=str(cert)))
        try:
            r = await plain.post_batch(url, body_of(message(1)))
            assert r.status is None and r.transport is Transport.CONNECTION
            assert "certificate" in r.detail.lower()
            r = await trusted.post_batch(url, body_of(message(1)))
            assert r.status == 207
        finally:
            await plain.close()
            await trusted.close()
    finally:
        await runner.cleanup()


async def test_bad_inlet_url_is_a_config_outcome(session: aiohttp.ClientSession) -> None:
    client = DcsClient(session)
    for url in ("http://127.0.0.1:9/not-an-inlet", "http://[bad/collection/x"):
        r = await client.post_batch(url, body_of(message(1)))
        assert r.status is None and r.transport is Transport.INVALID_URL, url
        assert classify(r, 1).kind is Kind.CONFIG
