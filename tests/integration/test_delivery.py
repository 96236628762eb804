"""Delivering batches to completion against the real AEP sandbox (no mocks of AEP).

Every test checks the delivery contract: each item reported exactly once, accepted or
rejected, and rejected only for what SPEC 2.3 calls permanent (per-message 4xx, a single
message over the size limit, a message that alone keeps getting 500 while others get through).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from pydantic import SecretStr

from tests.fixtures.sandbox import SandboxHandle
from worker.aep.auth import TokenProvider
from worker.aep.client import DcsClient, HttpSettings, make_session
from worker.aep.delivery import Deliverer, DeliveryPolicy, InletHealth
from worker.batching import BODY_OVERHEAD, Batch

pytestmark = pytest.mark.integration

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
CT = "application/vnd.adobe.xed-full+json;version=1"
ORG = "EXAMPLEORG0123456789@AdobeOrg"

POLICY = DeliveryPolicy(
    base_delay=0.02,
    max_delay=0.2,
    retry_after_cap=5.0,
    server_error_retries=2,
    blocked_probe_interval=0.1,
    request_timeout=5.0,
)


def entity(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "_id": f"{n:064x}",
        "timestamp": "2024-07-01T10:00:00Z",
        "eventType": "loyalty.pointsIssued",
        "identityMap": {"CapillaryCustomerId": [{"id": str(1000 + n), "primary": True}]},
        **extra,
    }


def message(n: int, **extra: Any) -> bytes:
    ref = {"id": EE, "contentType": CT}
    return orjson.dumps(
        {
            "header": {
                "schemaRef": ref,
                "imsOrgId": ORG,
                "datasetId": "ds-loyalty-events",
                "flowId": "flow-1",
                "source": {"name": "Capillary"},
            },
            "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity(n, **extra)},
        }
    )


def marker(n: int) -> str:
    """A substring of message(n)'s compact JSON and of no other message."""
    return f'"_id":"{n:064x}"'


def make_batch(items: list[int], payloads: list[bytes] | None = None) -> Batch[int]:
    ps = payloads if payloads is not None else [message(i) for i in items]
    nbytes = BODY_OVERHEAD + sum(map(len, ps)) + len(ps) - 1
    b = Batch("ds-loyalty-events", list(items), ps, nbytes, time.monotonic())
    assert len(b.body()) == b.nbytes
    return b


@dataclass
class Sink:
    accepted: dict[int, str | None] = field(default_factory=dict)
    rejected: dict[int, tuple[int | None, str]] = field(default_factory=dict)
    blocks: list[str | None] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)
    twice: list[int] = field(default_factory=list)

    def _seen(self, item: int) -> None:
        if item in self.accepted or item in self.rejected:
            self.twice.append(item)

    def on_accepted(self, item: int, xaction_id: str | None) -> None:
        self._seen(item)
        self.accepted[item] = xaction_id

    def on_rejected(self, item: int, status: int | None, reason: str, batch_id: str | None) -> None:
        self._seen(item)
        self.rejected[item] = (status, reason)

    def check(self, items: list[int]) -> None:
        assert self.twice == []
        assert sorted([*self.accepted, *self.rejected]) == sorted(items)


class SinkAdapter:
    def __init__(self, s: Sink) -> None:
        self.s = s

    def accepted(self, item: int, xaction_id: str | None, batch_id: str | None) -> None:
        self.s.on_accepted(item, xaction_id)

    def rejected(self, item: int, status: int | None, reason: str, batch_id: str | None) -> None:
        self.s.on_rejected(item, status, reason, batch_id)

    def blocked(self, reason: str | None) -> None:
        self.s.blocks.append(reason)

    def retrying(self, cause: str, delay: float) -> None:
        self.s.waits.append((cause, delay))


@dataclass
class Env:
    sb: SandboxHandle
    tokens: TokenProvider
    client: DcsClient
    sink: Sink
    deliverer: Deliverer[int]

    @property
    def url(self) -> str:
        return self.sb.inlet_url()

    async def deliver(self, batch: Batch[int]) -> None:
        await asyncio.wait_for(self.deliverer.deliver(self.url, batch), 30)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session(HttpSettings(connection_limit=32, request_timeout=10))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def env_for(session: aiohttp.ClientSession) -> Callable[..., Env]:
    def make(sb: SandboxHandle, policy: DeliveryPolicy = POLICY) -> Env:
        tokens = TokenProvider(
            ims_url=sb.ims_token_url,
            client_id=sb.client_id,
            client_secret=SecretStr(sb.client_secret),
            scope="openid,AdobeID",
            session=session,
            base_delay=0.01,
            max_delay=0.05,
        )
        client = DcsClient(session, tokens=tokens)
        sink = Sink()
        d: Deliverer[int] = Deliverer(client, policy, SinkAdapter(sink), health=InletHealth())
        return Env(sb, tokens, client, sink, d)

    return make


