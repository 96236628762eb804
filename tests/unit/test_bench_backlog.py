"""The benchmark's replayed samples are what it claims: fresh ids, newer times, same shape."""

from __future__ import annotations

import orjson

from tests.benchmarks.backlog import SamplePool
from worker.events import DecodeError, decode


def test_replayed_samples_get_fresh_ids_and_later_created_at() -> None:
    pool = SamplePool(300, seed=5, invalid_share=0.02)
    size = len(pool.templates)
    first = [pool.record(n) for n in range(size)]
    again = [pool.record(n) for n in range(size, 2 * size)]
    ids = {event_id for _, _, event_id in first + again}
    assert len(ids) == 2 * size
    valid = 0
    for (key1, value1, id1), (key2, value2, id2) in zip(first, again, strict=True):
        assert key1 == key2
        assert len(value1) == len(value2)  # same size: the benchmark keeps realistic sizes
        try:
            e1, e2 = decode(value1), decode(value2)
        except DecodeError:
            continue  # the invalid samples stay invalid the same way
        valid += 1
        assert (e1.event_id, e2.event_id) == (id1, id2)
        assert e2.created_at_ms - e1.created_at_ms == pool.span_ms
        assert (e1.name, e1.org_id) == (e2.name, e2.org_id)
    assert valid >= size * 0.95
    assert pool.stats.invalid == int(size * 0.02)


def test_event_ids_keep_the_uuid_shape() -> None:
    pool = SamplePool(20, seed=1, invalid_share=0.0)
    _, value, event_id = pool.record(123_456)
    assert orjson.loads(value).get("eventId", event_id) == event_id
    parts = event_id.split("-")
    assert [len(p) for p in parts] == [8, 4, 4, 4, 12]
    assert parts[2][0] == "4" and parts[3][0] == "8"
