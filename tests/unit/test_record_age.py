"""Oldest-unfinished-record age: never below the true age, exact at a run's first record,
zero when nothing is unfinished, forgotten for partitions no longer owned."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.offsets import OffsetTracker
from worker.record_age import MAX_MARKS, UnfinishedAges

A = ("loyalty", 0)
B = ("loyalty", 1)


def test_age_of_the_oldest_unfinished_record() -> None:
    ages = UnfinishedAges()
    ages.mark_at(A, 0, 100.0)  # run 0..9 consumed at once
    ages.mark_at(A, 10, 150.0)  # run 10..19
    assert ages.ages({A: 0}, [A], 200.0) == {A: 100.0}
    assert ages.ages({A: 12}, [A], 200.0) == {A: 50.0}  # from the run's first record: >= true
    assert ages.ages({}, [A], 200.0) == {A: 0.0}  # all finished
    assert ages.ages({}, [], 200.0) == {}  # revoked: forgotten


def test_rewind_starts_afresh() -> None:
    ages = UnfinishedAges()
    ages.mark_at(A, 50, 10.0)
    ages.mark_at(A, 20, 30.0)  # consumed again from an earlier offset
    assert ages.ages({A: 20}, [A], 40.0) == {A: 10.0}


def test_marks_are_bounded() -> None:
    ages = UnfinishedAges()
    for i in range(MAX_MARKS * 3):
        ages.mark_at(A, i, float(i))
    assert len(ages._marks[A]) <= MAX_MARKS + 1
    assert ages.ages({A: 0}, [A], 1e6)[A] == 1e6  # the oldest mark survives thinning


@given(
    st.lists(  # consumed batches: runs of (partition, length)
        st.lists(st.tuples(st.sampled_from([A, B]), st.integers(1, 5)), min_size=1, max_size=4),
        min_size=1, max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_reported_age_never_below_true_age(batches: list[list[tuple[tuple[str, int], int]]],
                                           rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    tracker = OffsetTracker()
    ages = UnfinishedAges()
    ts: dict[tuple[tuple[str, int], int], float] = {}
    nxt = {A: 0, B: 0}
    for tp in (A, B):
        tracker.assign(tp, 1)
    clock = 0.0
    for batch in batches:
        for tp, n in batch:
            for i in range(n):
                clock += 1.0
                off = nxt[tp]
                nxt[tp] += 1
                if i == 0:
                    ages.mark_at(tp, off, clock)
                ts[(tp, off)] = clock
                tracker.add(tp, off, 1, 1)
        for tp, off in list(ts):
            if rnd.random() < 0.5 and tracker.finish(tp, off, 1):
                del ts[(tp, off)]
        now = clock + 10
        oldest = tracker.oldest_pending()
        reported = ages.ages(oldest, [A, B], now)
        for tp in (A, B):
            if tp in oldest:
                assert reported[tp] >= now - ts[(tp, oldest[tp])]
            else:
                assert reported[tp] == 0.0
