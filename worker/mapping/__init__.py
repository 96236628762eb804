"""Capillary events -> XDM entities: pure, deterministic mappers, one module per event family.

``build_entity(event, family, target, ctx)`` is the one entry point the pipeline uses: it picks
the mapper for ``(event.name, family)``, adds the deterministic ``_id`` (SPEC 2.5) and prunes
``null`` and empty values (AEP rejects them, SPEC 2.4). Mappers read only the event and the
static :class:`MappingContext`: no clock, no cache, no state learned from earlier events, so the
same event gives the same bytes on any replica, after any restart, in any replay.

Families (one XDM target shape each):

* ``experience_event``: an ExperienceEvent (``_id``, ``timestamp``, ``eventType``, ...);
* ``profile_customer``, ``profile_points``, ``profile_tier``: profile record fragments, one
  dataset per attribute family, each write carrying its whole family (SPEC 4).

Adding an event: write its mapper in the family module (``customer``, ``commerce``, ``points``,
``tier``, ``promotion``, ``reward``), register it in that module's ``MAPPERS`` and
``DEFAULT_FAMILIES`` (the targets it feeds when a route does not list its events).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from worker.events import CanonicalEvent
from worker.mapping import commerce, customer, points, promotion, reward, tier
from worker.mapping.context import (
    MAPPING_ERROR_KINDS,
    Clean,
    Mapper,
    MappingContext,
    MappingError,
)

__all__ = [
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "MAPPERS",
    "MAPPING_ERROR_KINDS",
    "Mapper",
    "MappingContext",
    "MappingError",
    "build_entity",
    "prune",
    "xdm_id",
]

FAMILIES: Final[tuple[str, ...]] = (
    "experience_event",
    "profile_customer",
    "profile_points",
    "profile_tier",
)

_MODULES = (customer, commerce, points, tier, promotion, reward)

MAPPERS: dict[tuple[str, str], Mapper] = {}
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {}
for _module in _MODULES:
    MAPPERS.update(_module.MAPPERS)
    DEFAULT_FAMILIES.update(_module.DEFAULT_FAMILIES)
del _module


_ID_PREFIXES: dict[tuple[int, str], Any] = {}  # (orgId, eventName) -> sha256 of "org|name|"
_ID_PREFIXES_MAX: Final = 4096


def xdm_id(event: CanonicalEvent, target: str) -> str:
    """``sha256("{orgId}|{eventName}|{eventId}|{target}")`` hex (SPEC 2.5).

    Every redelivery or replay of an event to a target gives the same ``_id``; an event fanned
    out to two targets gets two different ones. The hash of the ``"{orgId}|{eventName}|"``
    prefix is kept per organisation and event name and copied (a pure cache).
    """
    return xdm_id_of(event.org_id, event.name, event.event_id, target)


def xdm_id_of(org_id: int, name: str, event_id: str, target: str) -> str:
    """:func:`xdm_id` from its parts (delivery receipts have no event object)."""
    key = (org_id, name)
    prefix = _ID_PREFIXES.get(key)
    if prefix is None:
        if len(_ID_PREFIXES) >= _ID_PREFIXES_MAX:
            _ID_PREFIXES.clear()
        prefix = _ID_PREFIXES[key] = hashlib.sha256(f"{org_id}|{name}|".encode())
    digest = prefix.copy()
    digest.update(f"{event_id}|{target}".encode())
    return str(digest.hexdigest())


def prune(obj: Any) -> Any:
    """A copy without ``None``, ``""``, ``{}`` and ``[]``, recursively (containers emptied by
    pruning go too). ``0``, ``False`` and non-empty strings stay."""
    kind = type(obj)
    if kind is dict:
        return _prune_dict(obj)
    if kind is list:
        return _prune_list(obj)
    return obj


def _prune_dict(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            if value:
                out[key] = value
        elif kind is dict:
            if value:
                value = _prune_dict(value)
                if value:
                    out[key] = value
        elif kind is list:
            if value:
                value = _prune_list(value)
                if value:
                    out[key] = value
        else:
            out[key] = value
    return out


def _prune_list(obj: list[Any]) -> list[Any]:
    kept: list[Any] = []
    for value in obj:
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            if value:
                kept.append(value)
        elif kind is dict:
            if value:
                value = _prune_dict(value)
                if value:
                    kept.append(value)
        elif kind is list:
            if value:
                value = _prune_list(value)
                if value:
                    kept.append(value)
        else:
            kept.append(value)
    return kept


def _safe_name(name: str) -> str:
    return name if len(name) <= 64 and name.isidentifier() else "(unnamed)"


def build_entity(
    event: CanonicalEvent, family: str, target: str, ctx: MappingContext
) -> dict[str, Any]:
    """The xdmEntity for ``target`` (a delivery target name): mapper output, ``_id``, pruned.

    Raises :class:`MappingError` (value-free) when the event cannot be mapped.
    """
    mapper = MAPPERS.get((event.name, family))
    if mapper is None:
        raise MappingError(
            "no-mapper", "", f"no {family} mapping for event {_safe_name(event.name)}"
        )
    try:
        entity = mapper(event, ctx)
    except MappingError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        # A mapper bug must not take the stream down: report it (without values) per record.
        raise MappingError(
            "mapper-bug",
            "",
            f"{type(exc).__name__} in the {family} mapper of {_safe_name(event.name)}",
        ) from None
    out: dict[str, Any] = {"_id": xdm_id(event, target)}
    if type(entity) is Clean:
        out.update(entity)  # built without empty values: nothing to prune
        if len(out) == 1:
            raise MappingError("empty-entity", "", "the mapper produced an empty entity")
        return out
    for key, value in entity.items():
        if value is None:
            continue
        kind = type(value)
        if kind is dict:
            if value and key != "identityMap":
                # identityMap is built clean by identity.identity_map (no empty values):
                # pruning it again is a third of the prune cost for nothing.
                value = _prune_dict(value)
            if not value:
                continue
        elif kind is list:
            value = _prune_list(value)
            if not value:
                continue
        elif kind is str and not value:
            continue
        out[key] = value
    if len(out) == 1:
        raise MappingError("empty-entity", "", "nothing left to send after removing empty values")
    return out
