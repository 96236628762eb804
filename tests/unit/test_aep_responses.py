"""DCS answer classification (pure), and the delivery rules it drives (scripted transport).

The second half runs the real `Deliverer` against an in-process scripted transport, to pin
rules that are awkward to provoke on the sandbox (outage vs bad message under 500s, blocked
edges, exactly-once reporting under arbitrary answers). The sandbox tests in
tests/integration/ cover the same paths over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.aep.delivery import Deliverer, DeliveryPolicy, InletHealth
from worker.aep.responses import (
    DcsResponse,
    ItemKind,
    Kind,
    Transport,
    classify,
    request_kind,
)
from worker.batching import Batch


def resp(
    status: int | None, body: Any = None, headers: Mapping[str, str] | None = None, **kw: Any
) -> DcsResponse:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return DcsResponse(status, dict(headers or {}), raw, **kw)


def kinds(out: Any) -> list[ItemKind]:
    return [i.kind for i in out.items]


A, R, Y, S = ItemKind.ACCEPTED, ItemKind.REJECTED, ItemKind.RETRYABLE, ItemKind.SERVER_ERROR

# -- 207 / 200 ------------------------------------------------------------------------------


def test_207_documented_shape() -> None:
    body = {
        "inletId": "abc",
        "batchId": "1565638336649:1750:244",
        "receivedTimeMs": 1565638336705,
        "responses": [
            {"xactionId": "1565638336649:1750:244:0"},
            {"statusCode": 400, "message": "Message has unknown xdm format"},
        ],
    }
    out = classify(resp(207, body, {"x-request-id": "req-1"}), 2)
    assert out.kind is Kind.RESULTS
    assert kinds(out) == [A, R]
    assert out.items[0].xaction_id == "1565638336649:1750:244:0"
    assert out.items[1].status == 400
    assert "unknown xdm format" in out.items[1].reason
    assert out.batch_id == "1565638336649:1750:244"
    assert out.request_id == "req-1"
    assert out.anomaly is None
    assert out.counts() == {"accepted": 1, "rejected": 1, "retryable": 0, "server_error": 0}


def test_207_connector_shape_status_key_and_string_codes() -> None:
    body = {
        "responses": [
            {"status": 400, "message": "bad"},
            {"status": "400", "message": "bad too"},
            {"statusCode": "503"},
            {"status": 500, "xactionId": "x:3"},
            {"xactionId": "x:4", "status": 200},
            {"xactionId": "x:5", "statusCode": "201"},
        ]
    }
    out = classify(resp(207, body), 6)
    assert kinds(out) == [R, R, Y, S, A, A]
    assert out.items[3].xaction_id == "x:3"
    assert out.anomaly is None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (400, R),
        (401, R),
        (403, R),
        (404, R),
        (413, R),
        (422, R),
        (408, Y),
        (429, Y),
        (502, Y),
        (503, Y),
        (504, Y),
        (599, Y),
        (500, S),
        (200, A),
        (204, A),
    ],
)
def test_per_message_status(code: int, kind: ItemKind) -> None:
    out = classify(resp(207, {"responses": [{"statusCode": code}]}), 1)
    assert kinds(out) == [kind]
    assert out.items[0].status == code


def test_error_status_wins_over_xaction_id() -> None:
    out = classify(resp(207, {"responses": [{"xactionId": "x", "statusCode": 400}]}), 1)
    assert kinds(out) == [R]


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"message": "??"},
        {"statusCode": "oops"},
        {"statusCode": None, "xactionId": None},
        {"statusCode": 302},
        {"statusCode": 99},
        {"statusCode": True},
        "not an object",
        17,
        None,
    ],
)
def test_unusable_entry_is_retryable_never_rejected(entry: Any) -> None:
    out = classify(resp(207, {"responses": [{"xactionId": "ok"}, entry]}), 2)
    assert kinds(out) == [A, Y]
    assert out.anomaly is not None


def test_shorter_list_missing_are_retryable_and_nothing_rejected() -> None:
    body = {"responses": [{"xactionId": "a"}, {"statusCode": 400, "message": "bad"}]}
    out = classify(resp(207, body), 4)
    assert kinds(out) == [A, Y, Y, Y]
    assert "2 result(s) for 4 message(s)" in (out.anomaly or "")
    assert "positions in doubt" in out.items[1].reason
    assert out.items[2].reason == "missing from response"


def test_longer_list_is_trimmed_and_nothing_rejected() -> None:
    body = {"responses": [{"statusCode": 400}, {"xactionId": "b"}, {"xactionId": "c"}]}
    out = classify(resp(207, body), 2)
    assert kinds(out) == [Y, A]
    assert out.anomaly is not None


def test_empty_list() -> None:
    out = classify(resp(207, {"responses": []}), 3)
    assert kinds(out) == [Y, Y, Y]
    assert out.anomaly is not None


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'"x"', b"{}", b'{"responses": 5}'])
def test_unparsable_2xx_batch_is_all_retryable(body: bytes) -> None:
    out = classify(resp(207, body), 3)
    assert out.kind is Kind.RESULTS
    assert kinds(out) == [Y, Y, Y]
    assert out.anomaly is not None


def test_single_endpoint_200() -> None:
    body = {"inletId": "i", "xactionId": "1584479347507:2153:240", "receivedTimeMs": 1}
    out = classify(resp(200, body), 1)
    assert kinds(out) == [A]
    assert out.items[0].xaction_id == "1584479347507:2153:240"


def test_single_200_without_xaction_id_is_still_received() -> None:
    assert kinds(classify(resp(200, b""), 1)) == [A]
    # ...but a 207 without results for one message proves nothing.
    assert kinds(classify(resp(207, b"{}"), 1)) == [Y]


def test_retry_after_on_207_is_kept_for_per_message_retries() -> None:
    out = classify(resp(207, {"responses": [{"statusCode": 429}]}, {"retry-after": "3"}), 1)
    assert out.retry_after == 3.0


# -- request level --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, Kind.CONFIG),
        (404, Kind.CONFIG),
        (405, Kind.CONFIG),
        (415, Kind.CONFIG),
        (422, Kind.CONFIG),
        (301, Kind.CONFIG),
        (302, Kind.CONFIG),
        (401, Kind.AUTH),
        (403, Kind.AUTH),
        (413, Kind.TOO_LARGE),
        (408, Kind.RETRYABLE),
        (429, Kind.RETRYABLE),
        (502, Kind.RETRYABLE),
        (503, Kind.RETRYABLE),
        (504, Kind.RETRYABLE),
        (501, Kind.RETRYABLE),
        (599, Kind.RETRYABLE),
        (101, Kind.RETRYABLE),
        (500, Kind.SERVER_ERROR),
    ],
)
def test_request_level(status: int, kind: Kind) -> None:
    assert request_kind(status) is kind
    out = classify(resp(status, {"title": "t"}), 5)
    assert out.kind is kind
    assert out.status == status
    assert out.items == ()
    assert out.cause == f"http-{status}"


def test_dcs_401_body_with_string_status() -> None:
    body = {
        "type": "https://ns.adobe.com/aep/errors/data-collection-service-authorization",
        "status": "401",
        "title": "Authorization",
        "report": {"message": "Ims service token is empty"},
    }
    out = classify(resp(401, body, {"X-Request-Id": "rq"}), 3)
    assert out.kind is Kind.AUTH
    assert "Ims service token is empty" in out.reason
    assert out.request_id == "rq"


def test_reason_from_text_body() -> None:
    out = classify(resp(404, b"<html>Not Found</html>"), 1)
    assert out.kind is Kind.CONFIG
    assert "Not Found" in out.reason
    out = classify(resp(400, b""), 1)
    assert out.reason == "HTTP 400"


def test_reason_is_truncated() -> None:
    out = classify(resp(400, {"message": "x" * 5000}), 1)
    assert len(out.reason) <= 300


@pytest.mark.parametrize(
    ("transport", "kind"),
    [
        (Transport.TIMEOUT, Kind.RETRYABLE),
        (Transport.CONNECTION, Kind.RETRYABLE),
        (Transport.IMS_UNAVAILABLE, Kind.RETRYABLE),
        (Transport.OTHER, Kind.RETRYABLE),
        (Transport.IMS_CONFIG, Kind.CONFIG),
        (Transport.INVALID_URL, Kind.CONFIG),
    ],
)
def test_transport_failures(transport: Transport, kind: Kind) -> None:
    out = classify(DcsResponse(None, transport=transport, detail="boom"), 4)
    assert out.kind is kind
    assert out.status is None
    assert out.cause == transport.value
    assert out.reason == "boom"


def test_no_status_no_transport_is_retryable() -> None:
    assert classify(DcsResponse(None), 1).kind is Kind.RETRYABLE


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
_entry = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "xactionId": st.none() | st.text(max_size=5),
            "statusCode": st.none() | st.integers(0, 700) | st.text(max_size=4),
            "status": st.none() | st.integers(0, 700) | st.text(max_size=4),
            "message": st.text(max_size=10),
        },
    ),
)


@example(status=200, entries=[{"statusCode": "²"}], n=1, junk=False)  # isdigit(), not int()
@given(
    status=st.integers(100, 599),
    entries=st.lists(_entry, max_size=8),
    n=st.integers(1, 8),
    junk=st.booleans(),
)
def test_classify_total_and_safe(status: int, entries: list[Any], n: int, junk: bool) -> None:
    body: Any = b"\x00junk" if junk else {"batchId": "b", "responses": entries}
    out = classify(resp(status, body), n)
    if 200 <= status < 300:
        assert out.kind is Kind.RESULTS
        assert len(out.items) == n
        if junk or len(entries) != n:
            assert ItemKind.REJECTED not in kinds(out)
    else:
        assert out.kind is not Kind.RESULTS
        assert out.items == ()


# -- the deliverer, driven by scripted answers ---------------------------------------------

Item = int


@dataclass
class Sink:
    accepted: list[Item] = field(default_factory=list)
    rejected: list[tuple[Item, int | None, str]] = field(default_factory=list)
    blocks: list[str | None] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)

    def accepted_(self, item: Item, xaction_id: str | None) -> None:
        self.accepted.append(item)

    def rejected_(self, item: Item, status: int | None, reason: str, batch_id: str | None) -> None:
        self.rejected.append((item, status, reason))

    def blocked(self, reason: str | None) -> None:
        self.blocks.append(reason)

    def retrying(self, cause: str, delay: float) -> None:
        self.waits.append((cause, delay))

    def reported(self) -> list[Item]:
        return sorted(self.accepted + [r[0] for r in self.rejected])


class SinkAdapter:
    """Sink with the protocol's method names (the dataclass fields shadow them)."""

    def __init__(self, s: Sink) -> None:
        self.s = s

    def accepted(self, item: Item, xaction_id: str | None, batch_id: str | None) -> None:
        self.s.accepted_(item, xaction_id)

    def rejected(self, item: Item, status: int | None, reason: str, batch_id: str | None) -> None:
        self.s.rejected_(item, status, reason, batch_id)

    def blocked(self, reason: str | None) -> None:
        self.s.blocked(reason)

    def retrying(self, cause: str, delay: float) -> None:
        self.s.retrying(cause, delay)


