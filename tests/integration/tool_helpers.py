"""Helpers for the operator-tool tests: the CLI in-process or as a child, records with set times."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.worker_harness import ROOT, env_for
from worker.cli import main


def tool_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """Only the CAPILLARY_AEP_* variables of these settings (for CliRunner's env)."""
    return {k: v for k, v in env_for(settings).items() if k.startswith("CAPILLARY_AEP_")}


def cli(settings: Mapping[str, Any], *args: str) -> Result:
    """``capillary-aep ARGS`` in this process (stdout and stderr kept apart)."""
    return CliRunner().invoke(main, list(args), env=tool_env(settings), catch_exceptions=False)


def cli_json(settings: Mapping[str, Any], *args: str) -> Any:
    result = cli(settings, *args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def cli_process(
    settings: Mapping[str, Any], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m worker ARGS`` as a child (for commands that run a worker or get killed)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], env=env_for(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def cli_popen(settings: Mapping[str, Any], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args], env=env_for(settings), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def produce_at(
    bootstrap: str, topic: str, records: Iterable[tuple[int, int, bytes | None, bytes | None]]
) -> None:
    """(partition, timestamp ms, key, value) each, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, ts, key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition, timestamp=ts)
    assert producer.flush(30) == 0


def commit_group(bootstrap: str, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(
        offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
    )
    consumer.close()


def group_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, *, stable: bool = True
) -> dict[int, tuple[int, str]]:
    """Committed offsets. ``stable=False`` does not wait for an open transaction that commits
    offsets of this group (a running or killed redrive job) to end: it reads the last
    committed ones."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False,
                         "isolation.level": "read_committed" if stable else "read_uncommitted"})
    got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return {tp.partition: (tp.offset, tp.metadata or "") for tp in got}


def now_ms() -> int:
    return int(time.time() * 1000)
