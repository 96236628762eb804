"""Where a consumer group's offsets go for each reset mode (pure; the Kafka I/O is elsewhere).

The modes are those of ``kafka-consumer-groups --reset-offsets``. Every new offset is clamped
into the partition's ``[low, high]`` (an offset outside it would only trip the worker's
out-of-range policy), and the plan says when it clamped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.offsets import TP

Mode = Literal["earliest", "latest", "datetime", "offset", "shift"]


class PlanError(ValueError):
    """The mode cannot be applied to some partitions; the message names them."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    low: int  # log start offset
    high: int  # log end offset (next offset to be written)
    committed: int | None  # the group's committed offset, None when it has none

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class ResetMode:
    kind: Mode
    value: int = 0  # the offset, the shift, or (datetime) epoch ms

    def describe(self) -> str:
        if self.kind in ("earliest", "latest"):
            return f"to {self.kind}"
        if self.kind == "offset":
            return f"to offset {self.value}"
        if self.kind == "shift":
            return f"shift by {self.value:+d}"
        return "to time"


@dataclass(frozen=True, slots=True)
class PlannedReset:
    topic: str
    partition: int
    current: int | None
    new: int
    note: str = ""

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    @property
    def replays(self) -> int:
        """Offsets consumed again (> 0) or skipped (< 0). From the log start if none committed."""
        return (self.current if self.current is not None else self.new) - self.new

    @property
    def changes(self) -> bool:
        return self.current != self.new


def plan_reset(
    states: list[PartitionState], mode: ResetMode, time_offsets: dict[TP, int] | None = None
) -> list[PlannedReset]:
    """One planned reset per partition.

    ``time_offsets`` (datetime mode) holds, per partition, the earliest offset whose timestamp
    is at or after the requested time, or -1 when there is none (the new offset is then the
    log end: nothing at or after that time to replay).
    """
    out: list[PlannedReset] = []
    missing: list[str] = []
    for s in states:
        if mode.kind == "shift" and s.committed is None:
            missing.append(f"{s.topic}[{s.partition}]")
            continue
        target, note = _target(s, mode, time_offsets or {})
        new = min(max(target, s.low), s.high)
        if new != target:
            edge = f"log start {s.low}" if new == s.low else f"log end {s.high}"
            note = note or f"clamped to the {edge}"
        if s.committed is not None and s.committed < s.low and not note:
            note = "committed offset is below the log start (retention overtook the group)"
        out.append(PlannedReset(s.topic, s.partition, s.committed, new, note))
    if missing:
        raise PlanError(
            "--shift-by needs a committed offset, and the group has none for "
            + ", ".join(missing)
            + "; use --to-earliest, --to-datetime or --to-offset for those partitions"
        )
    return out


def _target(s: PartitionState, mode: ResetMode, time_offsets: dict[TP, int]) -> tuple[int, str]:
    if mode.kind == "earliest":
        return s.low, ""
    if mode.kind == "latest":
        return s.high, ""
    if mode.kind == "offset":
        return mode.value, ""
    if mode.kind == "shift":
        assert s.committed is not None
        return s.committed + mode.value, ""
    found = time_offsets.get(s.tp, -1)
    if found < 0:
        return s.high, "no record at or after that time: log end"
    return found, ""
