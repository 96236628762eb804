"""Everything a running sandbox knows: config, compiled checks, tokens, faults, records, counters.

One ``SandboxState`` outlives server restarts (``SandboxServer.stop()``/``start()``), so
tokens, records and counters survive a simulated outage the way AEP's would.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from worker.sandbox.catalog import PlatformData
from worker.sandbox.config import SandboxConfig
from worker.sandbox.dcs import MessageChecker
from worker.sandbox.faults import FaultState
from worker.sandbox.ims import TokenIssuer
from worker.sandbox.store import RecordStore
from worker.schemas import DEFAULT_ROOT, SchemaStore


@dataclass(slots=True)
class InletCounts:
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    accepted: int = 0
    rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "messages": self.messages,
            "accepted": self.accepted,
            "rejected": self.rejected,
        }


@dataclass(slots=True)
class Counters:
    requests_by_status: Counter[str] = field(default_factory=Counter)
    requests_by_endpoint: Counter[str] = field(default_factory=Counter)
    inlets: dict[str, InletCounts] = field(default_factory=dict)
    messages_received: int = 0
    messages_accepted: int = 0
    messages_rejected: int = 0
    rejected_by_status: Counter[str] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0
    sync_validation_requests: int = 0
    client_disconnects: int = 0

    def inlet(self, inlet_id: str) -> InletCounts:
        found = self.inlets.get(inlet_id)
        if found is None:
            found = self.inlets[inlet_id] = InletCounts()
        return found


class SandboxState:
    def __init__(self, config: SandboxConfig, schemas: SchemaStore | None = None) -> None:
        self.config = config
        self.schemas = schemas or SchemaStore(config.schemas_root or DEFAULT_ROOT)
        self.checker = MessageChecker(config, self.schemas)
        self.tokens = TokenIssuer(config.ims_clients, config.token_lifetime_s)
        self.faults = FaultState(config.faults)
        self.store = RecordStore(
            config.store,
            config.max_records_per_dataset,
            config.jsonl_path,
            config.track_ids,
        )
        self.platform = PlatformData(config, self.schemas, self.faults)
        self.counters = Counters()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.rejections: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.sync_validation_times: deque[float] = deque()
        self._sequence = itertools.count(1)
        self._rand = random.Random()
        self.started_at = time.time()

    # -- ids -------------------------------------------------------------------------------------

    def xaction_id(self, now_ms: int) -> str:
        """``<ms>:<sequence>:<random>``, the shape of DCS xactionIds and batchIds."""
        return f"{now_ms}:{next(self._sequence)}:{self._rand.randrange(1000)}"

    # -- failure-entry shape -------------------------------------------------------------------

    def failure_key(self, inlet_key: str) -> str:
        override = self.faults.config.failure_key
        return override or inlet_key

    # -- bookkeeping ---------------------------------------------------------------------------

    def note_request(
        self, endpoint: str, inlet_id: str | None, status: str, info: dict[str, Any]
    ) -> None:
        c = self.counters
        c.requests_by_status[status] += 1
        c.requests_by_endpoint[endpoint] += 1
        if inlet_id is not None and self.config.inlet(inlet_id) is not None:
            ic = c.inlet(inlet_id)
            ic.requests += 1
            ic.by_status[status] += 1
        info["endpoint"] = endpoint
        info["inlet"] = inlet_id
        info["status"] = status
        self.request_log.append(info)

    def note_rejection(
        self,
        inlet_id: str,
        dataset_id: str | None,
        index: int,
        status: int,
        reason: str,
        message: str,
    ) -> None:
        c = self.counters
        c.messages_rejected += 1
        c.rejected_by_status[str(status)] += 1
        c.rejected_by_reason[reason] += 1
        c.inlet(inlet_id).rejected += 1
        if dataset_id is not None and self.config.dataset(dataset_id) is not None:
            self.store.reject(dataset_id)
        self.rejections.append(
            {
                "timeMs": int(time.time() * 1000),
                "inlet": inlet_id,
                "datasetId": dataset_id,
                "index": index,
                "status": status,
                "reason": reason,
                "message": message,
            }
        )

    def stats(self) -> dict[str, Any]:
        c = self.counters
        store = self.store.stats()
        datasets = {ds.id: store["datasets"].get(ds.id, _EMPTY_DS) for ds in self.config.datasets}
        return {
            "requests": {
                "total": sum(c.requests_by_status.values()),
                "by_status": dict(c.requests_by_status),
                "by_endpoint": dict(c.requests_by_endpoint),
            },
            "messages": {
                "received": c.messages_received,
                "accepted": c.messages_accepted,
                "rejected": c.messages_rejected,
                "rejected_by_status": dict(c.rejected_by_status),
                "rejected_by_reason": dict(c.rejected_by_reason),
            },
            "inlets": {
                inlet.id: c.inlets[inlet.id].to_json()
                if inlet.id in c.inlets
                else InletCounts().to_json()
                for inlet in self.config.inlets
            },
            "datasets": datasets,
            "all_datasets": store["all_datasets"],
            "ims": {"tokens_issued": self.tokens.issued, "failures": self.tokens.failures},
            "bytes_received": c.bytes_received,
            "sync_validation_requests": c.sync_validation_requests,
            "faults_injected": dict(self.faults.injected),
            "store": self.store.mode,
        }

    def reset(self) -> None:
        """Forget records, counters, logs and faults (tokens and configuration stay)."""
        self.store.reset()
        self.counters = Counters()
        self.request_log.clear()
        self.rejections.clear()
        self.sync_validation_times.clear()
        self.faults.clear()
        self.platform.reset()

    def close(self) -> None:
        self.store.close()


_EMPTY_DS = {
    "accepted": 0,
    "rejected": 0,
    "stored": 0,
    "dropped": 0,
    "distinct_ids": 0,
    "duplicate_ids": 0,
}
