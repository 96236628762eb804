"""``make run``: the whole job on one machine, for real.

Starts a real Kafka broker (deploy/local/kafka) and the AEP sandbox, creates the topics,
produces a stream of realistic Capillary events (about 1% invalid), runs
``capillary-aep run --exit-when-drained`` until everything is delivered or dead-lettered, and
prints a summary: delivered per target, dead-lettered by reason, retries, throughput, and what
the sandbox accepted. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from worker.dlq import header_map  # noqa: E402
from worker.mapping import DEFAULT_FAMILIES  # noqa: E402
from worker.tools.samples import generate_samples  # noqa: E402

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
PROFILE = "https://ns.adobe.com/capillary/schemas/loyalty-profile"
ROUTED_FAMILIES = ("experience_event", "profile_customer", "profile_tier")  # the routes below

CONFIG = """\
log_level = "warning"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "capillary-aep-demo"
topics = ["{topic}"]
dlq_topic = "{dlq}"
commit_interval_s = 1.0

[aep]
ims_url = "{sandbox}/ims/token/v3"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
org_id = "EXAMPLEORG0123456789@AdobeOrg"
sandbox_name = "demo"

[health]
host = "127.0.0.1"
port = 0

[[routes]]
name = "loyalty-events"
family = "experience_event"
inlet_url = "{sandbox}/collection/capillary-inlet"
dataset_id = "ds-loyalty-events"
schema_id = "{ee}"
flow_id = "flow-loyalty-events"

[[routes]]
name = "profile-customer"
family = "profile_customer"
inlet_url = "{sandbox}/collection/capillary-inlet"
dataset_id = "ds-profile-customer"
schema_id = "{profile}"
flow_id = "flow-profile-customer"

[[routes]]
name = "profile-tier"
family = "profile_tier"
inlet_url = "{sandbox}/collection/capillary-inlet"
dataset_id = "ds-profile-tier"
schema_id = "{profile}"
flow_id = "flow-profile-tier"
"""


def _load_broker_module() -> Any:
    path = ROOT / "deploy" / "local" / "kafka" / "broker.py"
    spec = importlib.util.spec_from_file_location("local_kafka_broker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _start_sandbox(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = workdir / "sandbox.url"
    log = (workdir / "sandbox.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "sandbox",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--store",
            "memory",
            "--max-records",
            "10",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, ready.read_text().strip()
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"sandbox did not start; see {workdir / 'sandbox.log'}")


def _create_topics(bootstrap: str, topic: str, partitions: int, dlq: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(topic, num_partitions=partitions, replication_factor=1),
            NewTopic(dlq, num_partitions=1, replication_factor=1),
        ]
    )
    for fut in futures.values():
        fut.result(30)


def _produce(bootstrap: str, topic: str, count: int, invalid_share: float) -> dict[str, int]:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "zstd"}
    )
    kinds: collections.Counter[str] = collections.Counter()
    for sample in generate_samples(count, seed=7, invalid_share=invalid_share):
        while True:
            try:
                producer.produce(topic, key=sample.key, value=sample.value)
                break
            except BufferError:
                producer.poll(0.05)
        kinds[sample.kind] += 1
        if sample.valid:  # a record feeding two routed targets is two messages
            fanout = sum(f in ROUTED_FAMILIES for f in DEFAULT_FAMILIES[sample.event_name])
            kinds["extra-fanout-messages"] += fanout - 1
    producer.flush(60)
    return dict(kinds)


def _dlq_reasons(bootstrap: str, dlq: str) -> dict[str, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "demo-dlq-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(dlq, 0, 0)])
    _, high = consumer.get_watermark_offsets(TopicPartition(dlq, 0), timeout=10)
    reasons: collections.Counter[str] = collections.Counter()
    seen = 0
    deadline = time.monotonic() + 30
    while seen < high and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is None:
                seen += 1
                h = header_map(msg.headers())
                reasons[f"{h.get('stage')}/{h.get('error-kind')}"] += 1
    consumer.close()
    return dict(reasons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="events to produce")
    parser.add_argument("--invalid-share", type=float, default=0.01)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="capillary-aep-demo-"))
    broker_mod = _load_broker_module()
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = None
    sandbox = None
    try:
        if external:
            bootstrap = external
            _step(f"using the Kafka broker at {bootstrap}")
        else:
            _step("starting a local Kafka broker (KRaft, single node)")
            kafka = broker_mod.LocalKafka(die_with_parent=True)
            bootstrap = kafka.start()
            print(f"    bootstrap servers: {bootstrap}")
        _step("starting the AEP sandbox")
        sandbox, sandbox_url = _start_sandbox(workdir)
        print(f"    sandbox: {sandbox_url}")

        suffix = time.strftime("%Y%m%d%H%M%S")
        topic, dlq = f"capillary-events-{suffix}", f"capillary-aep-dlq-{suffix}"
        _step(f"creating topics {topic} ({args.partitions} partitions) and {dlq}")
        _create_topics(bootstrap, topic, args.partitions, dlq)

        _step(f"producing {args.count} Capillary events ({args.invalid_share:.1%} invalid)")
        kinds = _produce(bootstrap, topic, args.count, args.invalid_share)
        print(f"    produced: {kinds}")

        config = workdir / "worker.toml"
        config.write_text(
            CONFIG.format(
                bootstrap=bootstrap,
                topic=topic,
                dlq=dlq,
                sandbox=sandbox_url,
                ee=EE,
                profile=PROFILE,
            )
        )
        _step("running the worker until the topic is drained")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPILLARY_AEP_")}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker",
                "run",
                "--config",
                str(config),
                "--exit-when-drained",
                "--summary",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=900,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode(errors="replace")[-4000:])
            print(f"worker exited with {proc.returncode}")
            return proc.returncode
        summary = orjson.loads(proc.stdout)
        with urllib.request.urlopen(f"{sandbox_url}/sandbox/stats", timeout=10) as resp:
            stats = orjson.loads(resp.read())
        reasons = _dlq_reasons(bootstrap, dlq)

        _step("summary")
        rows = [
            ("consumed", summary["consumed"], ""),
            ("delivered", summary["delivered"], summary["delivered_by_target"]),
            ("dead-lettered", summary["dead_lettered"], reasons),
            ("filtered", summary["filtered"], ""),
            ("retries", summary["retries"], summary["retries_by_cause"]),
            ("AEP requests", summary["requests"], ""),
            ("wall time (s)", summary["seconds"], "including the group join"),
            ("delivered/s", summary["delivered_per_s"], ""),
        ]
        for label, value, detail in rows:
            print(f"    {label:<18}{value:>10.0f}   {detail or ''}")
        accepted = {
            ds: v.get("accepted", v) if isinstance(v, dict) else v
            for ds, v in (stats.get("datasets") or {}).items()
        }
        print(f"    sandbox accepted    {accepted}")
        lost = (
            summary["consumed"]
            + kinds.get("extra-fanout-messages", 0)
            - summary["delivered"]
            - summary["dead_lettered"]
            - summary["filtered"]
        )
        # Counted per message: a record fanned out to two targets is two (tier changes).
        print(f"    unaccounted         {lost:>10.0f}")
        return 0 if lost == 0 else 1
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(10)
        if kafka is not None:
            _step("stopping the broker")
            kafka.close()


if __name__ == "__main__":
    raise SystemExit(main())
