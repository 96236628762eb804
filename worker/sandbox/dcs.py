"""DCS message validation: the per-message checks behind the 207 entries (SPEC 2.2-2.4).

One call per message, in this order (the first failure is the answer):
envelope (header/body objects, required header fields) -> IMS org -> dataset (known, on the
inlet) -> schemaRef ids -> ``null``/empty values in xdmEntity -> XDM schema -> Profile size.

Messages name the violation (a JSON pointer and a keyword), never the offending value.
Hot path: ``orjson.dumps`` once per entity (its length is the Profile size, and a byte scan
rules out null/empty values before any tree walk) and jsonschema-rs ``is_valid``; explanations
are computed only for rejected messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from worker.sandbox.config import (
    EXPERIENCE_EVENT_CLASS,
    DatasetConfig,
    InletConfig,
    RawFlowConfig,
    SandboxConfig,
)
from worker.sandbox.dataprep import map_source, parse_raw
from worker.schemas import SchemaLoadError, SchemaStore, Validator


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # a short machine-friendly kind, for stats
    message: str
    dataset_id: str | None = None
    status: int = 400


class Acceptance(NamedTuple):  # a tuple: the hot path creates one per accepted message
    dataset_id: str
    entity: dict[str, Any]
    header: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Target:
    config: DatasetConfig
    validator: Validator
    max_bytes: int | None  # Profile guardrail; None when the dataset is not Profile-enabled
    behavior: str  # "event" or "record"
    top_level: frozenset[str] | None  # the schema's closed top-level names, when it has them


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def find_empty(value: Any) -> tuple[str, str] | None:
    """The first ``null`` or empty value ("", {}, []) in a JSON tree: (pointer, kind)."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if node is None:
            return _pointer(path), "null"
        if isinstance(node, dict):
            if not node:
                return _pointer(path), "empty object"
            for key, child in reversed(node.items()):
                stack.append((child, [*path, key]))
        elif isinstance(node, list):
            if not node:
                return _pointer(path), "empty array"
            for index in range(len(node) - 1, -1, -1):
                stack.append((node[index], [*path, index]))
        elif isinstance(node, str) and not node:
            return _pointer(path), "empty string"
    return None