def make_batch(n: int, bad: set[int] = frozenset()) -> Batch[Item]:  # type: ignore[assignment]
    payloads = [orjson.dumps({"i": i, "bad": i in bad}) for i in range(n)]
    body_len = 15 + sum(map(len, payloads)) + n - 1
    return Batch("k", list(range(n)), payloads, body_len, 0.0)


def ids_of(body: bytes) -> list[tuple[int, bool]]:
    msgs = orjson.loads(body)["messages"]
    return [(m["i"], m["bad"]) for m in msgs]


def ok_207(n: int) -> DcsResponse:
    return resp(207, {"batchId": "b", "responses": [{"xactionId": f"b:{i}"} for i in range(n)]})


class Scripted:
    """A fake DCS: `rule(call_no, messages) -> DcsResponse`."""

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.calls: list[list[tuple[int, bool]]] = []

    async def post_batch(
        self,
        url: str,
        body: bytes,
        extra_headers: Any = None,
        *,
        authenticated: bool | None = None,
        request_timeout: float | None = None,
    ) -> DcsResponse:
        msgs = ids_of(body)
        self.calls.append(msgs)
        await asyncio.sleep(0)
        r: DcsResponse = self.rule(len(self.calls), msgs)
        return r


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


URL = "http://dcs.test/collection/inlet-1"
FAST = DeliveryPolicy(
    base_delay=0.01,
    max_delay=0.1,
    server_error_retries=2,
    blocked_probe_interval=5.0,
    retry_after_cap=10,
)


