"""OffsetTracker: examples plus a stateful model check (hypothesis RuleBasedStateMachine)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from worker.offsets import TP, OffsetTracker

A: TP = ("loyalty", 0)
B: TP = ("loyalty", 1)
C: TP = ("points", 0)
TPS = [A, B, C]


# -- examples -------------------------------------------------------------------------------


def test_nothing_added_means_no_frontier() -> None:
    t = OffsetTracker()
    assert t.frontier(A) is None
    t.assign(A, 1)
    assert t.frontier(A) is None
    assert t.committable() == {}
    assert t.pending() == 0
    assert t.oldest_pending() == {}


def test_frontier_is_lowest_unfinished_with_gaps() -> None:
    t = OffsetTracker()
    t.assign(A, 7)
    for off in (10, 11, 15, 20):  # gaps: compaction, transaction markers
        assert t.add(A, off, 7)
    assert t.frontier(A) == 10
    assert t.finish(A, 11, 7)
    assert t.frontier(A) == 10
    assert t.finish(A, 10, 7)
    assert t.frontier(A) == 15
    assert t.oldest_pending() == {A: 15}
    assert t.tracked(A) == 2 and t.pending(A) == 2
    assert t.finish(A, 20, 7)
    assert t.tracked(A) == 2 and t.pending(A) == 1  # 20 is done but held behind 15
    assert t.finish(A, 15, 7)
    assert t.tracked() == 0
    assert t.frontier(A) == 21
    assert t.pending(A) == 0


def test_fan_out_finishes_only_when_every_part_did() -> None:
    t = OffsetTracker()
    t.assign(A, 1)
    t.add(A, 5, 1, parts=3)
    assert t.finish(A, 5, 1)
    assert t.finish(A, 5, 1)
    assert t.frontier(A) == 5
    assert t.pending(A) == 1
    assert t.finish(A, 5, 1)
    assert t.frontier(A) == 6
    assert not t.finish(A, 5, 1)  # a fourth part is unknown


def test_zero_parts_is_finished_at_once() -> None:
    t = OffsetTracker()
    t.assign(A, 1)
    t.add(A, 3, 1, parts=0)
    assert t.frontier(A) == 4
    assert t.pending() == 0
    t.add(A, 4, 1)
    t.add(A, 9, 1, parts=0)
    assert t.frontier(A) == 4
    assert not t.finish(A, 9, 1)
    t.finish(A, 4, 1)
    assert t.frontier(A) == 10


def test_stale_generation_and_unowned_are_ignored() -> None:
    t = OffsetTracker()
    assert not t.add(A, 0, 1)
    t.assign(A, 1)
    t.add(A, 0, 1)
    t.add(A, 1, 1)
    t.revoke(A)
    t.assign(A, 2)
    assert not t.finish(A, 0, 1)
    assert not t.add(A, 2, 1)
    assert t.frontier(A) is None
    t.add(A, 1, 2)
    assert not t.finish(A, 1, 1)  # same offset, old generation
    assert t.frontier(A) == 1
    assert t.finish(A, 1, 2)
    assert t.frontier(A) == 2


def test_committable_and_mark_committed() -> None:
    t = OffsetTracker()
    t.assign(A, 1)
    t.assign(B, 1)
    t.add(A, 0, 1)
    t.add(B, 0, 1, parts=0)
    assert t.committable() == {A: 0, B: 1}
    t.mark_committed({A: 0, B: 1, C: 99})
    assert t.committable() == {}
    assert t.committed(B) == 1
    assert t.committed(C) is None
    t.mark_committed({B: 0})  # never backwards
    assert t.committed(B) == 1
    t.finish(A, 0, 1)
    assert t.committable() == {A: 1}
    t.revoke(A)
    assert t.committable() == {}
    assert t.owned() == {B}
    assert t.is_owned(B) and not t.is_owned(A)
    assert t.generation(B) == 1 and t.generation(A) is None


def test_rejects_non_increasing_offsets_and_negative_parts() -> None:
    t = OffsetTracker()
    t.assign(A, 1)
    t.add(A, 5, 1)
    with pytest.raises(ValueError):
        t.add(A, 5, 1)
    with pytest.raises(ValueError):
        t.add(A, 4, 1)
    with pytest.raises(ValueError):
        t.add(A, 6, 1, parts=-1)
    assert t.frontier(A) == 5 and t.pending(A) == 1


def test_assign_replaces_prior_state() -> None:
    t = OffsetTracker()
    t.assign(A, 1)
    t.add(A, 100, 1)
    t.mark_committed({A: 100})
    t.assign(A, 2)
    assert t.frontier(A) is None and t.pending() == 0 and t.committed(A) is None
    t.add(A, 50, 2)  # a new owner may start below what the old one saw
    assert t.frontier(A) == 50


# -- properties -----------------------------------------------------------------------------


@st.composite
def records(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(offset, parts) with strictly increasing offsets and random gaps."""
    n = draw(st.integers(1, 60))
    start = draw(st.integers(0, 2**40))
    gaps = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    parts = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    out, off = [], start
    for g, p in zip(gaps, parts, strict=True):
        out.append((off, p))
        off += g
    return out


