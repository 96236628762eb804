"""The worker's end-to-end benchmark: real broker, sandbox (count mode), worker as a child process.

Run: ``make bench`` (= ``uv run python -m tests.benchmarks.bench_worker``); ``--quick`` for a
smaller run while developing. Prints the figures and saves them as JSON (default
``tests/benchmarks/results/worker.json``). Benchmarks are not tests: nothing here asserts a
speed; the targets are printed beside the figures.

Phases, each on fresh topics (``message.timestamp.type=LogAppendTime``) of one local broker:

1. main: a backlog of the supported Capillary events (``SamplePool``: realistic sizes, ~1%
   invalid of every kind) on 4 partitions, drained by ``capillary-aep run --exit-when-drained``
   against the sandbox in count mode (validates every message, stores nothing); then the floor
   (``bench_floor``) over the same topic.
2. scaling: the same backlog size on 1 and 2 partitions (4 is the main run).
3. memory: a 1,000,000-record backlog; its peak RSS against the main run's.
4. latency: the worker running, caught up; events produced live at 2,000/s, then as fast as
   the producer goes; per message, Kafka append time (LogAppendTime) to the sandbox's receipt
   time (a second sandbox, ``jsonl`` store, for the per-message times).

Worker CPU is the worker process's own (``/proc/<pid>/stat`` while it runs, ``wait4`` rusage at
exit): "steady" is from the last metrics scrape before the first record was consumed to the
first scrape after the last one finished (start-up, group join and shutdown excluded);
"process" is the whole life of the process. Wall-clock figures depend on the machine's load
(recorded with each phase): broker, sandbox, producer and worker share its cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from deploy.mypyc.build import DEFAULT_DEST
from deploy.mypyc.build import up_to_date as compiled_up_to_date
from tests.benchmarks.backlog import SamplePool, create_topics, produce_backlog, produce_paced
from tests.benchmarks.procs import (
    ROOT,
    Child,
    Sandbox,
    free_port,
    machine_busy,
    proc_cpu_s,
    python,
    thread_cpu_s,
)
from tests.benchmarks.profile_summary import report
from tests.fixtures.kafka import LocalKafkaClass
from worker.config import BatchSettings

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
RESULTS = Path(__file__).resolve().parent / "results"
COMPILED_TREE = DEFAULT_DEST
SAMPLE_S = 0.1
TARGET_US = 25.0
TARGET_FLOOR_RATIO = 4.0
TARGET_RSS_MB = 300.0
_EVENT_ID = re.compile(rb'"eventId"\s*:\s*"([0-9a-f-]{36})"')


# -- the worker as a child process ------------------------------------------------------------


def worker_settings(
    bootstrap: str, sandbox_url: str, topic: str, group: str, dlq: str, health_port: int,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    inlet = f"{sandbox_url}/collection/capillary-inlet"

    def route(name: str, family: str, dataset: str, schema: str) -> dict[str, Any]:
        return {"name": name, "family": family, "inlet_url": inlet, "dataset_id": dataset,
                "schema_id": schema, "flow_id": f"flow-{name}"}  # fmt: skip

    settings: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "topics": [topic],
                  "dlq_topic": dlq, "commit_interval_s": 1.0, "session_timeout_ms": 10_000},
        "aep": {"ims_url": f"{sandbox_url}/ims/token/v3", "client_id": "sandbox-client",
                "client_secret": "sandbox-secret", "org_id": "EXAMPLEORG0123456789@AdobeOrg"},
        "routes": [
            route("loyalty-events", "experience_event", "ds-loyalty-events", EE),
            route("profile-customer", "profile_customer", "ds-profile-customer", PROFILE),
            route("profile-points", "profile_points", "ds-profile-points", PROFILE),
            route("profile-tier", "profile_tier", "ds-profile-tier", PROFILE),
        ],
        "health": {"host": "127.0.0.1", "port": health_port},
        # The organisation's rate budget (8,000 messages/s by default: AEP's guidance less a
        # margin) would cap a drain at ~6,500 events/s and measure the budget, not the worker:
        # the sandbox takes ~27,000 messages/s. Flow control has its own tests.
        "rate_budget": {"messages_per_s": 1_000_000, "requests_per_s": 100_000},
        "log_level": "info",
    }  # fmt: skip
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    return settings


def worker_env(settings: dict[str, Any], tree: Path | None = None) -> dict[str, str]:
    """The child's environment: ``settings`` as CAPILLARY_AEP_* variables; with ``tree`` (the
    mypyc-compiled copy, deploy/mypyc/build.py) the worker is imported from there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_AEP_")}
    env.pop("PYTHONPATH", None)
    env.setdefault("MALLOC_ARENA_MAX", "2")  # as the image sets it (deploy/Dockerfile)
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}{os.pathsep}{ROOT}"
        env["PYTHONSAFEPATH"] = "1"  # the working directory's sources must not come first
    for section, values in settings.items():
        text = values if isinstance(values, str) else orjson.dumps(values).decode()
        env[f"CAPILLARY_AEP_{section.upper()}"] = text
    return env