class MessageChecker:
    """Validates DCS messages for one sandbox configuration (schemas compiled once)."""

    def __init__(self, config: SandboxConfig, schemas: SchemaStore) -> None:
        self.config = config
        self._org_id = config.org_id
        self._require_flow_id = config.require_flow_id
        self._reject_empty = config.reject_empty_values
        self._targets: dict[str, _Target] = {}
        for ds in config.datasets:
            try:
                validator = schemas.xdm(ds.schema_id)
                doc = schemas.xdm_document(ds.schema_id)
            except SchemaLoadError as exc:
                raise ValueError(f"dataset {ds.id}: {exc}") from exc
            behavior = ds.behavior or (
                "event" if doc.get("meta:class") == EXPERIENCE_EVENT_CLASS else "record"
            )
            max_bytes: int | None = None
            if ds.profile_enabled:
                max_bytes = (
                    config.event_profile_max_bytes
                    if behavior == "event"
                    else config.record_profile_max_bytes
                )
            names = doc.get("propertyNames", {})
            enum = names.get("enum") if isinstance(names, dict) else None
            top = frozenset(enum) if isinstance(enum, list) else None
            self._targets[ds.id] = _Target(ds, validator, max_bytes, behavior, top)

    def check(self, message: Any, inlet: InletConfig) -> Acceptance | Rejection:
        if not isinstance(message, dict):
            return Rejection("envelope", "Message is not a JSON object")
        header = message.get("header")
        if not isinstance(header, dict):
            return Rejection("envelope", "Message has unknown xdm format: missing header")
        body = message.get("body")
        if not isinstance(body, dict):
            return Rejection("envelope", "Message has unknown xdm format: missing body")
        schema_ref = header.get("schemaRef")
        if not isinstance(schema_ref, dict) or not isinstance(schema_ref.get("id"), str):
            return Rejection("envelope", "Missing required field: header.schemaRef.id")
        org = header.get("imsOrgId")
        if not isinstance(org, str) or not org:
            return Rejection("envelope", "Missing required field: header.imsOrgId")
        dataset_id = header.get("datasetId")
        if not isinstance(dataset_id, str) or not dataset_id:
            return Rejection("envelope", "Missing required field: header.datasetId")
        if self._require_flow_id:
            flow = header.get("flowId")
            if not isinstance(flow, str) or not flow:
                return Rejection("envelope", "Missing required field: header.flowId", dataset_id)
        meta = body.get("xdmMeta")
        meta_ref = meta.get("schemaRef") if isinstance(meta, dict) else None
        if not isinstance(meta_ref, dict) or not isinstance(meta_ref.get("id"), str):
            return Rejection(
                "envelope", "Missing required field: body.xdmMeta.schemaRef.id", dataset_id
            )
        entity = body.get("xdmEntity")
        if not isinstance(entity, dict):
            return Rejection(
                "envelope", "Missing required field: body.xdmEntity (an object)", dataset_id
            )
        if org != self._org_id:
            return Rejection(
                "org", "header.imsOrgId does not match the inlet's IMS org", dataset_id
            )
        target = self._targets.get(dataset_id)
        if target is None:
            return Rejection("dataset", "header.datasetId: unknown dataset", dataset_id)
        if not inlet.allows(dataset_id):
            return Rejection(
                "dataset", "header.datasetId: dataset is not connected to this inlet", dataset_id
            )
        schema_id = target.config.schema_id
        if schema_ref["id"] != schema_id:
            return Rejection(
                "schema_ref",
                f"header.schemaRef.id does not match the dataset's schema ({schema_id})",
                dataset_id,
            )
        if meta_ref["id"] != schema_id:
            return Rejection(
                "schema_ref",
                f"body.xdmMeta.schemaRef.id does not match the dataset's schema ({schema_id})",
                dataset_id,
            )
        return self._check_entity(target, dataset_id, entity, header)

    def check_raw(
        self, doc: Any, flow: RawFlowConfig, inlet: InletConfig
    ) -> tuple[Acceptance | Rejection, str]:
        """A raw message of a raw dataflow: (result, Data Prep operation)."""
        dataset_id = flow.dataset
        raw = parse_raw(doc)
        if isinstance(raw, str):
            return Rejection("envelope", raw, dataset_id), "create"
        if raw.header is not None:
            if raw.header.get("flowId") != flow.id:
                return Rejection(
                    "envelope", "header.flowId does not match x-adobe-flow-id", dataset_id
                ), raw.operation
            if raw.header.get("datasetId") != dataset_id:
                return Rejection(
                    "dataset", "header.datasetId is not the dataflow's dataset", dataset_id
                ), raw.operation
            if raw.header.get("imsOrgId") != self._org_id:
                return Rejection(
                    "org", "header.imsOrgId does not match the inlet's IMS org", dataset_id
                ), raw.operation
        if not inlet.allows(dataset_id):
            return Rejection(
                "dataset", "the dataflow's dataset is not connected to this inlet", dataset_id
            ), raw.operation
        target = self._targets[dataset_id]
        header = {
            "flowId": flow.id,
            "datasetId": dataset_id,
            "operations": {"data": raw.operation},
        }
        return self._check_entity(target, dataset_id, map_source(raw.body), header), raw.operation

    def _check_entity(
        self, target: _Target, dataset_id: str, entity: dict[str, Any], header: dict[str, Any]
    ) -> Acceptance | Rejection:
        schema_id = target.config.schema_id
        serialized = orjson.dumps(entity)
        # A null or empty value always serializes to one of these; strings containing them
        # (escaped quotes, literal braces) only cost a tree walk that finds nothing.
        if self._reject_empty and (
            b"null" in serialized
            or b'""' in serialized
            or b"{}" in serialized
            or b"[]" in serialized
        ):
            found = find_empty(entity)
            if found is not None:
                where, kind = found
                return Rejection(
                    "null_or_empty",
                    f"{where}: {kind} value in xdmEntity (AEP rejects null and empty values: "
                    "omit the field)",
                    dataset_id,
                )
        validator = target.validator
        if not validator.is_valid(entity):
            return Rejection(
                "xdm",
                f"XDM validation failed ({schema_id}): {self._explain(target, entity)}",
                dataset_id,
            )
        if target.max_bytes is not None and len(serialized) > target.max_bytes:
            kind = "ExperienceEvent" if target.behavior == "event" else "record"
            return Rejection(
                "profile_size",
                f"xdmEntity is {len(serialized)} bytes: Profile drops {kind}s over "
                f"{target.max_bytes} bytes",
                dataset_id,
            )
        return Acceptance(dataset_id, entity, header)

    @staticmethod
    def _explain(target: _Target, entity: Mapping[str, Any]) -> str:
        violation = target.validator.first_violation(entity)
        if violation is None:  # pragma: no cover - is_valid said otherwise
            return "invalid"
        text = str(violation)
        if violation.keyword == "propertyNames" and violation.path == "" and target.top_level:
            unknown = sorted(k for k in entity if k not in target.top_level)
            if unknown:
                text += f" (fields not in the schema: {', '.join(unknown)})"
        return text
