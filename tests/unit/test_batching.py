"""Batcher and Batch: examples, properties and a stateful model check (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worker.batching import BODY_OVERHEAD, Batch, Batcher, MessageTooLarge


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(i: int, pad: int = 0) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * pad})


def check_batch(b: Batch[Any], max_messages: int, max_bytes: int) -> None:
    body = b.body()
    assert len(body) == b.nbytes <= max_bytes
    assert 1 <= len(b) <= max_messages
    assert len(b.items) == len(b.payloads)
    assert orjson.loads(body) == {"messages": [orjson.loads(p) for p in b.payloads]}


# -- examples -------------------------------------------------------------------------------


def test_overhead_is_fifteen_bytes() -> None:
    assert BODY_OVERHEAD == 15 == len(b'{"messages":[]}')


def test_closes_on_count() -> None:
    bt: Batcher[int] = Batcher(3, 10_000, 1.0, FakeClock())
    assert bt.add("k", 0, msg(0)) is None
    assert bt.add("k", 1, msg(1)) is None
    full = bt.add("k", 2, msg(2))
    assert full is not None and full.items == [0, 1, 2]
    assert bt.open_counts() == (0, 0)
    assert bt.next_deadline() is None


def test_closes_to_make_room_at_exact_byte_limit() -> None:
    p = b'{"a":1}'  # 7 bytes
    # two messages: 15 + 7 + 1 + 7 = 30 bytes
    bt: Batcher[int] = Batcher(100, 30, 1.0, FakeClock())
    assert bt.add("k", 0, p) is None
    assert bt.add("k", 1, p) is None  # exactly 30: fits
    assert bt.open_counts() == (2, 30)
    closed = bt.add("k", 2, p)  # would be 38
    assert closed is not None and closed.items == [0, 1] and closed.nbytes == 30
    assert closed.body() == b'{"messages":[{"a":1},{"a":1}]}'
    assert bt.open_counts() == (1, 22)


def test_max_messages_one_never_holds_a_batch() -> None:
    bt: Batcher[str] = Batcher(1, 1000, 1.0, FakeClock())
    b = bt.add("k", "a", b"1")
    assert b is not None and b.items == ["a"] and b.body() == b'{"messages":[1]}'
    assert bt.flush() == []


def test_message_too_large_exactly_when_it_cannot_fit_alone() -> None:
    bt: Batcher[int] = Batcher(10, 20, 1.0, FakeClock())
    assert bt.add("k", 0, b"12345") is None  # 15 + 5 == 20: fits
    with pytest.raises(MessageTooLarge) as exc:
        bt.add("k", 1, b"123456")
    assert exc.value.size == 6 and exc.value.max_bytes == 20
    assert isinstance(exc.value, ValueError)
    # the open batch is untouched
    assert bt.open_counts() == (1, 20)
    assert [b.items for b in bt.flush()] == [[0]]


def test_linger_counts_from_first_message() -> None:
    clock = FakeClock()
    bt: Batcher[int] = Batcher(100, 10_000, 0.5, clock)
    bt.add("a", 0, b"0")
    clock.now += 0.3
    bt.add("a", 1, b"1")
    bt.add("b", 2, b"2")
    assert bt.next_deadline() == pytest.approx(100.5)
    clock.now = 100.49
    assert bt.due() == []
    clock.now = 100.5
    due = bt.due()
    assert [(b.key, b.items, b.created_at) for b in due] == [("a", [0, 1], 100.0)]
    assert bt.next_deadline() == pytest.approx(100.8)
    assert bt.keys() == ["b"]
    clock.now = 101.0
    assert [b.key for b in bt.due()] == ["b"]
    assert bt.next_deadline() is None


def test_linger_counts_from_when_the_message_was_taken() -> None:
    clock = FakeClock()
    bt: Batcher[int] = Batcher(100, 10_000, 0.5, clock)
    bt.add("a", 0, b"0", now=99.8)  # waited 0.2 s in the consume call that returned it
    bt.add("a", 1, b"1", now=99.9)  # joins the open batch: its linger does not restart
    assert bt.next_deadline() == pytest.approx(100.3)
    clock.now = 100.3
    assert [(b.items, b.created_at) for b in bt.due()] == [([0, 1], 99.8)]


def test_flush_one_key_or_all() -> None:
    bt: Batcher[int] = Batcher(100, 10_000, 1.0, FakeClock())
    bt.add("a", 0, b"0")
    bt.add("b", 1, b"1")
    assert bt.flush("missing") == []
    assert [b.items for b in bt.flush("a")] == [[0]]
    assert [b.items for b in bt.flush()] == [[1]]
    assert bt.flush() == []


def test_drop_removes_matching_items_and_fixes_sizes() -> None:
    clock = FakeClock()
    bt: Batcher[tuple[int, int]] = Batcher(100, 10_000, 1.0, clock)
    for off in range(4):
        bt.add("a", (off % 2, off), msg(off))
    bt.add("b", (1, 9), msg(9))
    removed = bt.drop(lambda item: item[0] == 1)
    assert removed == [(1, 1), (1, 3), (1, 9)]
    assert bt.keys() == ["a"]
    (b,) = bt.flush()
    assert b.items == [(0, 0), (0, 2)] and b.created_at == 100.0
    check_batch(b, 100, 10_000)


def test_split_and_subset() -> None:
    payloads = [msg(i) for i in range(5)]
    b = Batch("k", list(range(5)), payloads, 0, 1.0)
    b.nbytes = len(b.body())
    left, right = b.split()
    assert left.items == [0, 1] and right.items == [2, 3, 4]
    assert left.nbytes == len(left.body()) and right.nbytes == len(right.body())
    s = b.subset([4, 1])
    assert s.items == [4, 1] and s.payloads == [payloads[4], payloads[1]]
    assert s.nbytes == len(s.body()) and s.key == "k" and s.created_at == 1.0
    assert b.subset([]).body() == b'{"messages":[]}'
    with pytest.raises(IndexError):
        b.subset([5])
    with pytest.raises(IndexError):
        b.subset([-1])
    with pytest.raises(ValueError):
        b.subset([1, 1])
    with pytest.raises(ValueError):
        b.subset([0]).split()


@pytest.mark.parametrize(
    ("max_messages", "max_bytes", "linger"), [(0, 100, 1.0), (1, 15, 1.0), (1, 100, -0.1)]
)
def test_rejects_bad_settings(max_messages: int, max_bytes: int, linger: float) -> None:
    with pytest.raises(ValueError):
        Batcher[int](max_messages, max_bytes, linger)


# -- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
payloads = json_values.map(orjson.dumps)


@given(
    max_messages=st.integers(1, 8),
    max_bytes=st.integers(16, 400),
    adds=st.lists(st.tuples(st.sampled_from("abc"), payloads), max_size=60),
)
def test_every_item_in_exactly_one_batch_in_order(
    max_messages: int, max_bytes: int, adds: list[tuple[str, bytes]]
) -> None:
    bt: Batcher[int] = Batcher(max_messages, max_bytes, 1.0, FakeClock())
    emitted: list[Batch[int]] = []
    accepted: dict[str, list[int]] = {}
    for i, (key, p) in enumerate(adds):
        try:
            out = bt.add(key, i, p)
        except MessageTooLarge:
            assert BODY_OVERHEAD + len(p) > max_bytes
            continue
        assert BODY_OVERHEAD + len(p) <= max_bytes
        accepted.setdefault(key, []).append(i)
        if out is not None:
            emitted.append(out)
            if i in out.items:  # closed by count: this message filled it
                assert out.items[-1] == i and len(out) == max_messages
            else:  # closed to make room: the new message really did not fit
                assert out.key == key and out.nbytes + 1 + len(p) > max_bytes
    emitted.extend(bt.flush())
    per_key: dict[str, list[int]] = {}
    for b in emitted:
        check_batch(b, max_messages, max_bytes)
        per_key.setdefault(b.key, []).extend(b.items)
        assert b.payloads == [adds[i][1] for i in b.items]
    assert per_key == accepted


@given(
    st.lists(payloads, min_size=1, max_size=30),
    st.data(),
)
def test_split_and_subset_preserve_items_and_exact_size(
    ps: list[bytes], data: st.DataObject
) -> None:
    bt: Batcher[int] = Batcher(len(ps), 10**9, 1.0, FakeClock())
    b = None
    for i, p in enumerate(ps):
        b = bt.add("k", i, p)
    assert b is not None and b.items == list(range(len(ps)))
    check_batch(b, len(ps), 10**9)
    if len(b) >= 2:
        left, right = b.split()
        assert left.items + right.items == b.items
        assert left.payloads + right.payloads == b.payloads
        assert abs(len(left) - len(right)) <= 1 and len(left) >= 1 and len(right) >= 1
        # a split never costs more than the original body (one comma less, wrapper more)
        assert left.nbytes + right.nbytes == b.nbytes - 1 + BODY_OVERHEAD
        for half in (left, right):
            check_batch(half, len(ps), 10**9)
    idx = data.draw(st.permutations(range(len(b))).flatmap(lambda p: st.just(p[: len(p) // 2])))
    s = b.subset(idx)
    assert s.items == idx and s.payloads == [ps[i] for i in idx]
    assert s.nbytes == len(s.body())
    assert orjson.loads(s.body())["messages"] == [orjson.loads(ps[i]) for i in idx]


@given(size=st.integers(0, 300), max_bytes=st.integers(16, 300))
def test_message_too_large_iff_over_limit_alone(size: int, max_bytes: int) -> None:
    payload = b'"' + b"x" * size + b'"'
    bt: Batcher[int] = Batcher(5, max_bytes, 1.0, FakeClock())
    if BODY_OVERHEAD + len(payload) > max_bytes:
        with pytest.raises(MessageTooLarge):
            bt.add("k", 0, payload)
        assert bt.open_counts() == (0, 0)
    else:
        assert bt.add("k", 0, payload) is None
        (b,) = bt.flush()
        assert b.nbytes == BODY_OVERHEAD + len(payload) <= max_bytes


# -- stateful model check -------------------------------------------------------------------


@dataclass
class _Item:
    key: str
    seq: int
    tag: int  # drop() predicates select on this


class BatcherMachine(RuleBasedStateMachine):
    MAX_MESSAGES = 4
    MAX_BYTES = 120
    LINGER = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.bt: Batcher[_Item] = Batcher(
            self.MAX_MESSAGES, self.MAX_BYTES, self.LINGER, self.clock
        )
        self.seq = 0
        self.added: dict[str, list[int]] = {}
        self.emitted: dict[str, list[int]] = {}
        self.dropped: set[int] = set()

    def _take(self, batches: list[Batch[_Item]]) -> None:
        for b in batches:
            check_batch(b, self.MAX_MESSAGES, self.MAX_BYTES)
            assert all(it.key == b.key for it in b.items)
            self.emitted.setdefault(b.key, []).extend(it.seq for it in b.items)

    @rule(key=st.sampled_from("ab"), tag=st.integers(0, 2), size=st.integers(0, 110))
    def add(self, key: str, tag: int, size: int) -> None:
        p = orjson.dumps("x" * size)
        item = _Item(key, self.seq, tag)
        try:
            out = self.bt.add(key, item, p)
        except MessageTooLarge:
            assert BODY_OVERHEAD + len(p) > self.MAX_BYTES
            return
        self.added.setdefault(key, []).append(self.seq)
        self.seq += 1
        if out is not None:
            self._take([out])

    @rule(dt=st.floats(0, 1.5))
    def tick(self, dt: float) -> None:
        self.clock.now += dt

    @rule()
    def due(self) -> None:
        deadline = self.bt.next_deadline()
        due = self.bt.due()
        for b in due:
            assert b.created_at + self.LINGER <= self.clock.now
        if deadline is not None and deadline <= self.clock.now:
            assert due
        self._take(due)

    @rule(key=st.none() | st.sampled_from("ab"))
    def flush(self, key: str | None) -> None:
        self._take(self.bt.flush(key))

    @precondition(lambda self: self.bt.open_counts()[0] > 0)
    @rule(tag=st.integers(0, 2))
    def drop(self, tag: int) -> None:
        removed = self.bt.drop(lambda it: it.tag == tag)
        assert all(it.tag == tag for it in removed)
        self.dropped.update(it.seq for it in removed)

    @invariant()
    def accounting(self) -> None:
        open_msgs, open_bytes = self.bt.open_counts()
        held = self.bt._open  # white-box: open batches are not observable without closing them
        assert open_msgs == sum(len(b) for b in held.values())
        assert open_bytes == sum(len(b.body()) for b in held.values())
        for b in held.values():
            assert 1 <= len(b) < self.MAX_MESSAGES and b.nbytes <= self.MAX_BYTES
            assert b.created_at <= self.clock.now
        d = self.bt.next_deadline()
        assert d == (min(b.created_at for b in held.values()) + self.LINGER if held else None)
        # conservation: every added item is emitted, dropped, or still open, exactly once
        open_seqs = [it.seq for b in held.values() for it in b.items]
        emitted = [s for seqs in self.emitted.values() for s in seqs]
        everything = emitted + sorted(self.dropped) + open_seqs
        assert sorted(everything) == list(range(self.seq))
        # per key, emitted then still-open items keep add order (minus dropped ones)
        for key, seqs in self.added.items():
            survivors = [s for s in seqs if s not in self.dropped]
            still = [it.seq for it in held[key].items] if key in held else []
            assert self.emitted.get(key, []) + still == survivors


TestBatcherMachine = BatcherMachine.TestCase
TestBatcherMachine.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