def ready(port: int) -> bool:
    """The worker's /readyz (cheap: no metrics rendering): a group member with a token."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


class Progress:
    """What the worker got done, seen from outside: the group's committed offsets (broker) and
    the messages the sandbox accepted. Never asks the worker (a /metrics scrape costs it
    several milliseconds of CPU)."""

    def __init__(self, bootstrap: str, group: str, topic: str, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False})  # fmt: skip
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.parts = [TopicPartition(topic, p) for p in parts]

    def committed(self) -> int:
        got = self.consumer.committed(self.parts, timeout=10)
        return sum(max(tp.offset, 0) for tp in got)

    def ends(self) -> int:
        return sum(self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.parts)

    def accepted(self) -> int:
        return int(self.sandbox.get("/sandbox/stats")["messages"]["accepted"])

    def close(self) -> None:
        self.consumer.close()


@dataclass(slots=True)
class Tick:
    t: float
    cpu: float
    accepted: int
    threads: dict[str, float] | None = None
    rss_mb: float = 0.0


class WorkerRun:
    """One ``capillary-aep run`` child and its own CPU over time."""

    def __init__(
        self, name: str, workdir: Path, settings: dict[str, Any], *args: str,
        tree: Path | None = None,
    ) -> None:
        self.port = settings["health"]["port"]
        self.stdout = workdir / f"{name}.summary.json"
        self.child = Child(
            python("-m", "worker", "run", *args), env=worker_env(settings, tree),
            log_path=workdir / f"{name}.log", stdout_path=self.stdout,
        )  # fmt: skip
        self.ticks: list[Tick] = []
        self.ready_at: Tick | None = None

    def cpu(self) -> float:
        return proc_cpu_s(self.child.pid) or 0.0

    def wait_ready(self, timeout: float = 120) -> Tick:
        """Poll /readyz until the worker is a group member (its partitions assigned)."""
        deadline = time.monotonic() + timeout
        while not ready(self.port):
            if self.child.poll() is not None:
                raise RuntimeError(f"worker exited early: {self.child.exit}")
            if time.monotonic() > deadline:
                raise TimeoutError("worker not ready")
            time.sleep(0.05)
        self.ready_at = Tick(time.monotonic(), self.cpu(), 0, thread_cpu_s(self.child.pid))
        return self.ready_at

    def follow(self, progress: Progress, timeout: float) -> None:
        """Sample the worker's CPU and the sandbox's count until the process exits."""
        deadline = time.monotonic() + timeout
        while self.child.poll() is None:
            if time.monotonic() > deadline:
                self.child.stop()
                raise TimeoutError(f"worker still running after {timeout}s")
            cpu = self.cpu()
            threads = thread_cpu_s(self.child.pid)
            rss = self.child.sample_memory() or 0.0
            self.ticks.append(Tick(time.monotonic(), cpu, progress.accepted(), threads, rss))
            time.sleep(SAMPLE_S)

    def wait_committed(self, progress: Progress, records: int, timeout: float) -> Tick:
        """Until the group committed ``records`` offsets (everything finished below them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                raise RuntimeError(f"worker exited: {self.child.exit}")
            if progress.committed() >= records:
                return Tick(time.monotonic(), self.cpu(), 0)
            time.sleep(SAMPLE_S)
        raise TimeoutError(f"worker did not commit {records} offsets in {timeout}s")

    def finished(self) -> Tick:
        """The first sample at which the sandbox had accepted everything it ever would."""
        final = self.ticks[-1].accepted if self.ticks else 0
        return next(t for t in self.ticks if t.accepted >= final)

    def summary(self) -> dict[str, Any]:
        text = self.stdout.read_bytes()
        return orjson.loads(text) if text.strip() else {}


# -- phases --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-worker-"))
        self.kafka: Any = None
        self.bootstrap = ""
        self.sandbox: Sandbox | None = None
        self.pool: SamplePool | None = None
        self.runs = 0
        self.next_n = 0  # records produced so far: every record of the bench gets its own eventId
        self.suffix = time.strftime("%H%M%S")
        # The build the worker runs as: the mypyc-compiled copy (as in the container image) or
        # the sources (--build python).
        self.tree: Path | None = COMPILED_TREE if args.build == "compiled" else None

    # -- set-up --

    def start(self) -> None:
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            self.bootstrap = external
        else:
            self.kafka = LocalKafkaClass(die_with_parent=True, heap="1g")
            self.bootstrap = self.kafka.start()
        self.sandbox = Sandbox(self.workdir, "sandbox", "--store", "count")
        self.pool = SamplePool(self.args.pool, seed=8, invalid_share=self.args.invalid_share)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
        if self.kafka is not None:
            self.kafka.close()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def topic(self, what: str, partitions: int) -> tuple[str, str, str]:
        self.runs += 1
        base = f"bench-{self.suffix}-{self.runs}-{what}"
        topic, dlq = f"{base}-events", f"{base}-dlq"
        create_topics(self.bootstrap, {topic: partitions, dlq: 1})
        return topic, dlq, f"{base}-group"

    def backlog(self, what: str, partitions: int, records: int) -> tuple[str, str, str, dict[str, Any]]:
        assert self.pool is not None
        topic, dlq, group = self.topic(what, partitions)
        seconds = produce_backlog(self.bootstrap, topic, self.pool, records, self.next_n)
        self.next_n += records
        log(f"  produced {records:,} records on {partitions} partitions in {seconds:.1f}s "
            f"({records / seconds:,.0f}/s)")  # fmt: skip
        return topic, dlq, group, {"seconds": round(seconds, 2), "records": records}

    # -- 1-3: drain a backlog --

    def drain(
        self, what: str, partitions: int, records: int, profile: Path | None = None,
        build: str | None = None,
    ) -> dict[str, Any]:
        assert self.sandbox is not None
        build = build or self.args.build
        tree = COMPILED_TREE if build == "compiled" else None
        log(f"[{what}] backlog of {records:,} records, {partitions} partitions, {build} build")
        topic, dlq, group, produced = self.backlog(what, partitions, records)
        props = dict(p.split("=", 1) for p in self.args.kafka_property)
        settings = worker_settings(
            self.bootstrap, self.sandbox.url, topic, group, dlq, free_port(),
            kafka={"properties": props} if props else {},
        )
        self.sandbox.post("/sandbox/reset")
        sandbox_cpu = self.sandbox.cpu_s()
        load = Load()
        progress = Progress(self.bootstrap, group, topic, self.sandbox)
        run = WorkerRun(what, self.workdir, settings, "--exit-when-drained", "--summary",
                        tree=tree)
        first = run.wait_ready()
        spy = None
        if profile is not None:
            # Attached from outside (the figures of a profiled run are not reported).
            spy = Child(["py-spy", "record", "--pid", str(run.child.pid), "--format", "raw",
                         "--rate", "250", "--gil", "--native", "--output", str(profile)],
                        log_path=self.workdir / "py-spy.log")  # fmt: skip
        run.follow(progress, timeout=self.args.timeout)
        progress.close()
        if spy is not None:
            spy.wait(60)
        ended = run.child.exit
        assert ended is not None
        stats = self.sandbox.get("/sandbox/stats")
        sandbox_cpu = self.sandbox.cpu_s() - sandbox_cpu
        summary = run.summary()
        if ended.code != 0:
            raise RuntimeError(f"worker exited {ended.code}: {summary.get('error')}")
        last = run.finished()
        cpu = last.cpu - first.cpu
        wall = last.t - first.t
        accepted = stats["messages"]["accepted"]
        threads = {
            name: round((cpu_t - (first.threads or {}).get(name, 0.0)) / records * 1e6, 2)
            for name, cpu_t in sorted((last.threads or {}).items(), key=lambda kv: -kv[1])
        }
        batch_requests = stats["requests"]["by_endpoint"].get("batch", 0)
        out = {
            "records": records,
            "partitions": partitions,
            "build": build,
            "produced": produced,
            "worker": {
                "cpu_s": round(cpu, 3),
                "cpu_us_per_event": round(cpu / records * 1e6, 2),
                "events_per_cpu_s": round(records / cpu),
                "wall_s": round(wall, 2),
                "events_per_s": round(records / wall),
                "process_cpu_s": round(ended.cpu_s, 3),
                "process_cpu_us_per_event": round(ended.cpu_s / records * 1e6, 2),
                "process_wall_s": round(ended.wall_s, 2),
                "peak_rss_mb": round(ended.peak_rss_mb, 1),
                "exit_code": ended.code,
                "cpu_us_per_event_by_thread": {k: v for k, v in threads.items() if v >= 0.05},
                "rss_mb_by_progress": rss_by_progress(run.ticks),
            },
            "outcome": {k: summary.get(k) for k in (
                "consumed", "delivered", "delivered_by_target", "dead_lettered",
                "dead_lettered_by_reason", "filtered", "retries", "requests")},
            "sandbox": {
                "requests": batch_requests,
                "messages_received": stats["messages"]["received"],
                "accepted": accepted,
                "rejected": stats["messages"]["rejected"],
                "avg_batch": round(stats["messages"]["received"] / max(batch_requests, 1), 1),
                "duplicate_ids": stats["all_datasets"]["duplicate_ids"],
                "cpu_us_per_message": round(sandbox_cpu / max(accepted, 1) * 1e6, 1),
                "capacity_messages_per_cpu_s": round(accepted / sandbox_cpu) if sandbox_cpu else None,
            },
            "load": load.done(),
        }  # fmt: skip
        w = out["worker"]
        log(f"  worker: {w['cpu_us_per_event']} µs CPU/event ({w['events_per_cpu_s']:,} "
            f"events per CPU-s), {w['events_per_s']:,} events/s wall, peak RSS "
            f"{w['peak_rss_mb']} MB; {batch_requests} requests, avg batch "
            f"{out['sandbox']['avg_batch']}; load {out['load']}")  # fmt: skip
        log(f"  worker CPU µs/event by thread: {w['cpu_us_per_event_by_thread']}")
        log(f"  peak RSS (MB) by share of messages accepted: {w['rss_mb_by_progress']}")
        out["topic"] = topic
        out["dlq"] = dlq
        return out

    def floor(self, topic: str, records: int) -> dict[str, Any]:
        load = Load()
        out_path = self.workdir / "floor.json"
        child = Child(
            python("-m", "tests.benchmarks.bench_floor", "--bootstrap", self.bootstrap,
                   "--topic", topic),
            log_path=self.workdir / "floor.log", stdout_path=out_path,
        )  # fmt: skip
        ended = child.wait(self.args.timeout)
        if ended.code != 0:
            raise RuntimeError(f"floor exited {ended.code}; see {self.workdir / 'floor.log'}")
        got = orjson.loads(out_path.read_bytes())
        if got["records"] != records:
            raise RuntimeError(f"floor read {got['records']} of {records} records")
        out = {
            **got,
            "cpu_us_per_event": round(got["cpu_s"] / records * 1e6, 2),
            "events_per_cpu_s": round(records / got["cpu_s"]),
            "events_per_s": round(records / got["wall_s"]),
            "process_cpu_s": round(ended.cpu_s, 3),
            "peak_rss_mb": round(ended.peak_rss_mb, 1),
            "load": load.done(),
        }
        log(f"  floor: {out['cpu_us_per_event']} µs CPU/event ({out['events_per_cpu_s']:,} "
            f"events per CPU-s), {out['events_per_s']:,} events/s wall")  # fmt: skip
        return out

    def stages(self, topic: str, dlq: str, records: int) -> dict[str, Any]:
        """CPU per stage (``bench_stages``): the same worker, drained again over ``topic``."""
        assert self.sandbox is not None
        settings = worker_settings(self.bootstrap, self.sandbox.url, topic,
                                   f"{topic}-stages", dlq, free_port())  # fmt: skip
        settings["log_level"] = "info"
        out_path = self.workdir / "stages.json"
        child = Child(python("-m", "tests.benchmarks.bench_stages"), env=worker_env(settings),
                      log_path=self.workdir / "stages.log", stdout_path=out_path)  # fmt: skip
        ended = child.wait(self.args.timeout)
        if ended.code != 0:
            raise RuntimeError(f"bench_stages exited {ended.code}; see {self.workdir}")
        got: dict[str, Any] = orjson.loads(out_path.read_bytes())
        if got["events"] != records:
            raise RuntimeError(f"bench_stages consumed {got['events']} of {records}")
        log(f"  CPU µs/event by stage (main thread {got['main_thread_us_per_event']}, process "
            f"{got['process_us_per_event']}):")  # fmt: skip
        for name, us in got["stages_us_per_event"].items():
            log(f"    {us:>7.2f}  {name}")
        return got

    # -- 4: latency, live --

    def latency(self, rate: int, seconds: float, full: int | None) -> dict[str, Any]:
        """Live at ``rate``, then at ``full`` per second (near the worker's own full speed, as
        measured draining the main backlog; None: as fast as the producer goes), ``seconds``
        each."""
        assert self.pool is not None
        log(f"[latency] live: {rate:,} events/s, then {full or 'unpaced':,} events/s (full "
            f"speed), {seconds:.0f}s each")  # fmt: skip
        jsonl = self.workdir / "accepted.jsonl"
        sandbox = Sandbox(self.workdir, "sandbox-latency", "--store", f"jsonl:{jsonl}",
                          "--max-records", "0")  # fmt: skip
        try:
            topic, dlq, group = self.topic("latency", 4)
            settings = worker_settings(self.bootstrap, sandbox.url, topic, group, dlq,
                                       free_port())  # fmt: skip
            progress = Progress(self.bootstrap, group, topic, sandbox)
            run = WorkerRun("latency", self.workdir, settings, tree=self.tree)
            run.wait_ready()
            # warm-up: first requests, token, connections (not measured)
            warm = int(rate * 2)
            produce_paced(self.bootstrap, topic, self.pool, warm, rate, start=self.next_n)
            self.next_n += warm
            run.wait_committed(progress, warm, 120)
            phases: dict[str, Any] = {}
            done = warm
            for name, count, pace in (
                (f"{rate}/s", int(rate * seconds), float(rate)),
                ("full speed", int((full or rate) * seconds), float(full) if full else None),
            ):
                load = Load()
                cpu0 = run.cpu()
                took, ids = produce_paced(self.bootstrap, topic, self.pool, count, pace,
                                          start=self.next_n)  # fmt: skip
                self.next_n += count
                done += count
                # CPU until the commit that covers the phase (includes < 1 s of idle loop)
                cpu = run.wait_committed(progress, done, self.args.timeout).cpu - cpu0
                phases[name] = {
                    "records": count,
                    "produced_per_s": round(count / took),
                    "worker_cpu_us_per_event": round(cpu / count * 1e6, 2),
                    "ids": ids,
                    "load": load.done(),
                }
            progress.close()
            run.child.stop()
        finally:
            sandbox.close()
        appended = append_times(self.bootstrap, topic)
        received = received_times(jsonl)
        linger = BatchSettings().linger_s
        out: dict[str, Any] = {"linger_s": linger, "target_p99_ms": round(linger * 1000 + 100)}
        for name, phase in phases.items():
            ids = phase.pop("ids")
            by_dataset: dict[str, list[int]] = {}
            requests: dict[tuple[str, int], list[int]] = {}  # (dataset, receipt ms): appends
            for i in ids:
                if i in appended:
                    for dataset, r in received.get(i, ()):
                        by_dataset.setdefault(dataset, []).append(r - appended[i])
                        requests.setdefault((dataset, r), []).append(appended[i])
            lat = sorted(x for values in by_dataset.values() for x in values)
            phase.update(percentiles(lat))
            phase["by_dataset"] = {ds: percentiles(sorted(v)) for ds, v in sorted(by_dataset.items())}
            phase["by_request"] = request_breakdown(requests)
            out[name] = phase
            log(f"  {name}: p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms, max "
                f"{phase['max_ms']} ms over {phase['messages']:,} messages; worker "
                f"{phase['worker_cpu_us_per_event']} µs CPU/event")  # fmt: skip
            for ds, p in phase["by_dataset"].items():
                log(f"    {ds}: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms ({p['messages']:,})")
            b = phase["by_request"]
            log(f"    per request ({b['requests']:,}): append span p50 {b['span_p50_ms']} / p99 "
                f"{b['span_p99_ms']} ms; newest record's latency p50 {b['newest_p50_ms']} / "
                f"p99 {b['newest_p99_ms']} ms")  # fmt: skip
        return out


def rss_by_progress(ticks: list[Tick]) -> dict[str, float]:
    """Highest RSS seen up to each tenth of the messages accepted: flat if memory does not
    grow with the backlog."""
    final = ticks[-1].accepted if ticks else 0
    out: dict[str, float] = {}
    peak = 0.0
    step = 1
    for t in ticks:
        peak = max(peak, t.rss_mb)
        while step <= 10 and final and t.accepted >= final * step / 10:
            out[f"{step * 10}%"] = round(peak, 1)
            step += 1
    if ticks:
        out["at exit"] = round(max(peak, max(t.rss_mb for t in ticks)), 1)
    return out


def request_breakdown(requests: dict[tuple[str, int], list[int]]) -> dict[str, Any]:
    """Where a message's latency goes, per request (messages of one dataset received in the
    same millisecond): the span between its oldest and newest record's Kafka append (how long
    the worker gathered it: linger plus a consume round) and the newest record's latency
    (append to receipt: the consume round's processing, the wait for a delivery slot and the
    HTTP round trip). A message's latency is at most their sum."""
    spans = sorted(max(a) - min(a) for a in requests.values())
    newest = sorted(r - max(a) for (_, r), a in requests.items())
    span, last = percentiles(spans), percentiles(newest)
    return {
        "requests": len(spans),
        "span_p50_ms": span["p50_ms"],
        "span_p99_ms": span["p99_ms"],
        "newest_p50_ms": last["p50_ms"],
        "newest_p99_ms": last["p99_ms"],
    }


def percentiles(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"messages": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    n = len(values)
    return {
        "messages": n,
        "p50_ms": values[n // 2],
        "p99_ms": values[min(n - 1, int(n * 0.99))],
        "max_ms": values[-1],
    }


def append_times(bootstrap: str, topic: str) -> dict[str, int]:
    """eventId -> Kafka append time (LogAppendTime, ms) of every record of the topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader",
                  "enable.auto.commit": False})  # fmt: skip
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: dict[str, int] = {}
    seen = 0
    total = sum(ends.values())
    deadline = time.monotonic() + 120
    while seen < total and time.monotonic() < deadline:
        for msg in c.consume(1000, 1.0):
            if msg.error() is not None:
                continue
            seen += 1
            m = _EVENT_ID.search(msg.value() or b"")
            if m is not None:
                out[m.group(1).decode()] = msg.timestamp()[1]
    c.close()
    return out


def received_times(path: Path) -> dict[str, list[tuple[str, int]]]:
    """eventId -> (dataset, the sandbox's receipt time in ms) of each message accepted for it."""
    out: dict[str, list[tuple[str, int]]] = {}
    with path.open("rb") as f:
        for line in f:
            rec = orjson.loads(line)
            tenant = rec["xdmEntity"].get("_capillary") or {}
            event_id = tenant.get("eventId") or tenant.get("lastEventId")
            if event_id:
                out.setdefault(event_id, []).append((rec["datasetId"], rec["receivedTimeMs"]))
    return out


class Load:
    """The machine's load while a phase runs: 1-minute load average, share of CPU busy."""

    def __init__(self) -> None:
        self.busy, self.total = machine_busy()
        self.loadavg = os.getloadavg()[0]

    def done(self) -> dict[str, float]:
        busy, total = machine_busy()
        share = (busy - self.busy) / max(total - self.total, 1.0)
        return {
            "loadavg_1m_start": round(self.loadavg, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
            "cpu_busy_pct": round(share * 100, 1),
        }


def log(text: str) -> None:
    print(text, flush=True)


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    main = r["main"]["worker"]
    rows: list[tuple[str, str, bool | None]] = [
        ("worker CPU per event ≤ 25 µs", f"{main['cpu_us_per_event']} µs",
         main["cpu_us_per_event"] <= TARGET_US),
    ]  # fmt: skip
    if "floor" in r:
        ratio = r["floor_ratio"]
        rows.append(("worker CPU ≤ 4x the floor", f"{ratio}x", ratio <= TARGET_FLOOR_RATIO))
    if "main_python" in r:
        py = r["main_python"]["worker"]["cpu_us_per_event"]
        rows.append(("(the sources, not compiled: CPU per event)", f"{py} µs", None))
    if "memory" in r:
        big, small = r["memory"]["worker"]["peak_rss_mb"], main["peak_rss_mb"]
        rows.append(("peak RSS ≤ 300 MB draining 1,000,000", f"{big} MB", big <= TARGET_RSS_MB))
        growth = (big - small) / small * 100
        rows.append(("… within 10% of the 200,000 figure", f"{growth:+.1f}% ({small} MB)",
                     abs(growth) <= 10))  # fmt: skip
    if "latency" in r:
        lat = r["latency"]
        key = next(k for k in lat if k.endswith("/s"))
        p99 = lat[key]["p99_ms"]
        rows.append((f"p99 latency at {key} ≤ linger + 100 ms ({lat['target_p99_ms']} ms)",
                     f"{p99} ms", p99 is not None and p99 <= lat["target_p99_ms"]))  # fmt: skip
    return rows


def machine() -> dict[str, Any]:
    import confluent_kafka

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="main backlog")
    parser.add_argument("--big", type=int, default=1_000_000, help="memory backlog (0: skip)")
    parser.add_argument("--partitions", default="1,2", help="scaling runs besides the main 4")
    parser.add_argument("--scaling-records", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=2000, help="live rate for the latency phase")
    parser.add_argument("--live-seconds", type=float, default=15.0)
    parser.add_argument("--full-rate", type=int, default=None,
                        help="live rate of the full-speed phase (default: 90%% of the main "
                        "drain's events/s)")
    parser.add_argument("--pool", type=int, default=20_000, help="distinct sample events")
    parser.add_argument("--invalid-share", type=float, default=0.01)
    parser.add_argument("--skip", default="", help="comma list of: floor,stages,scaling,memory,latency")
    parser.add_argument("--profile", action="store_true",
                        help="one more main-sized drain under py-spy; stacks and summary saved")
    parser.add_argument("--quick", action="store_true", help="small figures, for development")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase")
    parser.add_argument("--out", type=Path, default=RESULTS / "worker.json")
    parser.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                        help="librdkafka setting for the worker (kafka.properties)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--build", choices=("compiled", "python"), default="compiled",
                        help="the worker as the image runs it (mypyc-compiled hot modules, "
                             "`make compiled`) or from the sources; the main drain is also "
                             "run with the sources for comparison (skip: python)")  # fmt: skip
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.records, args.big, args.live_seconds = 20_000, 0, 5.0
        args.scaling_records = args.records
        args.pool = min(args.pool, 5000)
    skip = set(filter(None, args.skip.split(",")))
    if args.build == "compiled" and not compiled_up_to_date(COMPILED_TREE):
        parser.error(f"no up-to-date compiled build in {COMPILED_TREE}: run `make compiled` "
                     "(or pass --build python)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "make bench" if not args.quick else "bench_worker --quick",
        "machine": machine(),
    }
    bench = Bench(args)
    try:
        log(f"work dir {bench.workdir}; load average {results['machine']['loadavg_at_start']}")
        bench.start()
        assert bench.pool is not None
        results["pool"] = {"distinct_events": bench.pool.stats.size,
                           "invalid": bench.pool.stats.invalid,
                           "mean_bytes": round(bench.pool.stats.mean_bytes)}  # fmt: skip
        main_run = bench.drain("main", 4, args.records)
        results["main"] = main_run
        if args.build == "compiled" and "python" not in skip:
            results["main_python"] = bench.drain("main-python", 4, args.records, build="python")
        if "floor" not in skip:
            results["floor"] = bench.floor(main_run["topic"], args.records)
            results["floor_ratio"] = round(
                main_run["worker"]["cpu_us_per_event"] / results["floor"]["cpu_us_per_event"], 2
            )
        if "stages" not in skip:
            results["stages"] = bench.stages(main_run["topic"], main_run["dlq"], args.records)
        if args.profile:
            stacks = args.out.with_name(args.out.stem + "-profile.txt")
            bench.drain("profile", 4, args.records, profile=stacks)
            results["profile"] = {"stacks": stacks.name,
                                  "summary": report(stacks, top=30).splitlines()}  # fmt: skip
            log(report(stacks, top=30))
        if "scaling" not in skip:
            scaling = {}
            for p in (int(x) for x in args.partitions.split(",") if x):
                scaling[str(p)] = _brief(bench.drain(f"p{p}", p, args.scaling_records))
            if args.scaling_records == args.records:
                scaling["4"] = _brief(main_run)
            else:
                scaling["4"] = _brief(bench.drain("p4", 4, args.scaling_records))
            results["scaling"] = dict(sorted(scaling.items(), key=lambda kv: int(kv[0])))
        if "memory" not in skip and args.big:
            results["memory"] = bench.drain("memory", 4, args.big)
        if "latency" not in skip:
            # 90% of what it sustained: at 100% any hiccup of the shared machine only grows a
            # backlog, and the figure would measure the backlog, not the worker.
            full = args.full_rate or int(main_run["worker"]["events_per_s"] * 0.9)
            results["latency"] = bench.latency(args.rate, args.live_seconds, full)
    finally:
        bench.close()
    results["bench_seconds"] = round(time.monotonic() - started)
    results["targets"] = [
        {"target": t, "measured": m, "met": ok} for t, m, ok in verdicts(results)
    ]
    log("\ntargets:")
    for t, m, ok in verdicts(results):
        log(f"  {'    ' if ok is None else 'MET ' if ok else 'MISS'}  {t:<55} {m}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    log(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
        f"({results['bench_seconds']}s)")  # fmt: skip
    return 0


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    w = run["worker"]
    return {"records": run["records"]} | {
        k: w[k] for k in ("events_per_s", "cpu_us_per_event", "events_per_cpu_s", "peak_rss_mb")
    } | {"load": run["load"]}


if __name__ == "__main__":
    raise SystemExit(main())
