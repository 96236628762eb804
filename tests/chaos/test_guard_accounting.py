"""Regression test for a worker bug the chaos suite found (fixed in worker/pipeline.py): the
DLQ guard counted a record valid when consumed but an AEP rejection invalid when the answer
came, so while a backlog was in flight a minority of rejections tripped it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.ledger import Expect
from tests.chaos.scenario import Scenario
from tests.integration.process_helpers import find_events, tail

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]


def test_dlq_guard_is_not_tripped_by_a_minority_of_aep_rejections(
    scenario: Callable[..., Scenario], sandbox: Any
) -> None:
    s = scenario("guard-share", sandbox)
    samples = s.samples(2_000, seed=111, event_names=("transactionAdded", "pointsIssued"))
    rejected = [x.event_id for x in samples[::10]]  # exactly every 10th record
    s.produce_these(samples, {e: Expect("dlq", "aep-400", "deliver") for e in rejected})
    # AEP a little slow, so the in-flight cap pauses consumption while answers come back.
    sandbox.set_faults(
        latency_ms=200,
        message_faults=[{"contains": e, "status": 400, "times": None} for e in rejected],
    )
    settings = s.settings(
        batching={"max_messages": 50, "linger_s": 0.05}, flow={"max_in_flight_records": 1000},
        dlq_guard={"max_consecutive": 50, "min_records": 50, "window": 100,
                   "max_invalid_ratio": 0.5},
    )
    worker = s.start(settings, "worker", "--exit-when-drained")
    deadline = time.monotonic() + 120
    while worker.alive() and time.monotonic() < deadline:
        assert not find_events(worker, "dlq_guard_tripped"), (
            "the guard tripped with 10% of records rejected:\n"
            + str(find_events(worker, "dlq_guard_tripped")[0])
        )
        time.sleep(0.3)
    assert worker.wait(1) == 0, tail(worker)
    s.ledger.tally(s.observe()).check()
