"""A worker on its own thread and event loop, and HTTP helpers for its probe port.

The worker thread is the real ``run_worker``; the test thread talks to it only over HTTP (and
may wedge its loop on purpose). Metrics are read the way Prometheus reads them: a scrape of
``/metrics`` parsed by prometheus_client's text parser.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from worker.config import Settings
from worker.runner import RunResult, run_worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str, timeout: float = 3.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status), orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), orjson.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class WorkerThread:
    """``run_worker`` in a thread; ``stop()`` is SIGTERM's path (the stop event)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.kwargs = kwargs
        self.port = settings.health.port
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="worker-under-test", daemon=True)

    def _main(self) -> None:
        async def main() -> RunResult:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            return await run_worker(
                self.settings, stop=self._stop, install_signals=False, **self.kwargs
            )

        try:
            self.result = asyncio.run(main())
        except BaseException as exc:  # surfaced by join()
            self.error = exc
            self._started.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = 60) -> RunResult:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"worker still running after {timeout}s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wedge(self, seconds: float) -> None:
        """Block the worker's event loop (a blocking call in async code, a CPU-bound bug)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(time.sleep, seconds)
