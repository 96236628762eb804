"""Per-partition contiguous-completion tracking: which offset is safe to commit.

A record enters with `add` when consumed and leaves with one `finish` per target it fans out to
(accepted by AEP, dead-lettered and acked, or filtered). The committable offset of a partition
is its lowest unfinished offset, or one past the highest added offset when nothing is pending.
A record that can never finish therefore holds the commit back forever: that is the point.

Every call carries the generation under which the partition was assigned, so work started
before a rebalance can never move the offsets of the next owner's generation.

Cost per record: one tuple hash and a few dict/deque operations in `add` and `finish`;
`frontier` is O(1) because `finish` pops finished heads eagerly (amortised O(1)).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["TP", "OffsetTracker"]

TP = tuple[str, int]
"""(topic, partition)."""


@dataclass(slots=True)
class _Partition:
    generation: int
    # Offsets still unfinished when added, ascending. Invariant: the head (if any) is
    # unfinished, so it is the frontier. Finished offsets behind the head stay until the
    # head finishes; they cost 8 bytes each and are bounded by the in-flight cap.
    order: deque[int] = field(default_factory=deque)
    # offset -> parts still to finish; holds exactly the unfinished records.
    remaining: dict[int, int] = field(default_factory=dict)
    last: int = -1  # highest offset added since assign; -1 = none (Kafka offsets are >= 0)
    committed: int = -1  # highest value passed to mark_committed; -1 = none


class OffsetTracker:
    """Tracks consumed records per owned partition and yields safe commit offsets."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    # -- ownership -------------------------------------------------------------------------

    def assign(self, tp: TP, generation: int) -> None:
        """Take ownership of `tp` under `generation`, discarding any earlier state for it."""
        self._parts[tp] = _Partition(generation)

    def revoke(self, tp: TP) -> None:
        """Drop all state for `tp` (no-op if not owned)."""
        self._parts.pop(tp, None)

    def owned(self) -> set[TP]:
        return set(self._parts)

    def is_owned(self, tp: TP) -> bool:
        return tp in self._parts

    def generation(self, tp: TP) -> int | None:
        p = self._parts.get(tp)
        return None if p is None else p.generation

    # -- hot path --------------------------------------------------------------------------

    def add(self, tp: TP, offset: int, generation: int, parts: int = 1) -> bool:
        """Record a consumed record that fans out to `parts` targets (0 = already finished).

        Returns False, recording nothing, if `tp` is not owned under `generation`.
        Raises ValueError if `offset` is not above every offset added since assign (a replay
        within one generation would make the frontier lie) or if `parts` is negative.
        """
        p = self._parts.get(tp)
        if p is None or p.generation != generation:
            return False
        if offset <= p.last:
            raise ValueError(f"offset {offset} for {tp} not above last added offset {p.last}")
        if parts < 0:
            raise ValueError(f"parts must be >= 0, got {parts}")
        p.last = offset
        if parts:
            p.remaining[offset] = parts
            p.order.append(offset)
        # parts == 0 needs no entry: the frontier is either an earlier unfinished offset or last+1.
        return True

    def finish(self, tp: TP, offset: int, generation: int) -> bool:
        """Count one finished part of the record at `offset`.

        Returns False and changes nothing if `tp` is not owned under `generation` or the
        offset has no unfinished parts (unknown, or already fully finished).
        """
        p = self._parts.get(tp)
        if p is None or p.generation != generation:
            return False
        remaining = p.remaining
        left = remaining.get(offset)
        if left is None:
            return False
        if left > 1:
            remaining[offset] = left - 1
            return True
        del remaining[offset]
        order = p.order
        if order[0] == offset:
            order.popleft()
            while order and order[0] not in remaining:
                order.popleft()
        return True

    def frontier(self, tp: TP) -> int | None:
        """Offset to commit for `tp`; None if not owned or nothing added since assign."""
        p = self._parts.get(tp)
        if p is None or p.last < 0:
            return None
        return p.order[0] if p.order else p.last + 1

    # -- commits ---------------------------------------------------------------------------

    def committable(self) -> dict[TP, int]:
        """Frontiers of owned partitions that are beyond their last committed mark."""
        out: dict[TP, int] = {}
        for tp, p in self._parts.items():
            if p.last < 0:
                continue
            f = p.order[0] if p.order else p.last + 1
            if f > p.committed:
                out[tp] = f
        return out

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        """Note a successful commit. Unowned partitions and backward values are ignored."""
        for tp, off in offsets.items():
            p = self._parts.get(tp)
            if p is not None and off > p.committed:
                p.committed = off

    def committed(self, tp: TP) -> int | None:
        """Last value recorded by mark_committed since assign, or None."""
        p = self._parts.get(tp)
        return None if p is None or p.committed < 0 else p.committed

    # -- observation -----------------------------------------------------------------------

    def pending(self, tp: TP | None = None) -> int:
        """Records not yet finished, for `tp` or across all owned partitions."""
        if tp is None:
            return sum(len(p.remaining) for p in self._parts.values())
        p = self._parts.get(tp)
        return 0 if p is None else len(p.remaining)

    def tracked(self, tp: TP | None = None) -> int:
        """Offsets held in memory: the unfinished ones plus finished ones behind the oldest.

        Unlike `pending`, this keeps growing behind a record that never finishes, so the
        pipeline can pause such a partition before its memory grows with the backlog.
        """
        if tp is None:
            return sum(len(p.order) for p in self._parts.values())
        p = self._parts.get(tp)
        return 0 if p is None else len(p.order)

    def oldest_pending(self) -> dict[TP, int]:
        """Offset of the oldest unfinished record, for each owned partition that has one."""
        return {tp: p.order[0] for tp, p in self._parts.items() if p.order}
