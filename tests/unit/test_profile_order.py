"""ProfileOrder: one update in flight per identity, newest wins, never older than delivered."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worker.profile_order import ProfileOrder


@dataclass(eq=False)
class Update:
    key: str
    created: int
    n: int  # arrival number


def test_first_update_is_sent_and_a_newer_one_replaces_it_before_sending() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a, b = Update("k", 1, 0), Update("k", 2, 1)
    assert order.offer("k", 1, a, b"a").send
    offer = order.offer("k", 2, b, b"b")
    assert offer.send and offer.superseded is a
    assert not order.sending("k", a)  # a waits in an unsent batch: dropped at dispatch
    assert order.sending("k", b)


def test_older_update_than_the_unsent_one_is_superseded_at_once() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a, b = Update("k", 5, 0), Update("k", 3, 1)
    order.offer("k", 5, a, b"a")
    offer = order.offer("k", 3, b, b"b")
    assert not offer.send and offer.superseded is b


def test_updates_wait_while_one_is_in_flight_and_only_the_newest_is_released() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a, b, c = Update("k", 1, 0), Update("k", 3, 1), Update("k", 2, 2)
    order.offer("k", 1, a, b"a")
    assert order.sending("k", a)
    waiting = order.offer("k", 3, b, b"b")
    assert not waiting.send and waiting.superseded is None
    offer = order.offer("k", 2, c, b"c")  # older than the waiting one
    assert not offer.send and offer.superseded is c
    released = order.finished("k", a, delivered=True)
    assert released is not None and released.send and released.item is b
    assert released.payload == b"b"
    assert order.last_delivered("k") == 1


def test_waiting_update_older_than_the_delivered_one_is_superseded_on_release() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a, b = Update("k", 10, 0), Update("k", 10, 1)
    order.offer("k", 10, a, b"a")
    order.sending("k", a)
    order.offer("k", 10, b, b"b")  # equal createdAt: the later arrival still goes
    released = order.finished("k", a, delivered=True)
    assert released is not None and released.send
    order.sending("k", b)
    assert order.finished("k", b, delivered=True) is None
    stale = Update("k", 9, 2)
    offer = order.offer("k", 9, stale, b"s")
    assert not offer.send and offer.superseded is stale
    assert order.pending_identities == 0


def test_dead_lettered_update_does_not_count_as_delivered() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a = Update("k", 10, 0)
    order.offer("k", 10, a, b"a")
    order.sending("k", a)
    order.finished("k", a, delivered=False)
    assert order.last_delivered("k") is None
    assert order.offer("k", 5, Update("k", 5, 1), b"").send


def test_delivered_memory_is_an_lru_capped_at_max_identities() -> None:
    order: ProfileOrder[Update] = ProfileOrder(2)
    for i, key in enumerate(["a", "b", "a", "c"]):  # "a" refreshed, so "b" is the eldest
        u = Update(key, 100 + i, i)
        order.offer(key, u.created, u, b"")
        order.sending(key, u)
        order.finished(key, u, delivered=True)
    assert order.remembered_identities == 2
    assert order.last_delivered("b") is None and order.evicted == 1
    assert order.last_delivered("a") == 102 and order.last_delivered("c") == 103


def test_forget_waiting_drops_only_matching_waiting_updates() -> None:
    order: ProfileOrder[Update] = ProfileOrder(10)
    a, b = Update("k", 1, 0), Update("k", 2, 1)
    order.offer("k", 1, a, b"a")
    order.sending("k", a)
    order.offer("k", 2, b, b"b")
    assert order.forget_waiting(lambda u: u.n == 1) == [b]
    assert order.finished("k", a, delivered=True) is None


def test_max_identities_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProfileOrder(0)


# -- stateful model: the pipeline's use of ProfileOrder, against AEP's "last write wins" ------


@dataclass
class Sim:
    pending: dict[int, Update] = field(default_factory=dict)  # in the batcher, unsent
    flight: dict[int, Update] = field(default_factory=dict)  # sent, no answer yet


class ProfileOrderMachine(RuleBasedStateMachine):
    """Random interleavings of offers, dispatches and answers for a few identities."""

    def __init__(self) -> None:
        super().__init__()
        self.order: ProfileOrder[Update] = ProfileOrder(1000)
        self.sim = Sim()
        self.n = 0
        self.offered: dict[str, list[Update]] = {}
        self.done: set[int] = set()  # finished: delivered, rejected or superseded
        self.written: dict[str, list[int]] = {}  # createdAt of each delivered write, in order
        self.max_delivered: dict[str, int] = {}
        self.rejected: set[str] = set()  # identities with a dead-lettered update

    def _finish(self, u: Update) -> None:
        assert u.n not in self.done, "an update finished twice"
        self.done.add(u.n)

    @rule(key=st.sampled_from("ab"), created=st.integers(0, 6))
    def offer(self, key: str, created: int) -> None:
        u = Update(key, created, self.n)
        self.n += 1
        self.offered.setdefault(key, []).append(u)
        result = self.order.offer(key, created, u, str(u.n).encode())
        if result.superseded is not None:
            self._finish(result.superseded)
        if result.send:
            self.sim.pending[u.n] = u

    @precondition(lambda self: self.sim.pending)
    @rule(data=st.data())
    def dispatch(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(sorted(self.sim.pending)))
        u = self.sim.pending.pop(n)
        if self.order.sending(u.key, u):
            assert all(f.key != u.key for f in self.sim.flight.values()), "two in flight"
            assert u.created >= self.max_delivered.get(u.key, -1), "older than delivered"
            self.sim.flight[n] = u
        else:
            assert u.n in self.done, "dropped at dispatch without being superseded"

    @precondition(lambda self: self.sim.flight)
    @rule(data=st.data(), accepted=st.booleans())
    def answer(self, data: st.DataObject, accepted: bool) -> None:
        n = data.draw(st.sampled_from(sorted(self.sim.flight)))
        u = self.sim.flight.pop(n)
        self._finish(u)
        if accepted:
            self.written.setdefault(u.key, []).append(u.created)
            self.max_delivered[u.key] = max(self.max_delivered.get(u.key, -1), u.created)
        else:
            self.rejected.add(u.key)
        released = self.order.finished(u.key, u, delivered=accepted)
        if released is not None:
            assert released.payload == str(released.item.n).encode()
            if released.send:
                self.sim.pending[released.item.n] = released.item
            else:
                self._finish(released.item)

    @invariant()
    def writes_never_go_backwards(self) -> None:
        for writes in self.written.values():
            assert writes == sorted(writes)

    def teardown(self) -> None:
        # Drain: dispatch and accept everything; then every update finished exactly once and
        # each identity's last write is its newest update (latest arrival among equals).
        while self.sim.pending or self.sim.flight:
            if self.sim.pending:
                n = min(self.sim.pending)
                u = self.sim.pending.pop(n)
                if self.order.sending(u.key, u):
                    self.sim.flight[n] = u
                continue
            n = min(self.sim.flight)
            u = self.sim.flight.pop(n)
            self._finish(u)
            self.written.setdefault(u.key, []).append(u.created)
            released = self.order.finished(u.key, u, delivered=True)
            if released is not None:
                if released.send:
                    self.sim.pending[released.item.n] = released.item
                else:
                    self._finish(released.item)
        assert self.done == set(range(self.n))
        for key, updates in self.offered.items():
            writes = self.written.get(key, [])
            assert writes == sorted(writes)
            if key not in self.rejected:  # a dead-lettered newest update may leave an older one
                assert writes[-1] == max(u.created for u in updates)
        assert self.order.pending_identities == 0


TestProfileOrderMachine = ProfileOrderMachine.TestCase
TestProfileOrderMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
