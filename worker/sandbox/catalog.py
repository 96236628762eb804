"""What the sandbox's Platform APIs know: Catalog batches, failed rows, the Schema Registry's view.

AEP validates streamed records asynchronously: DCS answers 207 with an ``xactionId``, and a
record can still fail later and land in a *failed* Catalog batch, its rows downloadable through
the Data Access API. The sandbox forms one Catalog batch per DCS request and dataset: a
``success`` batch of the records accepted normally, and a ``failed`` batch of the records the
``async_fail_substring`` / ``async_fail_share`` faults picked (accepted at DCS, never stored in
the dataset).

The Schema Registry serves the sandbox's XDM schemas (``schemas/xdm/``) resolved
(``worker.xdm_view.resolve``); ``registry_overrides`` (config or admin API) replace a schema
with another document, ``registry_removed`` hide one (404), so tests can create drift.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import FaultState
from worker.schemas import SchemaLoadError, SchemaStore
from worker.xdm_view import ResolveError, resolve

MAX_BATCHES = 10_000
ASYNC_ERROR_CODE = "XDM-1001-400"  # the sandbox's code for an asynchronous validation failure
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_batch_id(now_ms: int) -> str:
    """A ULID (26 Crockford base-32 characters, time first), the form of AEP batch ids."""
    value = (now_ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def alt_id(schema_id: str) -> str:
    """``https://ns.adobe.com/capillary/schemas/x`` -> ``_capillary.schemas.x`` (meta:altId)."""
    path = schema_id.split("://", 1)[-1].split("/", 1)[-1]
    return "_" + path.replace("/", ".")


@dataclass(slots=True)
class CatalogBatch:
    id: str
    dataset_id: str
    inlet_id: str
    status: str  # "success" | "failed"
    created_ms: int
    records: int
    failed: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)  # failed rows, one JSON object each

    def to_json(self, org_id: str) -> dict[str, Any]:
        return {
            "imsOrg": org_id,
            "status": self.status,
            "created": self.created_ms,
            "updated": self.created_ms,
            "started": self.created_ms,
            "completed": self.created_ms,
            "createdClient": "acp_streaming_ingest",
            "version": "1.0.0",
            "relatedObjects": [{"type": "dataSet", "id": self.dataset_id}],
            "errors": self.errors,
            "metrics": {
                "inputRecordCount": self.records,
                "recordsRead": self.records,
                "recordsWritten": self.records - self.failed,
                "failedRecordCount": self.failed,
            },
            "tags": {"inletId": [self.inlet_id]},
        }


@dataclass(slots=True)
class RequestTally:
    """One DCS request's accepted records per dataset, and the ones that will fail later."""

    accepted: dict[str, int] = field(default_factory=dict)
    failed: dict[str, list[tuple[dict[str, Any], str]]] = field(default_factory=dict)


class PlatformData:
    def __init__(self, config: SandboxConfig, schemas: SchemaStore, faults: FaultState) -> None:
        self.config = config
        self.schemas = schemas
        self.faults = faults
        self.batches: OrderedDict[str, CatalogBatch] = OrderedDict()
        self.overrides: dict[str, dict[str, Any]] = dict(config.registry_overrides)
        self.removed: set[str] = set(config.registry_removed)
        self._resolved: dict[str, dict[str, Any]] = {}

    # -- asynchronous failures -----------------------------------------------------------------

    @property
    def async_active(self) -> bool:
        cfg = self.faults.config
        return cfg.async_fail_substring is not None or cfg.async_fail_share > 0

    def async_failure(self, message: Any) -> str | None:
        """The later validation error for an accepted message, or None (stays accepted)."""
        cfg = self.faults.config
        hit = False
        if cfg.async_fail_substring is not None:
            hit = cfg.async_fail_substring.encode() in orjson.dumps(message)
        if not hit and cfg.async_fail_share > 0:
            hit = self.faults.rng.random() < cfg.async_fail_share
        if not hit:
            return None
        self.faults.injected["async_fail"] = self.faults.injected.get("async_fail", 0) + 1
        return cfg.async_fail_message or "Record failed XDM validation after ingestion (injected)"

    def record_request(self, now_ms: int, inlet_id: str, tally: RequestTally) -> None:
        """Form this request's Catalog batches: one per dataset and outcome."""
        for dataset_id, count in tally.accepted.items():
            self._add(CatalogBatch(
                new_batch_id(now_ms), dataset_id, inlet_id, "success", now_ms, count, 0
            ))
        for dataset_id, failures in tally.failed.items():
            rows = []
            messages: dict[str, int] = {}
            for entity, error in failures:
                row = dict(entity)
                row["_errors"] = [{"code": ASYNC_ERROR_CODE, "message": error}]
                rows.append(orjson.dumps(row))
                messages[error] = messages.get(error, 0) + 1
            errors = [
                {"code": ASYNC_ERROR_CODE, "description": text, "recordCount": n}
                for text, n in messages.items()
            ]
            self._add(CatalogBatch(
                new_batch_id(now_ms), dataset_id, inlet_id, "failed", now_ms,
                len(failures), len(failures), errors, rows,
            ))

    def _add(self, batch: CatalogBatch) -> None:
        self.batches[batch.id] = batch
        while len(self.batches) > MAX_BATCHES:
            self.batches.popitem(last=False)

    def find_batches(
        self,
        dataset_id: str | None,
        status: str | None,
        created_after: int | None,
        created_before: int | None,
    ) -> list[CatalogBatch]:
        return [
            b for b in self.batches.values()
            if (dataset_id is None or b.dataset_id == dataset_id)
            and (status is None or b.status == status)
            and (created_after is None or b.created_ms > created_after)
            and (created_before is None or b.created_ms < created_before)
        ]

    # -- schema registry -----------------------------------------------------------------------

    def schema_ids(self) -> list[str]:
        ids = set(self.schemas.xdm_schema_ids) | set(self.overrides)
        return sorted(ids - self.removed)

    def lookup_id(self, key: str) -> str | None:
        """A schema's ``$id`` from its ``$id`` or its ``meta:altId``."""
        for schema_id in self.schema_ids():
            if key in (schema_id, alt_id(schema_id)):
                return schema_id
        return None

    def raw_schema(self, schema_id: str) -> dict[str, Any]:
        """The schema as stored (``xed``): its ``$ref``s to other schemas kept."""
        if schema_id in self.overrides:
            return self.overrides[schema_id]
        return self.schemas.xdm_document(schema_id)

    def resolved_schema(self, schema_id: str) -> dict[str, Any]:
        """The schema with every reference resolved (``xed-full``)."""
        if schema_id in self.overrides:
            return self.overrides[schema_id]
        found = self._resolved.get(schema_id)
        if found is None:
            try:
                found = resolve(schema_id, self.schemas.xdm_document)
            except (SchemaLoadError, ResolveError) as exc:
                raise KeyError(str(exc)) from None
            self._resolved[schema_id] = found
        return found

    def set_override(self, schema_id: str, doc: Mapping[str, Any]) -> None:
        self.overrides[schema_id] = dict(doc)
        self.removed.discard(schema_id)

    def remove_schema(self, schema_id: str) -> None:
        self.overrides.pop(schema_id, None)
        self.removed.add(schema_id)

    def reset_registry(self) -> None:
        self.overrides = dict(self.config.registry_overrides)
        self.removed = set(self.config.registry_removed)

    def reset(self) -> None:
        """Forget batches (the registry's overrides are settings and stay)."""
        self.batches.clear()


def now_ms() -> int:
    return int(time.time() * 1000)