@pytest.fixture
def env(sandbox: SandboxHandle, env_for: Callable[..., Env]) -> Env:
    return env_for(sandbox)


async def wait_for(cond: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# -- 207 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure_key", ["statusCode", "status"])
async def test_207_mixed_rejects_400_and_retries_503(env: Env, failure_key: str) -> None:
    env.sb.set_faults(
        failure_key=failure_key,
        message_faults=[{"contains": marker(2), "status": 503, "times": 2}],
    )
    payloads = [message(i) for i in range(6)]
    payloads[1] = message(1, eventType=None)  # null: AEP rejects the message (400)
    await env.deliver(make_batch(list(range(6)), payloads))

    env.sink.check(list(range(6)))
    assert sorted(env.sink.accepted) == [0, 2, 3, 4, 5]
    status, reason = env.sink.rejected[1]
    assert status == 400 and "null" in reason
    assert all(env.sink.accepted.values())  # xactionIds
    assert [c for c, _ in env.sink.waits] == ["per-message-retryable"] * 2
    assert env.sink.blocks == []
    assert env.sb.accepted("ds-loyalty-events") == 5
    # Only the failed message was resent: 6 + 1 + 1 messages received.
    assert env.sb.stats()["messages"]["received"] == 8


async def test_persistent_per_message_500_rejects_only_that_record(env: Env) -> None:
    env.sb.set_faults(message_faults=[{"contains": marker(3), "status": 500}])
    await env.deliver(make_batch(list(range(8))))
    env.sink.check(list(range(8)))
    assert list(env.sink.rejected) == [3]
    status, reason = env.sink.rejected[3]
    assert status == 500 and reason.startswith("server-error")
    assert env.sb.accepted() == 7
    assert env.sink.blocks == []
    # Sent once with the batch, then alone server_error_retries more times.
    assert env.sb.stats()["requests"]["by_endpoint"]["batch"] == 1 + POLICY.server_error_retries


async def test_per_message_500_for_everything_is_an_outage_not_bad_data(env: Env) -> None:
    env.sb.set_faults(message_faults=[{"contains": '"eventType"', "status": 500, "times": 30}])
    task = asyncio.create_task(env.deliver(make_batch(list(range(4)))))
    await wait_for(lambda: bool(env.sink.blocks))
    assert env.sink.blocks[0] is not None and "500" in env.sink.blocks[0]
    assert env.sink.rejected == {}
    env.sb.clear_faults()
    await task
    env.sink.check(list(range(4)))
    assert env.sink.rejected == {}
    assert env.sink.blocks[-1] is None


# -- request level ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 400])
async def test_request_config_error_blocks_until_fixed(env: Env, status: int) -> None:
    env.sb.set_faults(next=[{"status": status, "message": "Inlet not found"}] * 1000)
    task = asyncio.create_task(env.deliver(make_batch([0, 1, 2])))
    await wait_for(lambda: bool(env.sink.blocks))
    reason = env.sink.blocks[0]
    assert reason is not None and f"http-{status}" in reason and "capillary-inlet" in reason
    await asyncio.sleep(0.35)  # a few probes
    assert not task.done() and env.sink.accepted == {} and env.sink.rejected == {}
    probes = [w for w in env.sink.waits if w[0] == "blocked-config"]
    assert len(probes) >= 2 and all(d == POLICY.blocked_probe_interval for _, d in probes)
    env.sb.clear_faults()  # the inlet is fixed
    await task
    env.sink.check([0, 1, 2])
    assert sorted(env.sink.accepted) == [0, 1, 2]
    assert env.sink.blocks == [reason, None]


async def test_unknown_inlet_never_dead_letters(env: Env) -> None:
    url = env.sb.inlet_url("no-such-inlet")
    task = asyncio.create_task(env.deliverer.deliver(url, make_batch([0, 1])))
    await wait_for(lambda: len(env.sink.waits) >= 3)
    assert env.sink.blocks and env.sink.blocks[0] and "no-such-inlet" in env.sink.blocks[0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.sink.accepted == {} and env.sink.rejected == {}  # left uncommitted
    assert env.sink.blocks[-1] is None
    assert env.deliverer.blocked_deliveries == 0


async def test_413_splits_and_a_single_oversized_message_is_rejected(
    sandbox_factory: Callable[..., SandboxHandle], env_for: Callable[..., Env]
) -> None:
    sb = sandbox_factory(max_body_bytes=2500)
    env = env_for(sb)
    payloads = [message(i) for i in range(10)]
    payloads[6] = message(6, eventType="loyalty." + "x" * 3000)  # > 2500 bytes even alone
    await env.deliver(make_batch(list(range(10)), payloads))
    env.sink.check(list(range(10)))
    assert env.sink.rejected == {6: (413, "too-large")}
    assert sb.accepted() == 9
    assert env.deliverer.splits >= 3
    assert sb.stats()["requests"]["by_status"]["413"] >= 4


async def test_429_retry_after_seconds_is_honoured(env: Env) -> None:
    env.sb.set_faults(next=[{"status": 429, "retry_after": "1"}])
    started = time.monotonic()
    await env.deliver(make_batch([0, 1]))
    elapsed = time.monotonic() - started
    env.sink.check([0, 1])
    assert env.sink.rejected == {}
    assert env.sink.waits == [("http-429", 1.0)]
    assert 1.0 <= elapsed < 2.0


async def test_429_retry_after_http_date_is_honoured(env: Env) -> None:
    env.sb.set_faults(
        next=[{"status": 429, "retry_after": formatdate(time.time() + 2, usegmt=True)}]
    )
    started = time.monotonic()
    await env.deliver(make_batch([0]))
    elapsed = time.monotonic() - started
    assert list(env.sink.accepted) == [0]
    ((cause, delay),) = env.sink.waits
    # The date has 1-second precision (1 to 2 s ahead when set), less the time the request
    # took to reach the sandbox and come back on a loaded machine.
    assert cause == "http-429" and 0.5 <= delay <= 2.0
    assert elapsed >= delay


async def test_retry_after_is_capped(sandbox: SandboxHandle, env_for: Callable[..., Env]) -> None:
    env = env_for(sandbox, DeliveryPolicy(retry_after_cap=0.2, blocked_probe_interval=0.1))
    sandbox.set_faults(next=[{"status": 503, "retry_after": "3600"}] * 2)
    started = time.monotonic()
    await env.deliver(make_batch([0]))
    assert env.sink.waits == [("http-503", 0.2)] * 2
    assert time.monotonic() - started < 1.5


async def test_503_outage_is_waited_out(env: Env) -> None:
    env.sb.set_faults(outage_seconds=0.6)
    await env.deliver(make_batch(list(range(5))))
    env.sink.check(list(range(5)))
    assert env.sink.rejected == {} and env.sink.blocks == []
    assert {c for c, _ in env.sink.waits} == {"http-503"}


async def test_request_500_outage_blocks_instead_of_dead_lettering(env: Env) -> None:
    env.sb.set_faults(next=[{"status": 500}] * 1000)
    task = asyncio.create_task(env.deliver(make_batch(list(range(8)))))
    await wait_for(lambda: bool(env.sink.blocks))
    assert env.sink.rejected == {}
    assert env.sink.blocks[0] is not None and "outage" in env.sink.blocks[0]
    env.sb.clear_faults()
    await task
    env.sink.check(list(range(8)))
    assert env.sink.rejected == {}
    assert env.sb.accepted() == 8
    assert env.sink.blocks[-1] is None


async def test_connection_resets_are_retried(env: Env) -> None:
    env.sb.set_faults(seed=7, reset_share=0.5)
    batches = [make_batch(list(range(k * 4, k * 4 + 4))) for k in range(5)]
    await asyncio.gather(*(env.deliver(b) for b in batches))
    env.sink.check(list(range(20)))
    assert env.sink.rejected == {}
    assert env.sb.stats()["faults_injected"].get("reset", 0) > 0
    assert {c for c, _ in env.sink.waits} == {"connection"}


async def test_stopped_then_restarted_sandbox(env: Env) -> None:
    await env.tokens.get()  # a token from before the outage: still valid after it
    env.sb.stop()
    task = asyncio.create_task(env.deliver(make_batch(list(range(6)))))
    await wait_for(lambda: len(env.sink.waits) >= 3)
    assert not task.done()
    env.sb.start()
    await task
    env.sink.check(list(range(6)))
    assert env.sink.rejected == {} and env.sink.blocks == []
    assert env.sb.accepted() == 6


async def test_timeouts_are_retried(sandbox: SandboxHandle, env_for: Callable[..., Env]) -> None:
    env = env_for(sandbox, DeliveryPolicy(base_delay=0.01, max_delay=0.05, request_timeout=0.2))
    sandbox.set_faults(next=[{"delay_ms": 600}, {"delay_ms": 600}])
    await env.deliver(make_batch([0, 1]))
    assert sorted(env.sink.accepted) == [0, 1]
    assert [c for c, _ in env.sink.waits] == ["timeout", "timeout"]


async def test_403_burst_refreshes_the_token_once(env: Env) -> None:
    await env.deliver(make_batch([100]))
    assert env.sb.stats()["ims"]["tokens_issued"] == 1
    env.sb.revoke_tokens()  # every in-flight request will get 403
    batches = [make_batch(list(range(k * 3, k * 3 + 3))) for k in range(10)]
    await asyncio.gather(*(env.deliver(b) for b in batches))
    env.sink.check([100, *range(30)])
    assert env.sink.rejected == {} and env.sink.blocks == []
    assert env.sb.stats()["ims"]["tokens_issued"] == 2  # one shared refresh
    assert env.tokens.invalidations == 1


async def test_persistent_403_blocks_and_probes_with_fresh_tokens(env: Env) -> None:
    env.sb.set_faults(auth_403_next=4)
    await env.deliver(make_batch([0, 1]))
    env.sink.check([0, 1])
    assert env.sink.rejected == {}
    assert len(env.sink.blocks) == 2 and env.sink.blocks[1] is None
    assert "http-403" in (env.sink.blocks[0] or "")
    # 403, immediate retry, then probes: every attempt used a new token.
    assert env.sb.stats()["ims"]["tokens_issued"] == 5


async def test_wrong_credentials_block_not_dead_letter(
    sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> None:
    secret = {"value": "wrong"}
    tokens = TokenProvider(
        ims_url=sandbox.ims_token_url,
        client_id=sandbox.client_id,
        client_secret=lambda: secret["value"],
        scope="openid",
        session=session,
    )
    sink = Sink()
    d: Deliverer[int] = Deliverer(DcsClient(session, tokens=tokens), POLICY, SinkAdapter(sink))
    task = asyncio.create_task(d.deliver(sandbox.inlet_url(), make_batch([0])))
    await wait_for(lambda: bool(sink.blocks))
    assert "aep.client_secret" in (sink.blocks[0] or "")
    secret["value"] = sandbox.client_secret  # the operator fixes the secret
    await asyncio.wait_for(task, 10)
    assert list(sink.accepted) == [0] and sink.blocks[-1] is None


async def test_random_faults_everything_delivered_exactly_once(env: Env) -> None:
    env.sb.set_faults(
        seed=11,
        share_429=0.15,
        share_503=0.15,
        reset_share=0.1,
        retry_after_seconds=0,
        message_faults=[{"contains": marker(5), "status": 503, "times": 3}],
    )
    payloads = [message(i) for i in range(40)]
    payloads[13] = message(13, eventType="")  # empty string: per-message 400
    batches = [make_batch(list(range(k, k + 10)), payloads[k : k + 10]) for k in range(0, 40, 10)]
    await asyncio.gather(*(env.deliver(b) for b in batches))
    env.sink.check(list(range(40)))
    assert list(env.sink.rejected) == [13]
    assert env.sb.accepted() == 39
    assert env.sink.blocks == []


async def test_errors_are_logged_with_ids_and_without_contents(env: Env) -> None:
    env.sb.set_faults(
        next=[{"status": 503}],
        message_faults=[{"contains": marker(2), "status": 500}],
    )
    payloads = [message(i) for i in range(4)]
    payloads[1] = message(1, eventType=None)
    with structlog.testing.capture_logs() as logs:
        await env.deliver(make_batch(list(range(4)), payloads))
    token = await env.tokens.get()
    env.sink.check(list(range(4)))
    by_event: dict[str, list[MutableMapping[str, Any]]] = {}
    for entry in logs:
        by_event.setdefault(entry["event"], []).append(entry)
    retry = by_event["dcs.retryable"][0]
    assert retry["status"] == 503 and retry["inlet"] == "capillary-inlet" and retry["n"] == 4
    partial = by_event["dcs.partial_failure"][0]
    assert partial["batch_id"] and partial["status"] == 207
    assert (partial["accepted"], partial["rejected"], partial["server_error"]) == (2, 1, 1)
    assert by_event["dcs.message_server_error"][0]["action"] == "reject"
    text = repr(logs)
    assert token not in text and env.sb.client_secret not in text
    for i in range(4):  # no message contents: neither ids nor identities
        assert f"{i:064x}" not in text and str(1000 + i) not in text
