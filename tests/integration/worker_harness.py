"""Helpers for running the real worker against the real broker and the sandbox.

A worker runs either in-process (``run_inline``: same event loop as the test) or as a child
process (``WorkerProcess``: for SIGKILL, SIGTERM and rebalance tests). Both read the same
settings; the child gets them as ``CAPILLARY_AEP_*`` environment variables (JSON per section).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from worker.config import Settings
from worker.runner import RunResult, run_worker

ROOT = Path(__file__).resolve().parents[2]
EE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE_SCHEMA = "https://ns.adobe.com/capillary/schemas/loyalty-profile"


def routes_for(sandbox: Any, inlet: str = "capillary-inlet") -> list[dict[str, Any]]:
    url = sandbox.inlet_url(inlet)
    auth = inlet == "capillary-inlet"
    return [
        {"name": "loyalty-events", "family": "experience_event", "inlet_url": url,
         "dataset_id": "ds-loyalty-events", "schema_id": EE_SCHEMA, "flow_id": "flow-events",
         "authenticated": auth},
        {"name": "profile-customer", "family": "profile_customer", "inlet_url": url,
         "dataset_id": "ds-profile-customer", "schema_id": PROFILE_SCHEMA,
         "flow_id": "flow-customer", "authenticated": auth},
        {"name": "profile-tier", "family": "profile_tier", "inlet_url": url,
         "dataset_id": "ds-profile-tier", "schema_id": PROFILE_SCHEMA, "flow_id": "flow-tier",
         "authenticated": auth},
    ]


def settings_dict(
    bootstrap: str,
    sandbox: Any,
    *,
    topics: list[str],
    group: str,
    dlq_topic: str,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """Fast test settings; any section may be overridden key by key."""
    base: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap, "group_id": group, "topics": topics,
            "dlq_topic": dlq_topic, "commit_interval_s": 0.5, "consume_timeout_s": 0.05,
            "session_timeout_ms": 6000, "max_poll_interval_ms": 30000,
            "dlq_message_timeout_ms": 3000,
        },
        "aep": {
            "ims_url": sandbox.ims_token_url, "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret, "org_id": sandbox.org_id,
        },
        "routes": routes_for(sandbox),
        "batching": {"max_messages": 200, "linger_s": 0.05},
        "delivery": {"base_delay_s": 0.05, "max_delay_s": 0.5, "blocked_probe_interval_s": 0.5,
                     "request_timeout_s": 5},
        "shutdown": {"drain_timeout_s": 10, "revoke_drain_timeout_s": 5},
        "health": {"host": "127.0.0.1", "port": 0},
    }
    for name, values in sections.items():
        if name == "routes":
            base["routes"] = values
        else:
            base.setdefault(name, {}).update(values)
    return base


def make_settings(*args: Any, **kwargs: Any) -> Settings:
    return Settings(**settings_dict(*args, **kwargs))


async def run_inline(settings: Settings, *, timeout: float = 60, **kwargs: Any) -> RunResult:
    """Run until drained (or timeout → stop), in this event loop."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(settings, exit_when_drained=True, stop=stop, install_signals=False, **kwargs)
    )
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        stop.set()
        return await asyncio.wait_for(task, 30)
    return task.result()


def env_for(settings: Mapping[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_AEP_")}
    for section, values in settings.items():
        env[f"CAPILLARY_AEP_{section.upper()}"] = (
            values if isinstance(values, str) else orjson.dumps(values).decode()
        )
    return env


class WorkerProcess:
    """``python -m worker run`` as a child process, logs to a file."""

    def __init__(self, settings: Mapping[str, Any], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", *args],
            env=env_for(settings), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "message.max.bytes": 10_000_000})
    n = 0
    for key, value in records:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    assert producer.flush(30) == 0
    return n


def read_all(bootstrap: str, topic: str, *, idle_s: float = 2.0, timeout_s: float = 60) -> list[Any]:
    """Every record of a topic (all partitions), from the beginning, no group commit."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "fetch.message.max.bytes": 10_000_000,
    })
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Any] = []
    last = time.monotonic()
    end = last + timeout_s
    while time.monotonic() < end and time.monotonic() - last < idle_s:
        for msg in consumer.consume(500, 0.2):
            if msg.error() is None:
                out.append(msg)
                last = time.monotonic()
    consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def committed_metadata(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return {tp.partition: tp.metadata or "" for tp in tps}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    out = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    }
    consumer.close()
    return out


def delivered_event_ids(sandbox: Any, datasets: Iterable[str], tenant: str = "_capillary") -> list[str]:
    """eventIds of the records the sandbox accepted (duplicates kept)."""
    ids: list[str] = []
    for ds in datasets:
        for rec in sandbox.records(ds, limit=1_000_000):
            entity = rec["xdmEntity"]
            details = entity.get(tenant, {})
            ids.append(details.get("eventId") or details.get("lastEventId") or entity["_id"])
    return ids


def wait_until(predicate: Any, timeout: float, interval: float = 0.2, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