def deliverer(
    rule: Any, policy: DeliveryPolicy = FAST, health: InletHealth | None = None
) -> tuple[Deliverer[Item], Sink, Scripted]:
    sink = Sink()
    tr = Scripted(rule)
    return (
        Deliverer(tr, policy, SinkAdapter(sink), sleep=no_sleep, rng=lambda: 0.5, health=health),
        sink,
        tr,
    )


async def test_bad_message_causing_request_500_is_isolated_and_rejected() -> None:
    def rule(_: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        if any(bad for _, bad in msgs):
            return resp(500, {"title": "error in processing payload"})
        return ok_207(len(msgs))

    d, sink, _tr = deliverer(rule)
    await d.deliver(URL, make_batch(10, bad={6}))
    assert sorted(sink.accepted) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert [(i, s) for i, s, _ in sink.rejected] == [(6, 500)]
    assert "server-error" in sink.rejected[0][2]
    assert sink.blocks == []
    assert d.splits >= 3


async def test_two_bad_messages_in_different_halves() -> None:
    def rule(_: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(500) if any(b for _, b in msgs) else ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(8, bad={1, 6}))
    assert sorted(i for i, _, _ in sink.rejected) == [1, 6]
    assert sorted(sink.accepted) == [0, 2, 3, 4, 5, 7]


async def test_outage_of_500s_blocks_instead_of_dead_lettering() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(500) if call <= 40 else ok_207(len(msgs))

    d, sink, tr = deliverer(rule)
    await d.deliver(URL, make_batch(8))
    assert sink.rejected == []
    assert sorted(sink.accepted) == list(range(8))
    assert len(sink.blocks) == 2 and sink.blocks[0] and "500" in sink.blocks[0]
    assert sink.blocks[1] is None
    assert ("blocked-500", 5.0) in sink.waits
    # depth-first: blocked after about log2(8) * (retries + 1) requests, then probing.
    first_single = next(i for i, c in enumerate(tr.calls) if len(c) == 1)
    assert first_single <= 4 * 3


async def test_lone_message_500_without_other_traffic_is_held_not_rejected() -> None:
    d, sink, _tr = deliverer(lambda c, m: resp(500))
    task = asyncio.create_task(d.deliver(URL, make_batch(1)))
    for _ in range(200):
        await asyncio.sleep(0)
    assert not task.done()
    assert sink.rejected == [] and sink.accepted == []
    assert sink.blocks and sink.blocks[0] is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.blocks[-1] is None  # cancellation ends this delivery's block
    assert sink.reported() == []


async def test_lone_message_500_rejected_once_the_inlet_works_for_others() -> None:
    health = InletHealth()

    def rule(_: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(500) if any(b for _, b in msgs) else ok_207(len(msgs))

    d, sink, _ = deliverer(rule, health=health)
    lone = asyncio.create_task(d.deliver(URL, make_batch(1, bad={0})))
    for _ in range(100):
        await asyncio.sleep(0)
    assert not lone.done() and sink.blocks == [sink.blocks[0]] and sink.blocks[0]
    # Another batch gets through on the same inlet: evidence that the lone one is bad.
    other = make_batch(3)
    other.items[:] = [10, 11, 12]
    await d.deliver(URL, other)
    await asyncio.wait_for(lone, 5)
    assert [i for i, _, _ in sink.rejected] == [0]
    assert sorted(sink.accepted) == [10, 11, 12]
    assert sink.blocks[-1] is None


async def test_per_message_500_with_accepted_batch_mates() -> None:
    def rule(_: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(
            207,
            {
                "responses": [
                    {"statusCode": 500, "message": "boom"} if b else {"xactionId": str(i)}
                    for i, b in msgs
                ]
            },
        )

    d, sink, tr = deliverer(rule)
    await d.deliver(URL, make_batch(5, bad={2}))
    assert sorted(sink.accepted) == [0, 1, 3, 4]
    assert [(i, s) for i, s, _ in sink.rejected] == [(2, 500)]
    assert "boom" in sink.rejected[0][2]
    assert len(tr.calls) == 1 + FAST.server_error_retries  # resent alone, never split
    assert sink.blocks == []


async def test_per_message_500_for_everything_is_an_outage() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        if call <= 12:
            return resp(207, {"responses": [{"statusCode": 500} for _ in msgs]})
        return ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(4))
    assert sink.rejected == []
    assert sorted(sink.accepted) == [0, 1, 2, 3]
    assert sink.blocks[0] is not None and sink.blocks[-1] is None


async def test_413_splits_and_single_too_large_rejected() -> None:
    def rule(_: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        if len(msgs) > 2 or any(b for _, b in msgs):
            return resp(413)
        return ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(9, bad={4}))
    assert [(i, s, r) for i, s, r in sink.rejected] == [(4, 413, "too-large")]
    assert sorted(sink.accepted) == [0, 1, 2, 3, 5, 6, 7, 8]


async def test_config_error_blocks_and_probes_until_fixed() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(404, {"title": "inlet not found"}) if call <= 3 else ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(3))
    assert sorted(sink.accepted) == [0, 1, 2] and sink.rejected == []
    assert len(sink.blocks) == 2 and "inlet not found" in (sink.blocks[0] or "")
    assert sink.blocks[1] is None
    assert sink.waits.count(("blocked-config", 5.0)) == 3


async def test_auth_retries_once_immediately_then_blocks() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(403) if call <= 3 else ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(2))
    assert sorted(sink.accepted) == [0, 1]
    # 403, immediate retry with a new token, 403 -> blocked, probe, 403, probe, 207.
    assert sink.waits == [("blocked-auth", 5.0)] * 2
    assert len(sink.blocks) == 2


