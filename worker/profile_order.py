"""Profiles never go backwards: per (target, identity), at most one update on its way to AEP.

AEP does not order streaming updates to a profile (SPEC 4), so the worker does, per profile
target and identity:

* **one in flight**: while an update is being sent (or retried), newer ones wait; only the
  newest waiting one is kept, the others are *superseded*;
* **newest wins before sending**: an update still in an unsent batch is replaced by a newer
  one, so a batch never carries two updates of one identity;
* **never older than delivered**: an update older (by Capillary ``createdAt``) than one
  already delivered for the identity in this run is superseded, never sent.

Superseded updates finish their record part as *filtered* (reason ``superseded``), so their
offsets complete. Equal ``createdAt``: the one consumed later wins.

The "last delivered createdAt" memory is an LRU capped at ``max_identities``: an identity
evicted from it (not seen for a long time) loses only the third protection, and only until
its next delivery. Pending state is bounded by the pipeline's in-flight caps.

Pure bookkeeping (no I/O, no clock): the pipeline tells it what happens and does what it says.
Per update: one or two dict lookups.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["Offer", "ProfileOrder", "Release"]

T = TypeVar("T")


class _Slot:
    """One identity's pending updates (a plain class: built once per update, kept cheap)."""

    __slots__ = ("created", "item", "sent", "waiting", "waiting_created", "waiting_payload")

    def __init__(self, item: Any, created: int) -> None:
        self.item = item  # the update in the batcher (unsent) or in flight (sent)
        self.created = created
        self.sent = False
        self.waiting: Any = None  # the newest update waiting for the in-flight one
        self.waiting_created = 0
        self.waiting_payload = b""


class Offer(NamedTuple, Generic[T]):  # a tuple: cheap to build on the hot path
    """What to do with an offered update.

    ``send``: hand the offered item to the batcher now. ``superseded``: an item (the offered
    one, or the one it replaced) that will never be sent: finish it as filtered.
    """

    send: bool
    superseded: T | None = None


class Release(NamedTuple, Generic[T]):
    """After an in-flight update finished: the waiting one to send, or to finish as superseded."""

    item: T
    payload: bytes
    send: bool


_SEND: Offer[Any] = Offer(True)
_WAIT: Offer[Any] = Offer(False)


class ProfileOrder(Generic[T]):
    __slots__ = ("_delivered", "_max", "_slots", "evicted")

    def __init__(self, max_identities: int) -> None:
        if max_identities < 1:
            raise ValueError("max_identities must be >= 1")
        self._max = max_identities
        self._slots: dict[Hashable, _Slot] = {}
        self._delivered: OrderedDict[Hashable, int] = OrderedDict()
        self.evicted = 0  # identities dropped from the delivered-LRU (a metric)

    # -- the hot path ------------------------------------------------------------------------

    def offer(self, key: Hashable, created: int, item: T, payload: bytes) -> Offer[T]:
        """A new update for ``key`` with Capillary ``createdAt`` ``created`` (epoch ms)."""
        last = self._delivered.get(key)
        if last is not None and created < last:
            return Offer(False, item)
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = _Slot(item, created)
            return _SEND
        if not slot.sent:
            if created < slot.created:
                return Offer(False, item)
            replaced = slot.item
            slot.item = item
            slot.created = created
            return Offer(True, replaced)
        if slot.waiting is not None:
            if created < slot.waiting_created:
                return Offer(False, item)
            replaced_waiting: T | None = slot.waiting
        else:
            replaced_waiting = None
        slot.waiting = item
        slot.waiting_created = created
        slot.waiting_payload = payload
        return _WAIT if replaced_waiting is None else Offer(False, replaced_waiting)

    def sending(self, key: Hashable, item: T) -> bool:
        """``item`` is being handed to AEP. False: it was superseded meanwhile (do not send)."""
        slot = self._slots.get(key)
        if slot is None or slot.item is not item:
            return False
        slot.sent = True
        return True

    def finished(self, key: Hashable, item: T, delivered: bool) -> Release[T] | None:
        """The in-flight ``item`` was accepted (``delivered``) or dead-lettered."""
        slot = self._slots.get(key)
        if slot is None or slot.item is not item:
            return None
        if delivered:
            self._remember(key, slot.created)
        waiting = slot.waiting
        if waiting is None:
            del self._slots[key]
            return None
        payload = slot.waiting_payload
        last = self._delivered.get(key)
        if last is not None and slot.waiting_created < last:
            del self._slots[key]
            return Release(waiting, payload, send=False)
        slot.item = waiting
        slot.created = slot.waiting_created
        slot.sent = False
        slot.waiting = None
        slot.waiting_payload = b""
        return Release(waiting, payload, send=True)

    # -- housekeeping --------------------------------------------------------------------------

    def forget_waiting(self, predicate: Callable[[T], bool]) -> list[T]:
        """Drop the waiting updates matching ``predicate`` (e.g. of revoked partitions)."""
        dropped: list[T] = []
        for slot in self._slots.values():
            if slot.waiting is not None and predicate(slot.waiting):
                dropped.append(slot.waiting)
                slot.waiting = None
                slot.waiting_payload = b""
        return dropped

    def _remember(self, key: Hashable, created: int) -> None:
        delivered = self._delivered
        last = delivered.get(key)
        if last is None or created > last:
            delivered[key] = created
        delivered.move_to_end(key)
        if len(delivered) > self._max:
            delivered.popitem(last=False)
            self.evicted += 1

    def last_delivered(self, key: Hashable) -> int | None:
        return self._delivered.get(key)

    @property
    def pending_identities(self) -> int:
        return len(self._slots)

    @property
    def remembered_identities(self) -> int:
        return len(self._delivered)
