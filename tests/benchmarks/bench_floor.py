"""The floor: the irreducible per-event work of the worker, with nothing else around it.

Run: ``uv run python -m tests.benchmarks.bench_floor --bootstrap HOST:PORT --topic T``
(``bench_worker`` runs it as a child process over the same topic as the worker).

It reads every partition of the topic from the beginning to its current end with
``consume(1000)`` and, per record: ``orjson.loads``, the Capillary input-schema check, a trivial
ExperienceEvent dict (id, RFC 3339 time, type, identity, three tenant fields), the XDM schema
check and ``orjson.dumps``. No pipeline, batching, offsets, HTTP or group. Prints one JSON
object: records, valid, invalid, CPU seconds (user + system, all threads) from the first record
to the last and for the whole process, wall seconds.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from worker.schemas import SchemaStore

EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--batch", type=int, default=1000, help="consume(n)")
    args = parser.parse_args(argv)

    store = SchemaStore()
    xdm = store.xdm(EE)._compiled  # the compiled jsonschema-rs validators, no wrapper
    inputs = {name: store.capillary(name)._compiled for name in store.capillary_event_names}  # type: ignore[union-attr]
    consumer = Consumer(
        {"bootstrap.servers": args.bootstrap, "group.id": "bench-floor",
         "enable.auto.commit": False, "enable.partition.eof": False}
    )  # fmt: skip
    meta = consumer.list_topics(args.topic, timeout=10).topics[args.topic]
    ends: dict[int, int] = {}
    for p in meta.partitions:
        ends[p] = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1]
    consumer.assign([TopicPartition(args.topic, p, 0) for p in ends])
    open_parts = {p for p, end in ends.items() if end > 0}

    loads, dumps = orjson.loads, orjson.dumps
    gmtime, strftime = time.gmtime, time.strftime
    records = valid = invalid = 0
    first_cpu = first_wall = 0.0
    while open_parts:
        msgs = consumer.consume(args.batch, 1.0)
        if not msgs:
            continue
        if not records:
            first_cpu, first_wall = cpu_s(), time.monotonic()
        for msg in msgs:
            if msg.error() is not None:
                continue
            records += 1
            p, off = msg.partition(), msg.offset()
            if off + 1 >= ends[p]:
                open_parts.discard(p)
            try:
                doc: Any = loads(msg.value())
                inner = doc.get("attributes", doc)
                name = inner["eventName"]
                data = inner["data"]
                check = inputs.get(name)
                if check is None or not check.is_valid(data):
                    invalid += 1
                    continue
                created = int(inner["createdAt"])
                entity = {
                    "_id": doc["eventId"],
                    "timestamp": strftime("%Y-%m-%dT%H:%M:%S", gmtime(created // 1000))
                    + f".{created % 1000:03d}Z",
                    "eventType": "loyalty." + name,
                    "identityMap": {
                        "CapillaryCustomerId": [
                            {"id": str(int(data["customerIdentifiers"]["customerId"]))}
                        ]
                    },
                    "_capillary": {"eventId": doc["eventId"], "eventName": name,
                                   "orgId": inner["orgId"]},
                }  # fmt: skip
                if not xdm.is_valid(entity):
                    invalid += 1
                    continue
                dumps(entity)
                valid += 1
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                invalid += 1
    last_cpu, last_wall = cpu_s(), time.monotonic()
    consumer.close()
    out = {
        "records": records,
        "valid": valid,
        "invalid": invalid,
        "cpu_s": round(last_cpu - first_cpu, 4),
        "wall_s": round(last_wall - first_wall, 4),
        "process_cpu_s": round(cpu_s(), 4),
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