async def test_single_403_is_just_a_refresh() -> None:
    d, sink, _ = deliverer(lambda c, m: resp(401) if c == 1 else ok_207(len(m)))
    await d.deliver(URL, make_batch(2))
    assert sorted(sink.accepted) == [0, 1]
    assert sink.blocks == []


async def test_retry_after_is_used_and_unlimited_retries_never_block() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(429, headers={"retry-after": "7"}) if call <= 30 else ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(2))
    assert sink.waits == [("http-429", 7.0)] * 30
    assert sink.blocks == []


async def test_max_retries_turns_into_blocked_probing() -> None:
    policy = DeliveryPolicy(
        max_retries=2, base_delay=0.01, max_delay=0.1, blocked_probe_interval=3.0
    )

    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(503) if call <= 5 else ok_207(len(msgs))

    d, sink, _ = deliverer(rule, policy)
    await d.deliver(URL, make_batch(2))
    assert sorted(sink.accepted) == [0, 1] and sink.rejected == []
    assert [w[1] for w in sink.waits][2:] == [3.0, 3.0, 3.0]
    assert sink.blocks[0] is not None and sink.blocks[-1] is None


async def test_backoff_grows_and_is_capped() -> None:
    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return DcsResponse(None, transport=Transport.TIMEOUT) if call <= 8 else ok_207(len(msgs))

    d, sink, _ = deliverer(rule)
    await d.deliver(URL, make_batch(1))
    delays = [w[1] for w in sink.waits]
    # rng=0.5: half of min(max_delay, base * 2**(k-1))
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05, 0.05])


