"""One event for one target → the exact bytes sent to AEP, or why it cannot be sent.

Shared by the pipeline's hot path and the offline tools (``run --dry-run``), so what a dry
run prints is byte for byte what the worker would send: the mapped XDM entity is validated
against the target's XDM schema and size-checked; an XDM target wraps it in the pre-serialized
DCS envelope, a raw target sends the source-shaped body (``worker.mapping.raw``), inside the
Data Prep upsert header when the route asks for it.
"""

from __future__ import annotations

import orjson

from worker.dlq import DeadLetter
from worker.events import CanonicalEvent
from worker.mapping import MappingContext, MappingError, build_entity
from worker.mapping.raw import raw_body
from worker.routing import Target

__all__ = ["RenderError", "render"]


class RenderError(Exception):
    """The event cannot go to this target; ``why`` is the value-free dead-letter reason."""

    def __init__(self, why: DeadLetter) -> None:
        super().__init__(why.reason)
        self.why = why


def render(event: CanonicalEvent, target: Target, ctx: MappingContext) -> bytes:
    """The message bytes for ``target`` (a DCS message, or a raw body)."""
    try:
        entity = build_entity(event, target.family, target.name, ctx)
    except MappingError as exc:
        raise RenderError(
            DeadLetter(
                "transform", "MappingError", exc.kind, str(exc), path=exc.path,
                target=target.name, event_name=event.name,
            )
        ) from None
    violation = target.validator.first_violation(entity)
    if violation is not None:
        raise RenderError(
            DeadLetter(
                "validate", "XdmViolation", violation.keyword, str(violation),
                path=violation.path, target=target.name, event_name=event.name,
            )
        )
    entity_json = orjson.dumps(raw_body(entity) if target.raw else entity)
    if len(entity_json) > target.size_limit:
        raise RenderError(
            DeadLetter(
                "transform", "ProfileSizeLimit", "profile-size-limit",
                f"xdmEntity is {len(entity_json)} bytes; the Profile store drops "
                f"{target.family} over {target.size_limit}",
                target=target.name, event_name=event.name,
            )
        )
    return target.message(entity_json)
