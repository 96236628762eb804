"""One chaos scenario's plumbing: its own topics and group, its ledger, its child workers.

A scenario produces through :meth:`Scenario.produce` (or :meth:`produce_samples`), which books
every record with its expected outcome; runs workers as child processes
(``python -m worker run``, the production entry point); and ends with :meth:`finish`, which
reads back the sandbox, the DLQ and the committed offsets, records the report line and fails
the test on any loss.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.chaos import report
from tests.chaos.ledger import DELIVER, Expect, Ledger, Observed, Outcome, observe
from tests.fixtures.kafka import KafkaNames, create_topic
from tests.integration.process_helpers import Produced, problems, tail
from tests.integration.worker_harness import (
    WorkerProcess,
    committed,
    end_offsets,
    routes_for,
    settings_dict,
)
from worker.events import customer_id, decode
from worker.mapping import DEFAULT_FAMILIES
from worker.tools.samples import BASE_TIME_MS, Sample, generate_samples

# What the worker must say about the invalid kinds of worker.tools.samples.
SAMPLE_EXPECT: dict[str, Expect] = {
    "invalid-json": Expect("dlq", stage="decode"),
    "schema-violation": Expect("dlq", stage="validate"),
    "unknown-event": Expect("dlq", "unknown-event"),
    "schema-registry-framed": Expect("dlq", "schema-registry-framed"),
    "missing-event-id": Expect("dlq", "missing-field"),
}
# Log lines that are the worker reporting the fault a scenario injects, not a worker failure.
FAULT_REPORTS = ("delivery_blocked", "dcs.blocked", "dlq_unavailable", "dlq_guard_tripped")
# Where each mapping family lands with the routes of worker_harness.routes_for.
DATASETS = {
    "experience_event": "ds-loyalty-events",
    "profile_customer": "ds-profile-customer",
    "profile_tier": "ds-profile-tier",
}
# Kafka's 2 MB poison needs big records on the input and the dead-letter topic.
BIG_TOPIC = {"max.message.bytes": "3000000"}


def producer(bootstrap: str) -> Producer:
    return Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
        "enable.idempotence": True, "message.max.bytes": 10_000_000,
    })


class Scenario:
    def __init__(
        self,
        name: str,
        *,
        bootstrap: str,
        sandbox: Any,
        names: KafkaNames,
        log_dir: Path,
        partitions: int = 3,
        topic_config: Mapping[str, str] | None = None,
    ) -> None:
        assert {r["family"]: r["dataset_id"] for r in routes_for(sandbox)} == DATASETS
        self.name = name
        self.bootstrap = bootstrap
        self.sandbox = sandbox
        self.partitions = partitions
        self.log_dir = log_dir
        self.topic = create_topic(bootstrap, names.topic(name), partitions, topic_config)
        self.dlq = create_topic(bootstrap, names.topic(name + "-dlq"), 1, topic_config)
        self.group = names.group(name)
        self.ledger = Ledger(name, self.topic, partitions)
        self.workers: list[WorkerProcess] = []
        self._producer = producer(bootstrap)

    # -- input ---------------------------------------------------------------------------------

    def produce(
        self,
        records: Iterable[tuple[str, bytes | None, bytes | None]],
        expect: Mapping[str, Expect] | Expect = DELIVER,
        *,
        partition: int | None = None,
    ) -> list[Produced]:
        """Produce (label, key, value) and book each with its expected outcome (broker-acked)."""
        out: list[Produced] = []
        errors: list[str] = []
        for label, key, value in records:

            def report_(err: Any, msg: Any, label: str = label) -> None:
                if err is not None:
                    errors.append(f"{label}: {err}")
                else:
                    out.append(Produced(label, msg.partition(), msg.offset()))

            kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report_}
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    self._producer.produce(self.topic, **kwargs)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self._producer.poll(0)
        assert self._producer.flush(60) == 0, "produce: not everything was acknowledged"
        assert not errors, errors[:3]
        self.ledger.add(out, expect)
        return out

    def samples(
        self, count: int, *, seed: int, invalid_share: float = 0.0,
        event_names: tuple[str, ...] | None = None,
    ) -> list[Sample]:
        # The samples start seed % 1000 days after BASE_TIME_MS. Keep them in the past: the
        # mapper clamps a future timestamp to "now", and a redelivery would then differ.
        start = BASE_TIME_MS + seed % 1000 * 86_400_000
        assert start < (time.time() - 5 * 86_400) * 1000, f"seed {seed}: samples in the future"
        return list(generate_samples(
            count, seed=seed, invalid_share=invalid_share, event_names=event_names
        ))

    @staticmethod
    def expectations(samples: Iterable[Sample]) -> dict[str, Expect]:
        """Invalid samples: dead-lettered for their kind. Valid ones: delivered to every
        dataset their event routes to (a profile update unless a newer one supersedes it)."""
        out: dict[str, Expect] = {}
        for sample in samples:
            if not sample.valid:
                out[sample.event_id] = SAMPLE_EXPECT[sample.kind]
                continue
            families = [f for f in DEFAULT_FAMILIES[sample.event_name] if f in DATASETS]
            event = decode(sample.value)
            cid = customer_id(event)
            profile = [DATASETS[f] for f in families if f != "experience_event"]
            out[sample.event_id] = Expect(
                datasets=tuple(DATASETS[f] for f in families),
                profile=(profile[0], event.org_id, cid) if profile and cid else None,
                created=event.created_at_ms,
            )
        return out

    def produce_samples(
        self, count: int, *, seed: int, invalid_share: float = 0.0,
        event_names: tuple[str, ...] | None = None,
    ) -> list[Sample]:
        samples = self.samples(
            count, seed=seed, invalid_share=invalid_share, event_names=event_names
        )
        self.produce_these(samples)
        return samples

    def produce_these(
        self, samples: list[Sample], overrides: Mapping[str, Expect] | None = None
    ) -> list[Produced]:
        expect = self.expectations(samples)
        for label, override in (overrides or {}).items():  # keep what routing tells about it
            expect[label] = replace(
                expect[label], outcome=override.outcome, error_kind=override.error_kind,
                stage=override.stage,
            )
        return self.produce(((s.event_id, s.key, s.value) for s in samples), expect)

    def book(self, produced: Iterable[Produced], expect: Mapping[str, Expect] | Expect) -> None:
        """Book records produced elsewhere (a steady background producer)."""
        self.ledger.add(produced, expect)

    # -- workers -------------------------------------------------------------------------------

    def settings(self, **sections: Mapping[str, Any]) -> dict[str, Any]:
        return settings_dict(
            self.bootstrap, self.sandbox, topics=[self.topic], group=self.group,
            dlq_topic=self.dlq, **sections,
        )

    def start(self, settings: Mapping[str, Any], label: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(settings, self.log_dir / f"{self.name}-{label}.log", *args)
        self.workers.append(worker)
        return worker

    def committed(self) -> dict[int, int]:
        return committed(self.bootstrap, self.group, self.topic, self.partitions)

    def ends(self) -> dict[int, int]:
        return end_offsets(self.bootstrap, self.topic, self.partitions)

    def all_committed(self) -> bool:
        return self.committed() == self.ends()

    def drain(
        self, settings: Mapping[str, Any], label: str, *args: str, timeout: float
    ) -> WorkerProcess:
        """A worker that runs until everything is finished and committed, then exits 0."""
        worker = self.start(settings, label, "--exit-when-drained", "--summary", *args)
        code = worker.wait(timeout)
        assert code == 0, f"{label} exited {code}:\n{tail(worker)}"
        return worker

    def worker_problems(
        self, known: Callable[[dict[str, Any]], bool] = lambda _: False
    ) -> list[dict[str, Any]]:
        """error/critical log lines of every worker, except the reported faults and ``known``
        issues (which a scenario must count in its notes)."""
        return [e for w in self.workers for e in problems(w, FAULT_REPORTS) if not known(e)]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self._producer.flush(5)
        del self._producer  # librdkafka clients log about a broker gone at session end

    # -- the verdict ---------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.ledger.notes.append(text)

    def observe(self) -> Observed:
        return observe(
            self.bootstrap, self.sandbox, topic=self.topic, dlq=self.dlq, group=self.group,
            partitions=self.partitions,
        )

    def finish(
        self, *, known: Callable[[dict[str, Any]], bool] = lambda _: False
    ) -> Outcome:
        """Tally, record the report line, print it; fails on loss, misplaced records or worker
        errors (other than the injected faults' and the ``known`` ones)."""
        seen = self.observe()
        outcome = self.ledger.tally(seen)
        report.record(outcome)
        print("\n" + outcome.line())
        outcome.check()
        bad = self.worker_problems(known)
        assert not bad, f"{self.name}: worker errors\n" + "\n".join(map(str, bad[:10]))
        return outcome


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll until true; returns the seconds it took (fails with ``what`` on timeout)."""
    start = time.monotonic()
    end = start + timeout
    while time.monotonic() < end:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample of the worker's /metrics (None when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None