async def test_concurrent_blocks_give_alternating_sink_calls() -> None:
    release = asyncio.Event()

    class Gate:
        async def post_batch(self, url: str, body: bytes, *a: Any, **k: Any) -> DcsResponse:
            await asyncio.sleep(0)
            if not release.is_set():
                return resp(404)
            return ok_207(len(ids_of(body)))

    sink = Sink()
    d: Deliverer[Item] = Deliverer(Gate(), FAST, SinkAdapter(sink), sleep=no_sleep)
    tasks = [asyncio.create_task(d.deliver(URL, make_batch(2))) for _ in range(3)]
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(sink.blocks) == 1 and sink.blocks[0] is not None
    assert d.blocked_deliveries == 3
    release.set()
    await asyncio.gather(*tasks)
    assert len(sink.blocks) == 2 and sink.blocks[1] is None


async def test_client_exception_is_treated_as_transient() -> None:
    class Flaky:
        calls = 0

        async def post_batch(self, url: str, body: bytes, *a: Any, **k: Any) -> DcsResponse:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("bug")
            return ok_207(len(ids_of(body)))

    sink = Sink()
    d: Deliverer[Item] = Deliverer(Flaky(), FAST, SinkAdapter(sink), sleep=no_sleep)
    await d.deliver(URL, make_batch(3))
    assert sorted(sink.accepted) == [0, 1, 2]


