"""The mapping's configuration, its error type and the mapper signature (no event logic here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.events import CanonicalEvent

if TYPE_CHECKING:
    from worker.config import MappingSettings

__all__ = [
    "AUTHENTICATED_STATES",
    "IDENTITY_KINDS",
    "MAPPING_ERROR_KINDS",
    "ClampCounter",
    "Clean",
    "IdentitySlot",
    "Mapper",
    "MappingContext",
    "MappingError",
]

# Where each identity comes from: customer_id is customerIdentifiers.customerId, the others
# customerIdentifiers.instore.{email, mobile, externalId, card_number}.
IDENTITY_KINDS: Final = ("customer_id", "email", "phone", "external_id", "card_number")
AUTHENTICATED_STATES: Final = ("authenticated", "ambiguous", "loggedOut")


@dataclass(frozen=True, slots=True)
class IdentitySlot:
    """One configured identity: its kind, identityMap namespace, and whether it is hashed."""

    kind: str
    namespace: str
    hashed: bool


class Timestamped(Protocol):
    def timestamp(self) -> tuple[int, int]: ...  # a Kafka Message: (type, epoch ms)


class ClampCounter:
    """How many ExperienceEvent timestamps were clamped because they lay in the future, and
    the Kafka record being mapped (whose timestamp is the clamp's last resort).

    Mutable on purpose (the context is otherwise frozen): the pipeline sets ``record`` before
    mapping each record and ``take()``s the count after each consumed batch for a metric. The
    record's timestamp is read only when a clamp needs it. Not thread-safe; one pipeline, one
    loop.
    """

    __slots__ = ("count", "record")

    def __init__(self) -> None:
        self.count = 0
        self.record: Timestamped | None = None

    def take(self) -> int:
        taken, self.count = self.count, 0
        return taken


@dataclass(frozen=True)
class MappingContext:
    """Static configuration of the mapping: the same for every event, on every replica.

    ``tier_names`` is static configuration only (tier number -> name); the mapping never learns
    names from earlier events, so the same event always gives the same output. The clock is
    read only to clamp ExperienceEvent timestamps that lie in the future (see ``convert``).
    """

    tenant: str = "_capillary"  # the tenant object custom fields live under
    customer_namespace: str = "CapillaryCustomerId"
    email_namespace: str | None = "Email"  # None: not sent as an identity
    phone_namespace: str | None = "Phone"
    external_id_namespace: str | None = None
    card_number_namespace: str | None = None
    primary_identity: str = "customer_id"  # one of IDENTITY_KINDS; customerId when absent
    authenticated_state: str = "authenticated"
    hashed_identities: frozenset[str] = frozenset()  # kinds sent as sha256(trim+lower) hex
    source_timezone: str = "UTC"  # IANA name, applied to local date-times without an offset
    tier_names: Mapping[int, str] | None = None
    max_future_skew_ms: int = 300_000  # beyond now + this, an event timestamp is clamped
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    clamps: ClampCounter = field(default_factory=ClampCounter, repr=False, compare=False)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)  # source_timezone, resolved
    identities: tuple[IdentitySlot, ...] = field(init=False, repr=False, compare=False)
    distinct_namespaces: bool = field(init=False, repr=False, compare=False)  # none coincide

    def __post_init__(self) -> None:
        if not (self.tenant.startswith("_") and len(self.tenant) > 1):
            raise ValueError("MappingContext.tenant must be the tenant object, e.g. _capillary")
        if not self.customer_namespace.strip():
            raise ValueError("MappingContext.customer_namespace must not be empty")
        namespaces = {
            "customer_id": self.customer_namespace,
            "email": self.email_namespace,
            "phone": self.phone_namespace,
            "external_id": self.external_id_namespace,
            "card_number": self.card_number_namespace,
        }
        for kind, namespace in namespaces.items():
            if namespace is not None and not namespace.strip():
                raise ValueError(f"MappingContext: the {kind} namespace must not be empty")
        if self.primary_identity not in IDENTITY_KINDS:
            raise ValueError(f"MappingContext.primary_identity must be one of {IDENTITY_KINDS}")
        if namespaces[self.primary_identity] is None:
            raise ValueError("MappingContext.primary_identity names an identity that is not sent")
        if self.authenticated_state not in AUTHENTICATED_STATES:
            raise ValueError(
                f"MappingContext.authenticated_state must be one of {AUTHENTICATED_STATES}"
            )
        hashed = frozenset(self.hashed_identities)
        unknown = sorted(hashed - set(IDENTITY_KINDS))
        if unknown:
            raise ValueError(f"MappingContext.hashed_identities: unknown kinds {unknown}")
        if self.max_future_skew_ms < 0:
            raise ValueError("MappingContext.max_future_skew_ms must not be negative")
        try:
            zone = ZoneInfo(self.source_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("MappingContext.source_timezone is not an IANA time zone") from None
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "hashed_identities", hashed)
        object.__setattr__(
            self,
            "identities",
            tuple(
                IdentitySlot(kind, namespace, kind in hashed)
                for kind, namespace in namespaces.items()
                if namespace is not None
            ),
        )
        object.__setattr__(
            self,
            "distinct_namespaces",
            len({slot.namespace for slot in self.identities}) == len(self.identities),
        )
        if self.tier_names is not None:
            frozen = MappingProxyType({int(k): str(v) for k, v in self.tier_names.items()})
            object.__setattr__(self, "tier_names", frozen)

    @classmethod
    def from_settings(cls, settings: MappingSettings, **overrides: Any) -> MappingContext:
        """The context for ``[mapping]`` settings (``overrides`` for tests: clock, ...)."""
        values: dict[str, Any] = {
            "tenant": settings.tenant,
            "customer_namespace": settings.customer_namespace,
            "email_namespace": settings.email_namespace,
            "phone_namespace": settings.phone_namespace,
            "external_id_namespace": settings.external_id_namespace,
            "card_number_namespace": settings.card_number_namespace,
            "primary_identity": settings.primary_identity,
            "authenticated_state": settings.authenticated_state,
            "hashed_identities": frozenset(settings.hashed_identities),
            "source_timezone": settings.source_timezone,
            "tier_names": dict(settings.tier_names) or None,
            "max_future_skew_ms": int(settings.max_future_skew_s * 1000),
        }
        values.update(overrides)
        return cls(**values)


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


class Clean(dict[str, Any]):
    """An entity a mapper built without ``None``, ``""``, ``{}`` or ``[]`` anywhere (and with a
    non-empty identityMap): ``build_entity`` adds the ``_id`` and skips the pruning pass."""

    __slots__ = ()


# A mapper returns the xdmEntity WITHOUT ``_id``; build_entity adds it and prunes empty values
# (unless the mapper returns a :class:`Clean` entity).
Mapper = Callable[[CanonicalEvent, MappingContext], dict[str, Any]]
