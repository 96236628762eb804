"""Retest: run today's decode, validation and mapping on dead letters, as the worker would.

The steps and their order are the worker's (``Pipeline._process``, and ``worker.rendering.render``
for each target, shared with the pipeline): decode, orgId allow-list, route by orgId and event
name, validate against the Capillary schema, then per target map to XDM, validate the XDM and
check the size limits; and the batch body limit. What only AEP can decide (a 400 after
sending) cannot be retested here: such records are reported as passing the local checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from worker.batching import BODY_OVERHEAD
from worker.config import Settings
from worker.events import DecodeError, decode
from worker.mapping import DEFAULT_FAMILIES, MAPPERS, MappingContext
from worker.rendering import RenderError, render
from worker.routing import RoutingError, build_routes
from worker.schemas import SchemaLoadError, SchemaStore
from worker.tools.dlq.record import DlqRecord
from worker.tools.groups import ToolError

Outcome = Literal["pass", "filtered", "fail"]


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    stage: str = ""
    kind: str = ""
    reason: str = ""
    path: str = ""
    target: str = ""
    targets: tuple[str, ...] = ()  # where it would go now (pass)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in (
            ("outcome", self.outcome), ("stage", self.stage), ("kind", self.kind),
            ("reason", self.reason), ("path", self.path), ("target", self.target),
            ("targets", list(self.targets)), ("note", self.note),
        ) if v not in ("", [])}


class Retester:
    def __init__(self, settings: Settings) -> None:
        try:
            self.schemas = SchemaStore(user_xdm=settings.xdm.schemas_dir)
            self.targets, self.routes = build_routes(
                settings, self.schemas, MAPPERS.keys(), DEFAULT_FAMILIES
            )
        except (SchemaLoadError, RoutingError) as exc:
            raise ToolError(f"cannot build the worker's routes from the settings: {exc}") from None
        self.policy = settings.policy
        allowed = settings.policy.allowed_org_ids
        self.allowed = None if allowed is None else frozenset(allowed)
        self.max_bytes = settings.batching.max_bytes
        self.ctx = MappingContext.from_settings(settings.mapping)

    def check(self, rec: DlqRecord) -> Verdict:
        if rec.truncated:
            return Verdict(
                "fail", "dlq", "payload-truncated",
                f"the DLQ kept only part of a {rec.get('payload-length')}-byte value; the "
                "original is not here (find it by source topic/partition/offset)",
            )
        value = rec.value
        if value is None:
            return self._policy("tombstone", self.policy.tombstone, "tombstone")
        try:
            event = decode(value)
        except DecodeError as exc:
            return Verdict("fail", "decode", exc.kind, str(exc), exc.path)
        if self.allowed is not None and event.org_id not in self.allowed:
            return Verdict("filtered", "validate", "org-not-allowed",
                           "orgId not in policy.allowed_org_ids: the worker filters it")
        targets = self.routes.lookup(event.org_id, event.name)
        if not targets:
            return self._policy("unknown-event", self.policy.unknown_event,
                                f"no route for event {event.name!r}")
        validator = self.schemas.capillary(event.name)
        violation = None if validator is None else validator.first_violation(event.data)
        if violation is not None:
            return Verdict("fail", "validate", violation.keyword, str(violation),
                           "/data" + violation.path)
        for target in targets:
            try:
                message = render(event, target, self.ctx)
            except RenderError as exc:
                why = exc.why
                return Verdict("fail", why.stage, why.error_kind, why.reason, why.path,
                               target.name)
            if not target.raw and len(message) + BODY_OVERHEAD > self.max_bytes:
                return Verdict("fail", "transform", "too-large",
                               f"message of {len(message)} bytes cannot fit a "
                               f"{self.max_bytes}-byte body", target=target.name)
        note = ""
        if rec.stage == "deliver":
            note = (f"AEP rejected it before (status {rec.get('aep-status') or '?'}): the local "
                    "checks pass, only AEP can tell whether it would now")
        return Verdict("pass", targets=tuple(t.name for t in targets), note=note)

    @staticmethod
    def _policy(what: str, policy: str, reason: str) -> Verdict:
        if policy == "filter":
            return Verdict("filtered", "validate", what, f"{reason}: the worker filters it")
        return Verdict("fail", "validate", what, f"{reason} (policy {policy})")
