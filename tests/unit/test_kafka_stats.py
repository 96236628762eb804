"""Consumer lag and broker state from librdkafka statistics documents (shape as emitted by
librdkafka 2.x, trimmed to the fields read)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from worker.kafka_stats import parse_statistics, statistics_handler


def _partition(pid: int, **kw: Any) -> dict[str, Any]:
    base = {
        "partition": pid, "desired": True, "fetch_state": "active", "consumer_lag": -1,
        "committed_offset": -1001, "hi_offset": -1001, "lo_offset": -1001,
        "ls_offset": -1001, "app_offset": -1001,
    }
    base.update(kw)
    return base


def _doc(partitions: list[dict[str, Any]], brokers: dict[str, str] | None = None) -> bytes:
    return orjson.dumps({
        "name": "rdkafka#consumer-1", "type": "consumer",
        "brokers": {n: {"state": s, "nodeid": 1} for n, s in (brokers or {}).items()},
        "topics": {"loyalty": {"topic": "loyalty", "partitions": {
            str(p["partition"]): p for p in partitions
        }}},
    })


def test_lag_is_end_minus_committed_for_desired_partitions_only() -> None:
    stats = parse_statistics(_doc([
        _partition(0, committed_offset=5, hi_offset=8, ls_offset=8),
        _partition(1, committed_offset=10, hi_offset=12, ls_offset=11),  # LSO wins
        _partition(2, desired=False, committed_offset=0, hi_offset=99, ls_offset=99),
        _partition(-1, desired=False),
    ], {"sasl_plaintext://127.0.0.1:9093/1": "UP", "GroupCoordinator": "UP"}))
    assert stats.lags == {("loyalty", 0): 3, ("loyalty", 1): 1}
    assert stats.brokers_up


def test_no_committed_offset_counts_from_log_start_or_position() -> None:
    doc = _doc([_partition(0, hi_offset=50, ls_offset=50, lo_offset=10, app_offset=45)])
    assert parse_statistics(doc, "earliest").lags == {("loyalty", 0): 40}
    assert parse_statistics(doc, "latest").lags == {("loyalty", 0): 5}
    unknown = _doc([_partition(0, lo_offset=0)])
    assert parse_statistics(unknown).lags == {}


def test_brokers_not_up_while_authenticating() -> None:
    stats = parse_statistics(_doc([], {"sasl_plaintext://h:1/bootstrap": "AUTH_REQ",
                                        "GroupCoordinator": "INIT"}))
    assert not stats.brokers_up
    assert stats.broker_states["GroupCoordinator"] == "INIT"


def test_handler_feeds_both_callbacks() -> None:
    seen: list[Any] = []
    handler = statistics_handler(seen.append, seen.append)
    handler(_doc([_partition(3, committed_offset=1, hi_offset=2, ls_offset=2)],
                 {"b/1": "UP"}).decode())
    assert seen == [{("loyalty", 3): 1}, True]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
_FIELD = st.sampled_from(
    ["partition", "desired", "committed_offset", "hi_offset", "lo_offset", "ls_offset",
     "app_offset"]
)


@given(st.one_of(
    st.binary(max_size=200),
    _JSON.map(orjson.dumps),
    st.dictionaries(st.text(max_size=4), st.dictionaries(_FIELD, _JSON, max_size=7),
                    max_size=3).map(lambda parts: orjson.dumps(
                        {"topics": {"t": {"partitions": parts}}, "brokers": parts})),
))
def test_garbage_never_raises(raw: bytes) -> None:
    stats = parse_statistics(raw)
    assert all(lag >= 0 and p >= 0 for (_, p), lag in stats.lags.items())
