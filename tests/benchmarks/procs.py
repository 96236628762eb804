"""Child processes of the benchmark, and their own CPU and memory accounting.

A child's CPU (user + system, every thread) comes from the kernel: ``os.wait4`` on that one pid
when it exits (its own rusage, nothing of its siblings), and ``/proc/<pid>/stat`` while it runs.
Its peak RSS is ``VmHWM`` from ``/proc/<pid>/status``, sampled while it runs: the rusage
``ru_maxrss`` is useless here, because exec folds the high-water mark of the forked copy of the
parent (this benchmark, holding a producer's buffers) into it. Nothing here runs inside the
measured process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all threads), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB: resident now, and its peak since exec."""
    rss = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        return None
    return None if rss is None or hwm is None else (rss, hwm)


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a live process (same-named threads summed; Python's
    threads are all "python": the main one, the event loop's, is reported apart)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        head, _, rest = stat.rpartition(")")
        name = head.split("(", 1)[1].rstrip("0123456789_") or "?"
        if tid == str(pid):
            name += " (main thread)"
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat), for the machine's load."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return float(total - idle), float(total)


@dataclass(slots=True)
class Exit:
    code: int
    cpu_s: float  # user + system over the whole life of the process
    peak_rss_mb: float  # VmHWM at the last sample before exit (0: never sampled)
    wall_s: float


@dataclass
class Child:
    """A child process whose exit is reaped with ``os.wait4`` (to read its own rusage)."""

    argv: list[str]
    env: dict[str, str] | None = None
    log_path: Path | None = None
    stdout_path: Path | None = None
    proc: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False)
    exit: Exit | None = field(init=False, default=None)
    peak_rss_mb: float = field(init=False, default=0.0)
    _files: list[IO[bytes]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        stderr: Any = subprocess.DEVNULL
        stdout: Any = subprocess.DEVNULL
        if self.log_path is not None:
            f = self.log_path.open("ab")
            self._files.append(f)
            stderr = f
            stdout = f
        if self.stdout_path is not None:
            f = self.stdout_path.open("wb")
            self._files.append(f)
            stdout = f
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample_memory(self) -> float | None:
        """Current RSS (MB); keeps the peak (VmHWM) for ``Exit``."""
        got = memory_mb(self.pid) if self.exit is None else None
        if got is None:
            return None
        self.peak_rss_mb = max(self.peak_rss_mb, got[1])
        return got[0]

    def poll(self) -> Exit | None:
        if self.exit is not None:
            return self.exit
        self.sample_memory()  # the last look before it can be reaped
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._reaped(status, usage)
        return self.exit

    def wait(self, timeout: float) -> Exit:
        deadline = time.monotonic() + timeout
        while (found := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[:4]} still running after {timeout}s")
            time.sleep(0.02)
        return found

    def _reaped(self, status: int, usage: Any) -> None:
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.exit = Exit(
            self.proc.returncode,
            usage.ru_utime + usage.ru_stime,
            self.peak_rss_mb,
            time.monotonic() - self.started,
        )
        for f in self._files:
            f.close()

    def stop(self, timeout: float = 60) -> Exit:
        if self.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except TimeoutError:
                self.proc.kill()
        return self.wait(10)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class Sandbox:
    """``capillary-aep sandbox`` in its own process on a free port."""

    def __init__(self, workdir: Path, name: str, *store_args: str) -> None:
        ready = workdir / f"{name}.url"
        self.child = Child(
            python("-m", "worker", "sandbox", "--port", "0", "--ready-file", str(ready),
                   *store_args),
            log_path=workdir / f"{name}.log",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            if self.child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start; see {workdir / (name + '.log')}")
            time.sleep(0.05)
        self.url = ready.read_text().strip()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return orjson.loads(resp.read())

    def post(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            return orjson.loads(resp.read())

    def cpu_s(self) -> float:
        return proc_cpu_s(self.child.pid) or 0.0

    def close(self) -> None:
        self.child.stop(20)
