"""InletRouter against the sandbox's single endpoint: a 400 is the message's fault only with
evidence (another message accepted on the same inlet after the first refusal)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.aep.client import DcsClient
from worker.aep.inlets import InletRouter
from worker.aep.responses import ItemKind, Kind, classify

pytestmark = pytest.mark.integration


def _body(message: dict[str, Any]) -> bytes:
    return b'{"messages":[' + orjson.dumps(message) + b"]}"


def _event(n: int) -> dict[str, Any]:
    return {
        "_id": f"raw-{n}", "timestamp": "2024-07-01T00:00:00.000Z", "eventType": "commerce.purchases",
        "identityMap": {"CapillaryCustomerId": [{"id": str(n), "primary": True}]},
        "commerce": {"purchases": {"value": 1}, "order": {"priceTotal": 10.0}},
        "productLineItems": [{"SKU": "sku-1", "quantity": 1, "priceTotal": 10.0}],
    }


async def test_single_endpoint_400_is_configuration_until_another_message_gets_through(
    sandbox_factory: Any,
) -> None:
    sandbox = sandbox_factory(raw_flows=[{"id": "flow-raw", "dataset": "ds-commerce-events"}])
    url = sandbox.inlet_url(sandbox.open_inlet)
    client = DcsClient.create()
    router = InletRouter({url: client}, single={url})
    headers = {"x-adobe-flow-id": "flow-raw"}
    bad = {**_event(1), "commerce": {"order": {"priceTotal": "not a number"}}}
    try:
        first = classify(await router.post_batch(url, _body(bad), headers), 1)
        assert first.kind is Kind.CONFIG and first.status == 400  # blocks, never dead-letters
        again = classify(await router.post_batch(url, _body(bad), headers), 1)
        assert again.kind is Kind.CONFIG, "no other message accepted since: still ambiguous"

        good = classify(await router.post_batch(url, _body(_event(2)), headers), 1)
        assert good.kind is Kind.RESULTS and good.items[0].kind is ItemKind.ACCEPTED

        verdict = classify(await router.post_batch(url, _body(bad), headers), 1)
        assert verdict.kind is Kind.RESULTS
        assert verdict.items[0].kind is ItemKind.REJECTED and verdict.items[0].status == 400
        assert "priceTotal" in verdict.items[0].reason
    finally:
        await client.close()

    stored = sandbox.records("ds-commerce-events")
    assert [r["xdmEntity"]["_id"] for r in stored] == ["raw-2"]
    assert stored[0]["xdmEntity"]["productListItems"][0]["SKU"] == "sku-1"  # Data Prep mapped
    assert [q["path"] for q in sandbox.requests()] == ["/collection/open-inlet"] * 4