@given(records(), st.randoms(use_true_random=False))
def test_any_finish_order_ends_at_last_plus_one(
    recs: list[tuple[int, int]], rnd: random.Random
) -> None:
    t = OffsetTracker()
    t.assign(A, 3)
    for off, parts in recs:
        assert t.add(A, off, 3, parts)
    events = [off for off, parts in recs for _ in range(parts)]
    rnd.shuffle(events)
    unfinished = {off: parts for off, parts in recs if parts}
    prev = t.frontier(A)
    assert prev is not None
    for off in events:
        assert t.finish(A, off, 3)
        unfinished[off] -= 1
        if not unfinished[off]:
            del unfinished[off]
        f = t.frontier(A)
        assert f is not None and f >= prev
        assert f == (min(unfinished) if unfinished else recs[-1][0] + 1)
        prev = f
    assert t.frontier(A) == recs[-1][0] + 1
    assert t.pending() == 0


# -- stateful model check -------------------------------------------------------------------


@dataclass
class _Model:
    generation: int
    added: list[int] = field(default_factory=list)  # offsets added, ascending
    with_parts: list[int] = field(default_factory=list)  # offsets added with parts >= 1
    left: dict[int, int] = field(default_factory=dict)  # unfinished offset -> parts left
    committed: int | None = None
    last_frontier: int | None = None

    def frontier(self) -> int | None:
        if not self.added:
            return None
        return min(self.left) if self.left else self.added[-1] + 1


class TrackerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = OffsetTracker()
        self.models: dict[TP, _Model] = {}
        self.next_gen = 1
        # finishes that belong to revoked or replaced generations: (tp, offset, generation)
        self.stale: list[tuple[TP, int, int]] = []

    @initialize()
    def start(self) -> None:
        self.assign(A)

    def _snapshot(self) -> object:
        return (
            {tp: self.t.frontier(tp) for tp in TPS},
            self.t.committable(),
            {tp: self.t.pending(tp) for tp in TPS},
            self.t.oldest_pending(),
        )

    def _retire(self, tp: TP) -> None:
        m = self.models.pop(tp, None)
        if m is not None:
            self.stale.extend((tp, off, m.generation) for off in m.left)
            # also offsets already fully finished: finishing them again is meaningless too
            self.stale.extend((tp, off, m.generation) for off in m.added[-3:])

    @rule(tp=st.sampled_from(TPS))
    def assign(self, tp: TP) -> None:
        self._retire(tp)
        gen = self.next_gen
        self.next_gen += 1
        self.t.assign(tp, gen)
        self.models[tp] = _Model(gen)

    @rule(tp=st.sampled_from(TPS))
    def revoke(self, tp: TP) -> None:
        self._retire(tp)
        self.t.revoke(tp)

    @rule(tp=st.sampled_from(TPS), gap=st.integers(1, 4), parts=st.integers(0, 3))
    def add(self, tp: TP, gap: int, parts: int) -> None:
        m = self.models.get(tp)
        if m is None:
            before = self._snapshot()
            assert not self.t.add(tp, 10**6, self.next_gen - 1, parts)
            assert self._snapshot() == before
            return
        # every generation starts near 0, so stale finishes hit offsets the new owner uses
        off = (m.added[-1] if m.added else 0) + gap
        assert self.t.add(tp, off, m.generation, parts)
        m.added.append(off)
        if parts:
            m.left[off] = parts
            m.with_parts.append(off)

    @rule(tp=st.sampled_from(TPS), gen_delta=st.integers(1, 3))
    def add_wrong_generation(self, tp: TP, gen_delta: int) -> None:
        m = self.models.get(tp)
        gen = (m.generation if m else 0) + gen_delta
        before = self._snapshot()
        assert not self.t.add(tp, 10**9, gen)
        assert self._snapshot() == before

    @precondition(lambda self: any(m.left for m in self.models.values()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from(sorted(tp for tp, m in self.models.items() if m.left)))
        m = self.models[tp]
        off = data.draw(st.sampled_from(sorted(m.left)))
        assert self.t.finish(tp, off, m.generation)
        m.left[off] -= 1
        if not m.left[off]:
            del m.left[off]

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data())
    def finish_stale(self, data: st.DataObject) -> None:
        tp, off, gen = data.draw(st.sampled_from(self.stale))
        before = self._snapshot()
        assert not self.t.finish(tp, off, gen)
        assert self._snapshot() == before

    @rule(tp=st.sampled_from(TPS), off=st.integers(0, 10**5))
    def finish_unknown(self, tp: TP, off: int) -> None:
        m = self.models.get(tp)
        if m is not None and off in m.left:
            return
        before = self._snapshot()
        assert not self.t.finish(tp, off, m.generation if m else 0)
        assert self._snapshot() == before

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        c = self.t.committable()
        # the committer may commit only some partitions (e.g. one commit failed)
        chosen = data.draw(st.sets(st.sampled_from(sorted(c)))) if c else set()
        self.t.mark_committed({tp: c[tp] for tp in chosen})
        for tp in chosen:
            self.models[tp].committed = c[tp]

    @rule(tp=st.sampled_from(TPS), back=st.integers(0, 5))
    def mark_stale_commit(self, tp: TP, back: int) -> None:
        m = self.models.get(tp)
        if m is None:
            before = self._snapshot()
            self.t.mark_committed({tp: 5})
            assert self._snapshot() == before
        elif m.committed is not None:
            self.t.mark_committed({tp: m.committed - back})  # model unchanged: never backwards

    @invariant()
    def matches_model(self) -> None:
        assert self.t.owned() == set(self.models)
        total = 0
        for tp in TPS:
            m = self.models.get(tp)
            f = self.t.frontier(tp)
            if m is None:
                assert f is None and self.t.pending(tp) == 0 and not self.t.is_owned(tp)
                continue
            assert self.t.generation(tp) == m.generation
            assert f == m.frontier()
            # never past an unfinished offset
            if f is not None:
                assert all(f <= off for off in m.left)
            # only forward within a generation
            if m.last_frontier is not None:
                assert f is not None and f >= m.last_frontier
            m.last_frontier = f
            assert self.t.pending(tp) == len(m.left)
            total += len(m.left)
            assert self.t.tracked(tp) == (
                sum(1 for off in m.with_parts if off >= min(m.left)) if m.left else 0
            )
            assert self.t.committed(tp) == m.committed
        assert self.t.pending() == total
        assert self.t.tracked() == sum(self.t.tracked(tp) for tp in TPS)

    @invariant()
    def committable_is_owned_and_forward(self) -> None:
        c = self.t.committable()
        assert set(c) <= set(self.models)
        for tp, m in self.models.items():
            f = m.frontier()
            if f is not None and (m.committed is None or f > m.committed):
                assert c.get(tp) == f
            else:
                assert tp not in c

    @invariant()
    def oldest_pending_matches(self) -> None:
        assert self.t.oldest_pending() == {
            tp: min(m.left) for tp, m in self.models.items() if m.left
        }


TestTrackerMachine = TrackerMachine.TestCase
TestTrackerMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
