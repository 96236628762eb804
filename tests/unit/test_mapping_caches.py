"""The mapping helpers' pure caches give what computing afresh gives, from any thread."""

from __future__ import annotations

import random
import sys
import threading
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.mapping.convert import MAX_EPOCH_MS, rfc3339_ms


def _expected(ms: int) -> str:
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, MAX_EPOCH_MS - 1), min_size=1, max_size=8))
def test_rfc3339_ms_matches_a_fresh_formatting_in_any_order(instants: list[int]) -> None:
    for ms in instants + instants[::-1]:  # repeats hit the last-instant and minute caches
        assert rfc3339_ms(ms) == _expected(ms)


def test_rfc3339_ms_is_right_from_several_threads() -> None:
    errors: list[tuple[int, str]] = []
    base = 1_720_439_149_123

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20_000):
            ms = base + rng.randrange(0, 600_000)  # a few minutes: mostly cache hits
            got = rfc3339_ms(ms)
            if got != _expected(ms):
                errors.append((ms, got))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
