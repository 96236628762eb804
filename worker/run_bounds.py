"""End offsets of a bounded run (a side replay): where each partition stops (pure).

A record at or past its partition's end is not processed and not tracked, so the group's
commit never passes the end. A partition is done once a record at or past the end was seen,
or the consumer's position reached the end (it can stop short of the end offset when the log
ends in transaction markers), and nothing of it is still in flight.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.offsets import TP


class RunBounds:
    __slots__ = ("_reached", "ends")

    def __init__(self, ends: Mapping[TP, int]) -> None:
        self.ends = dict(ends)
        self._reached: set[TP] = set()

    def beyond(self, tp: TP, offset: int) -> bool:
        """True (and the partition reached) when ``offset`` is past the run; unbounded: False."""
        end = self.ends.get(tp)
        if end is None or offset < end:
            return False
        self._reached.add(tp)
        return True

    def reach(self, tp: TP, position: int) -> bool:
        """Note the consumer's position (or committed offset) for ``tp``; True once reached."""
        end = self.ends.get(tp)
        if end is not None and position >= end:
            self._reached.add(tp)
        return tp in self._reached

    def reached(self, tp: TP) -> bool:
        return tp in self._reached

    def open(self) -> list[TP]:
        """Partitions not yet at their end."""
        return [tp for tp in self.ends if tp not in self._reached]
