"""The mapping's configuration, its error type and the mapper signature (no event logic here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.events import CanonicalEvent

__all__ = ["MAPPING_ERROR_KINDS", "Mapper", "MappingContext", "MappingError"]


@dataclass(frozen=True)
class MappingContext:
    """Static configuration of the mapping: the same for every event, on every replica.

    ``tier_names`` is static configuration only (tier number -> name); the mapping never learns
    names from earlier events, so the same event always gives the same output.
    """

    tenant: str = "_capillary"  # the tenant object custom fields live under
    customer_namespace: str = "CapillaryCustomerId"
    email_namespace: str = "Email"
    phone_namespace: str = "Phone"
    source_timezone: str = "UTC"  # IANA name, applied to local date-times without an offset
    tier_names: Mapping[int, str] | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)  # source_timezone, resolved

    def __post_init__(self) -> None:
        if not (self.tenant.startswith("_") and len(self.tenant) > 1):
            raise ValueError("MappingContext.tenant must be the tenant object, e.g. _capillary")
        for name in ("customer_namespace", "email_namespace", "phone_namespace"):
            if not getattr(self, name).strip():
                raise ValueError(f"MappingContext.{name} must not be empty")
        try:
            zone = ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("MappingContext.source_timezone is not an IANA time zone") from None
        object.__setattr__(self, "zone", zone)
        if self.tier_names is not None:
            frozen = MappingProxyType({int(k): str(v) for k, v in self.tier_names.items()})
            object.__setattr__(self, "tier_names", frozen)


# Stable, short, value-free codes: add, never rename.
MAPPING_ERROR_KINDS = (
    "no-mapper",  # no mapper for (event name, family)
    "missing-field",  # a field the mapping needs is absent, null or empty
    "bad-value",  # a field the mapping needs has an unusable value (e.g. an unparsable date)
    "empty-entity",  # nothing left to send after pruning (should not happen with a schema)
    "mapper-bug",  # the mapper raised unexpectedly (a bug, reported per record, value-free)
)


class MappingError(Exception):
    """The event cannot be turned into XDM. ``path`` points into the event's ``data``.

    The message never quotes a payload value.
    """

    def __init__(self, kind: str, path: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.kind}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"MappingError(kind={self.kind!r}, path={self.path!r}, message={self.message!r})"


# A mapper returns the xdmEntity WITHOUT ``_id``; build_entity adds it and prunes empty values.
Mapper = Callable[[CanonicalEvent, MappingContext], dict[str, Any]]
