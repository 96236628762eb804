"""Turns a bad deploy into a loud stop instead of a silent drain into the dead-letter topic.

Counts every finished record as valid or invalid; trips when the invalid share over the last
``window`` records exceeds ``max_invalid_ratio`` (after ``min_records``), or when
``max_consecutive`` records in a row are invalid. Once tripped it stays tripped: only an
operator clears it (see README, "DLQ guard").
"""

from __future__ import annotations

from collections import deque

from worker.config import DlqGuardSettings


class DlqGuard:
    __slots__ = ("_invalid", "_recent", "consecutive", "reason", "settings", "tripped")

    def __init__(self, settings: DlqGuardSettings) -> None:
        self.settings = settings
        self._recent: deque[bool] = deque(maxlen=settings.window)
        self._invalid = 0
        self.consecutive = 0
        self.tripped = False
        self.reason = ""

    def _push(self, invalid: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._invalid -= 1
        self._recent.append(invalid)
        self._invalid += invalid

    def valid(self) -> None:
        self._push(False)
        self.consecutive = 0

    def allow_invalid(self) -> bool:
        """Record one invalid record; False means the guard tripped: do not dead-letter it."""
        if not self.settings.enabled:
            return True
        if self.tripped:
            return False
        self._push(True)
        self.consecutive += 1
        if self.consecutive >= self.settings.max_consecutive:
            return self.trip(f"{self.consecutive} invalid records in a row")
        seen = len(self._recent)
        if seen >= self.settings.min_records:
            ratio = self._invalid / seen
            if ratio > self.settings.max_invalid_ratio:
                return self.trip(f"invalid ratio {ratio:.2f} over the last {seen} records")
        return True

    def trip(self, reason: str) -> bool:
        self.tripped = True
        self.reason = reason
        return False

    @property
    def invalid_ratio(self) -> float:
        return self._invalid / len(self._recent) if self._recent else 0.0