_answer = st.sampled_from(
    ["ok", "mixed", "413", "429", "500", "503", "404", "403", "timeout", "short", "junk"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(_answer, max_size=25),
    n=st.integers(1, 12),
    bad=st.sets(st.integers(0, 11), max_size=3),
)
def test_every_item_reported_exactly_once(script: list[str], n: int, bad: set[int]) -> None:
    """Arbitrary answers, then a well-behaved DCS: each item accepted xor rejected, once;
    rejections only for a per-message 4xx, a single-message 413 or an isolated 500."""

    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        if any(b for _, b in msgs) and len(msgs) > 1 and call > len(script):
            return resp(500)
        a = script[call - 1] if call <= len(script) else "ok"
        m = len(msgs)
        if a == "ok":
            return resp(
                207,
                {
                    "responses": [
                        {"statusCode": 400} if b else {"xactionId": str(i)} for i, b in msgs
                    ]
                },
            )
        if a == "mixed":
            return resp(
                207,
                {
                    "responses": [
                        [
                            {"xactionId": "x"},
                            {"statusCode": 503},
                            {"status": "500"},
                            {"status": 400},
                        ][i % 4]
                        for i, _ in msgs
                    ]
                },
            )
        if a == "timeout":
            return DcsResponse(None, transport=Transport.TIMEOUT)
        if a == "short":
            return resp(207, {"responses": [{"statusCode": 400}] * (m - 1)})
        if a == "junk":
            return resp(207, b"<html>")
        return resp(int(a), headers={"retry-after": "1"})

    async def run() -> tuple[Sink, Deliverer[Item]]:
        d, sink, _ = deliverer(rule)
        await asyncio.wait_for(d.deliver(URL, make_batch(n, bad={b for b in bad if b < n})), 30)
        return sink, d

    sink, d = asyncio.run(run())
    assert sink.reported() == list(range(n))
    assert len(set(sink.accepted)) == len(sink.accepted)
    for _, status, _ in sink.rejected:
        assert (status is not None and 400 <= status < 500) or status == 500
    assert len(sink.blocks) % 2 == 0  # every blocked(reason) was followed by blocked(None)
    assert d.blocked_deliveries == 0


def test_policy_from_settings_and_validation() -> None:
    from worker.config import DeliverySettings

    p = DeliveryPolicy.from_settings(DeliverySettings(max_retries=5, blocked_probe_interval_s=7))
    assert p.max_retries == 5 and p.blocked_probe_interval == 7 and p.server_error_retries == 3
    with pytest.raises(ValueError, match="blocked_probe_interval"):
        DeliveryPolicy(blocked_probe_interval=0)
    with pytest.raises(ValueError, match="max_retries"):
        DeliveryPolicy(max_retries=-1)


def test_token_provider_from_settings_never_shows_the_secret(tmp_path: Any) -> None:
    from pydantic import SecretStr

    from worker.aep.auth import ImsConfigError, TokenProvider
    from worker.config import AepSettings

    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-value\n")
    aep = AepSettings(client_id="cid", client_secret_file=secret_file, org_id="X@AdobeOrg")
    tp = TokenProvider.from_settings(aep)
    assert tp.client_id == "cid" and tp.ims_url.endswith("/ims/token/v3")
    assert tp._secret_value() == "s3cr3t-value"  # read from the file at request time
    assert "s3cr3t" not in repr(tp)
    with pytest.raises(ImsConfigError, match="client_id"):
        TokenProvider.from_settings(AepSettings(client_secret=SecretStr("x"), org_id="X@AdobeOrg"))


async def test_max_retries_applies_to_per_message_retries_too() -> None:
    policy = DeliveryPolicy(max_retries=1, base_delay=0.01, blocked_probe_interval=2.0)

    def rule(call: int, msgs: list[tuple[int, bool]]) -> DcsResponse:
        return resp(
            207,
            {
                "responses": [
                    {"statusCode": 503} if b and call <= 4 else {"xactionId": str(i)}
                    for i, b in msgs
                ]
            },
        )

    d, sink, _ = deliverer(rule, policy)
    await d.deliver(URL, make_batch(3, bad={1}))
    assert sorted(sink.accepted) == [0, 1, 2] and sink.rejected == []
    # 4 answers with a 503 for item 1: one backoff, then blocked probes.
    assert [c for c, _ in sink.waits] == ["per-message-retryable"] * 4
    assert [w for _, w in sink.waits][1:] == [2.0, 2.0, 2.0]
    assert sink.blocks[0] is not None and sink.blocks[-1] is None
