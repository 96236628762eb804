"""Capacity of the AEP sandbox: messages/s it validates and accepts over HTTP on loopback.

Run: ``uv run python tests/benchmarks/bench_sandbox.py [--batches N] [--batch-size 500]
[--concurrency 4] [--store count] [--inlet open-inlet]``.

The sandbox runs as its own process (``capillary-aep sandbox``), so the client does not share
its interpreter; an aiohttp client posts batches of ~700-byte ExperienceEvents (the shape the
worker sends) with a few requests in flight, checks every 207 entry is an acceptance, and
prints messages/s. The sandbox must out-run the worker, so it is never the bottleneck of the
worker's own benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[2]
EE = "https://ns.adobe.com/capillary/schemas/loyalty-experience-event"
ORG = "EXAMPLEORG0123456789@AdobeOrg"


def make_message(n: int) -> dict[str, Any]:
    ref = {"id": EE, "contentType": "application/vnd.adobe.xed-full+json;version=1"}
    entity = {
        "_id": hashlib.sha256(f"1655|pointsIssued|{n}|events".encode()).hexdigest(),
        "timestamp": "2024-07-08T12:05:49.027Z",
        "eventType": "loyalty.pointsIssued",
        "identityMap": {
            "CapillaryCustomerId": [
                {
                    "id": str(379_000_000 + n % 100_000),
                    "primary": True,
                    "authenticatedState": "authenticated",
                }
            ]
        },
        "loyalty": {"pointsGained": [{"value": 100, "loyaltyProgramId": "1231"}]},
        "_capillary": {
            "eventId": f"0f5e6a3c-7f5b-4a55-9e7e-{n:012d}",
            "eventName": "pointsIssued",
            "orgId": 1655,
            "customerId": str(379_000_000 + n % 100_000),
        },
    }
    return {
        "header": {
            "schemaRef": ref,
            "imsOrgId": ORG,
            "datasetId": "ds-loyalty-events",
            "flowId": "flow-events",
            "source": {"name": "Capillary"},
        },
        "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity},
    }


def start_sandbox(store: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = Path(tempfile.mkdtemp()) / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "sandbox",
            "--port",
            "0",
            "--store",
            store,
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("sandbox did not start")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU time of a process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    base: str, inlet: str, batches: int, size: int, concurrency: int, pid: int | None
) -> None:
    messages = [make_message(i) for i in range(size)]
    body = orjson.dumps({"messages": messages})
    per_message = (len(body) - len(b'{"messages":[]}')) / size
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/json"}
        if inlet == "capillary-inlet":
            async with http.post(
                f"{base}/ims/token/v3",
                data={
                    "client_id": "sandbox-client",
                    "client_secret": "sandbox-secret",
                    "grant_type": "client_credentials",
                },
            ) as resp:
                headers["Authorization"] = "Bearer " + (await resp.json())["access_token"]
        url = f"{base}/collection/batch/{inlet}"
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(batches):
            queue.put_nowait(i)
        latencies: list[float] = []

        async def client() -> None:
            while not queue.empty():
                queue.get_nowait()
                t0 = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as resp:
                    result = orjson.loads(await resp.read())
                latencies.append(time.perf_counter() - t0)
                assert resp.status == 207, resp.status
                assert all("xactionId" in r for r in result["responses"]), result["responses"][:1]

        # warm up (connections, first compile paths)
        async with http.post(url, data=body, headers=headers) as resp:
            assert resp.status == 207
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(pid)
        async with http.get(f"{base}/sandbox/stats") as resp:
            stats = await resp.json()
    total = batches * size
    latencies.sort()
    print(
        f"batches {batches} x {size} messages ({per_message:.0f} B each, "
        f"{len(body) / 1e6:.2f} MB per request), {concurrency} in flight, inlet {inlet}"
    )
    print(
        f"  {total / elapsed:,.0f} messages/s validated and accepted "
        f"({batches / elapsed:.1f} requests/s, {len(body) * batches / elapsed / 1e6:.1f} MB/s)"
    )
    print(
        f"  request latency p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
    )
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        cpu_per_message = (cpu_after - cpu_before) / total
        print(
            f"  sandbox CPU {cpu_per_message * 1e6:.1f} us per message: "
            f"~{1 / cpu_per_message:,.0f} messages/s per core when the client is elsewhere"
        )
    print(
        f"  sandbox accepted {stats['messages']['accepted']:,} "
        f"(distinct _id {stats['all_datasets']['distinct_ids']:,})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--store", default="count", help="memory | count | jsonl:PATH")
    parser.add_argument("--inlet", default="capillary-inlet")
    parser.add_argument("--url", default=None, help="use a running sandbox instead")
    args = parser.parse_args()
    proc = None
    base = args.url
    if base is None:
        proc, base = start_sandbox(args.store)
    try:
        pid = proc.pid if proc is not None else None
        asyncio.run(run(base, args.inlet, args.batches, args.batch_size, args.concurrency, pid))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


if __name__ == "__main__":
    main()
