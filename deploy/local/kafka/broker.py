#!/usr/bin/env python3
"""A real, single-node Apache Kafka broker (KRaft) for local runs and tests.

The broker jars come from Maven Central through ``pom.xml`` next to this file; the broker runs
as a plain ``java ... kafka.Kafka server.properties`` process on 127.0.0.1 with its data in a
(temporary by default) directory.  Standard library + confluent_kafka only.

Command line::

    python deploy/local/kafka/broker.py start [--port N] [--data-dir DIR] [--sasl-port N] ...
    python deploy/local/kafka/broker.py status
    python deploy/local/kafka/broker.py stop

Library::

    from broker import LocalKafka          # or load this file by path (see tests/fixtures/kafka.py)
    with LocalKafka(sasl_port=0, users={"alice": "alice-secret"}) as kafka:
        print(kafka.bootstrap_servers)

See README.md in this directory for the details and pitfalls.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
DEFAULT_CACHE_DIR = HERE / ".cache"
DEFAULT_STATE_FILE = DEFAULT_CACHE_DIR / "state.json"
JVM_DIR = Path("/usr/lib/jvm")
PREFERRED_JDK = "java-17-openjdk-amd64"
MIN_JAVA = 17

PLAINTEXT = "PLAINTEXT"
CONTROLLER = "CONTROLLER"
SASL_LISTENER = "SASL_PLAINTEXT"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 4096
NODE_ID = 1

DATA_META = "local-kafka.json"  # ports / cluster id of a data dir, reused on restart
LOG_DIRS = "kafka-logs"  # log.dirs inside the data dir
APP_LOGS = "logs"  # kafka.logs.dir inside the data dir (server.log)
STDOUT_LOG = "broker.out"  # the JVM's stdout/stderr (WARN+ and anything the JVM prints)

DEFAULT_STARTUP_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 30.0
BIND_ERRORS = ("Address already in use", "BindException")

# Watches the process that started the broker; if that process dies (pytest killed with -9,
# a crashed test run), it stops the broker so no orphan JVM keeps 512 MB and a port.
_WATCHDOG = r"""
import os, signal, sys, time
import shutil
parent, child, grace, cleanup = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
while alive(child):
    if os.getppid() != parent:
        try:
            os.kill(child, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive(child) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(child):
                os.kill(child, signal.SIGKILL)
                time.sleep(0.5)
        except ProcessLookupError:
            pass
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
        break
    time.sleep(0.5)
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


# --------------------------------------------------------------------------------------------
# Java and jars
# --------------------------------------------------------------------------------------------


def _java_major(home: Path) -> int | None:
    """Major version of the JDK/JRE at ``home`` (from its ``release`` file), or None."""
    if not (home / "bin" / "java").exists():
        return None
    try:
        for line in (home / "release").read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                version = line.split("=", 1)[1].strip().strip('"')
                head = version.split(".")[0]
                if head == "1":  # 1.8.0_x
                    head = version.split(".")[1]
                return int(head)
    except (OSError, ValueError, IndexError):
        return None
    return None


def find_java_home() -> Path:
    """The JDK to run the broker with.

    Order: env ``KAFKA_JAVA_HOME`` (taken as is); env ``JAVA_HOME`` if it is Java 17+;
    ``/usr/lib/jvm/java-17-openjdk-amd64``; any other Java 17 under /usr/lib/jvm; the lowest
    version >= 17 there (a Temurin 25 also lives there: 17 is preferred, it is what Kafka 4.x
    is tested on).
    """
    forced = os.environ.get("KAFKA_JAVA_HOME")
    if forced:
        if not (Path(forced) / "bin" / "java").exists():
            raise BrokerError(f"KAFKA_JAVA_HOME={forced} has no bin/java")
        return Path(forced)
    env_home = os.environ.get("JAVA_HOME")
    if env_home:
        major = _java_major(Path(env_home))
        if major is not None and major >= MIN_JAVA:
            return Path(env_home)
    preferred = JVM_DIR / PREFERRED_JDK
    if _java_major(preferred) == MIN_JAVA:
        return preferred
    candidates: list[tuple[int, str, Path]] = []
    if JVM_DIR.is_dir():
        for home in JVM_DIR.iterdir():
            if home.is_symlink():
                continue
            major = _java_major(home)
            if major is not None and major >= MIN_JAVA:
                candidates.append((major, home.name, home))
    if not candidates:
        raise BrokerError(
            f"no Java {MIN_JAVA}+ found (set KAFKA_JAVA_HOME or JAVA_HOME, or install "
            f"openjdk-{MIN_JAVA}-jre-headless)"
        )
    return min(candidates)[2]


def cache_dir() -> Path:
    """``$KAFKA_CACHE_DIR`` or ``deploy/local/kafka/.cache``."""
    return Path(os.environ.get("KAFKA_CACHE_DIR") or DEFAULT_CACHE_DIR).resolve()


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(cache: Path | None = None, java_home: Path | None = None) -> Path:
    """Copy the broker jars into ``<cache>/libs`` with Maven, unless already there.

    ``<cache>/libs/.complete`` holds the sha256 of pom.xml; a matching marker skips Maven.
    Safe against concurrent callers (file lock, download to a temp dir, then rename).
    """
    cache = (cache or cache_dir()).resolve()
    libs = cache / "libs"
    marker = libs / ".complete"
    digest = _pom_digest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return libs
    with _file_lock(cache / ".fetch.lock"):
        if marker.is_file() and marker.read_text().strip() == digest:
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("`mvn` not found on PATH: needed once to fetch the Kafka jars")
        staging = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=cache))
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java_home or find_java_home())
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            out = (proc.stdout + proc.stderr)[-4000:]
            raise BrokerError(f"maven failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
        if not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"maven copied no kafka_2.13 jar into {staging}")
        (staging / ".complete").write_text(digest + "\n")
        if libs.exists():
            old = cache / f"libs.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            libs.rename(old)  # a running JVM keeps its open jars; delete after the swap
            staging.rename(libs)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(libs)
    return libs


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free right now on 127.0.0.1 (bind to 0, then release: it can be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_cluster_id() -> str:
    """Same format and rules as ``kafka.tools.StorageTool random-uuid`` (Kafka's Uuid)."""
    while True:
        raw = uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        # Kafka rejects all-zero (ZERO_UUID), 1 (METADATA_TOPIC_ID) and a leading '-'
        if int.from_bytes(raw, "big") > 1 and not text.startswith("-"):
            return text


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _pid_is_broker(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live ``kafka.Kafka`` JVM started on ``data_dir`` (guards pid reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and any(str(data_dir) in a for a in args)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _prop_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _check_credential(text: str, what: str) -> None:
    bad = set(text) & set('"\\,=[] \t\n;')
    if not text or bad:
        raise ValueError(f"{what} {text!r}: must be non-empty without {''.join(sorted(bad))!r}")


def _normalize_mechanisms(mechanisms: str | Sequence[str]) -> tuple[str, ...]:
    items = [mechanisms] if isinstance(mechanisms, str) else list(mechanisms)
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            mech = part.strip().upper()
            if not mech:
                continue
            if mech not in SASL_MECHANISMS:
                raise ValueError(f"unsupported SASL mechanism {mech!r}: one of {SASL_MECHANISMS}")
            if mech not in out:
                out.append(mech)
    if not out:
        raise ValueError("at least one SASL mechanism is needed")
    return tuple(out)


def parse_user(text: str) -> tuple[str, str]:
    """``name:password`` -> (name, password)."""
    name, sep, password = text.partition(":")
    if not sep:
        raise ValueError(f"user {text!r}: expected name:password")
    _check_credential(name, "user name")
    _check_credential(password, "password")
    return name, password


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


class LocalKafka:
    """One combined broker+controller KRaft node on 127.0.0.1.

    Ports are free ports unless given (0/None = pick one).  ``start()`` fetches the jars if
    needed, formats storage on a fresh data dir, launches the JVM and waits until an
    AdminClient sees broker 1 of *this* cluster.  ``stop()`` is a clean SIGTERM shutdown that
    keeps the data: ``start()`` again resumes on the same data dir, same ports, same committed
    offsets.  ``close()`` stops and deletes a data dir it created.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        sasl_port: int | None = None,
        sasl_mechanisms: str | Sequence[str] = "PLAIN",
        users: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        authorizer: bool = False,
        super_users: Sequence[str] = (),
        allow_everyone_if_no_acl: bool = True,
        max_message_bytes: int | None = None,
        auto_create_topics: bool = False,
        extra_properties: Mapping[str, str] | None = None,
        heap: str = "512m",
        cache: str | os.PathLike[str] | None = None,
        java_home: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        """Configure (nothing runs until ``start()``).

        sasl_port: None = no SASL listener; 0 = a free port; N = that port.
        sasl_mechanisms: one or more of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (all enabled on the
            one SASL_PLAINTEXT listener).  SCRAM users are added at format time.
        users: name -> password, valid for every enabled mechanism.
        authorizer: enable ``StandardAuthorizer``; ``User:ANONYMOUS`` (the PLAINTEXT and
            controller listeners, i.e. the broker itself) is always a super user, plus
            ``super_users`` (names of SASL users).  With ``allow_everyone_if_no_acl`` (default)
            resources without ACLs stay open, so a test can DENY one operation for one user.
        max_message_bytes: sets message.max.bytes, replica.fetch.max.bytes (and
            replica.fetch.response.max.bytes / socket.request.max.bytes when needed).
        die_with_parent: a watchdog process stops the broker (and deletes a temp data dir)
            if this Python process dies, even by SIGKILL or a segfault.  The CLI turns it off.
        """
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._requested = {"port": port, "controller_port": controller_port, "sasl_port": sasl_port}
        self.port: int | None = port or None
        self.controller_port: int | None = controller_port or None
        self.sasl_enabled = sasl_port is not None
        self.sasl_port: int | None = sasl_port or None
        self.sasl_mechanisms: tuple[str, ...] = _normalize_mechanisms(sasl_mechanisms)
        pairs = list(users.items()) if isinstance(users, Mapping) else list(users or [])
        for name, password in pairs:
            _check_credential(name, "user name")
            _check_credential(password, "password")
        self.users: dict[str, str] = dict(pairs)
        if self.sasl_enabled and not self.users:
            raise ValueError("a SASL listener needs at least one user")
        self.authorizer = authorizer
        self.super_users: tuple[str, ...] = tuple(super_users)
        self.allow_everyone_if_no_acl = allow_everyone_if_no_acl
        self.max_message_bytes = max_message_bytes
        self.auto_create_topics = auto_create_topics
        self.extra_properties: dict[str, str] = dict(extra_properties or {})
        self.heap = heap
        self.cache = Path(cache).resolve() if cache is not None else None
        self.java_home = Path(java_home) if java_home is not None else None
        self.die_with_parent = die_with_parent
        self.startup_timeout = startup_timeout
        self.cluster_id: str | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._owns_data_dir = False
        self.paused = False
        # record a CDS archive when this process stops the broker it started (not the CLI)
        self.record_cds = True
        self._cds_pending: tuple[Path, Path] | None = None

    # ---- addresses / client settings ---------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the PLAINTEXT listener (known once started)."""
        if self.port is None:
            raise BrokerError("broker not started: no port yet")
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        """``127.0.0.1:<sasl_port>`` of the SASL_PLAINTEXT listener, or None without SASL."""
        if not self.sasl_enabled or self.sasl_port is None:
            return None
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def sasl_mechanism(self) -> str:
        """The first (default) enabled SASL mechanism."""
        return self.sasl_mechanisms[0]

    def client_config(
        self,
        *,
        sasl: bool = False,
        user: str | None = None,
        password: str | None = None,
        mechanism: str | None = None,
    ) -> dict[str, Any]:
        """confluent_kafka settings to reach this broker (PLAINTEXT, or SASL with ``sasl``).

        With ``sasl``: ``user`` defaults to the first user, ``password`` to its password
        (pass another to test a wrong one), ``mechanism`` to the first enabled one.
        """
        if not sasl:
            return {"bootstrap.servers": self.bootstrap_servers}
        if self.sasl_bootstrap_servers is None:
            raise BrokerError("this broker has no SASL listener")
        name = user if user is not None else next(iter(self.users))
        secret = password if password is not None else self.users[name]
        return {
            "bootstrap.servers": self.sasl_bootstrap_servers,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": (mechanism or self.sasl_mechanism).upper(),
            "sasl.username": name,
            "sasl.password": secret,
        }

    @property
    def log_file(self) -> Path:
        """The broker's log4j log (``<data>/logs/server.log``)."""
        return self._data() / APP_LOGS / "server.log"

    @property
    def stdout_file(self) -> Path:
        """The JVM's stdout/stderr (``<data>/broker.out``)."""
        return self._data() / STDOUT_LOG

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the JVM output and of server.log, for error messages."""
        parts = []
        for path in (self.stdout_file, self.log_file):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or "(no broker output)"

    # ---- lifecycle ---------------------------------------------------------------------

    def is_running(self) -> bool:
        """The broker JVM is alive (may not be serving yet)."""
        if self._proc is not None:
            return self._proc.poll() is None
        if self.pid is None or self.data_dir is None:
            return False
        return _pid_is_broker(self.pid, self.data_dir)

    def is_reachable(self, timeout: float = 5.0) -> bool:
        """An AdminClient gets metadata listing broker 1 of this cluster within ``timeout``."""
        if self.port is None:
            return False
        return self._metadata_ok(timeout)

    def start(self, timeout: float | None = None) -> str:
        """Start (or resume on the same data dir) and wait until ready; returns bootstrap."""
        if self.is_running():
            raise BrokerError(f"broker already running (pid {self.pid})")
        timeout = self.startup_timeout if timeout is None else timeout
        java_home = self.java_home or find_java_home()
        libs = ensure_jars(self.cache, java_home)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="local-kafka-")).resolve()
            self._owns_data_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 4
        for attempt in range(1, attempts + 1):
            fresh = self._prepare(java_home, libs)
            try:
                self._launch(java_home, libs)
                self._wait_ready(timeout)
            except _PortInUse as exc:
                self._reap()
                if attempt == attempts:
                    raise BrokerError(f"{exc}\n{self.log_tail()}") from None
                self._repick_ports(fresh)
                continue
            except BaseException:
                self._terminate(hard=True)
                raise
            scram = any(m.startswith("SCRAM-") for m in self.sasl_mechanisms)
            if not fresh and self.sasl_enabled and scram:
                self._upsert_scram_users()
            return self.bootstrap_servers
        raise AssertionError("unreachable")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Clean shutdown (SIGTERM, then SIGKILL after ``timeout``); data is kept."""
        self._terminate(hard=False, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the broker (an unclean crash); ``start()`` recovers the same data."""
        self._terminate(hard=True)

    def restart(self, timeout: float | None = None) -> str:
        """``stop()`` then ``start()`` on the same data dir and ports."""
        self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP the JVM: connections stay open but nothing answers (a hung broker)."""
        if self.pid is None or not self.is_running():
            raise BrokerError("broker not running")
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self.pid is None:
            raise BrokerError("broker not running")
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Stop, and delete the data dir if this object created it."""
        try:
            self.stop()
        finally:
            if self._owns_data_dir and self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LocalKafka(bootstrap={self.port and self.bootstrap_servers!r}, "
            f"sasl={self.sasl_bootstrap_servers!r}, data_dir={str(self.data_dir)!r}, "
            f"pid={self.pid})"
        )

    # ---- state (for the CLI) -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able description: pid, ports, data dir, bootstrap, SASL details."""
        return {
            "pid": self.pid,
            "bootstrap_servers": self.port and self.bootstrap_servers,
            "port": self.port,
            "controller_port": self.controller_port,
            "sasl_port": self.sasl_port if self.sasl_enabled else None,
            "sasl_bootstrap_servers": self.sasl_bootstrap_servers,
            "sasl_mechanisms": list(self.sasl_mechanisms) if self.sasl_enabled else [],
            "users": self.users,
            "cluster_id": self.cluster_id,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "owns_data_dir": self._owns_data_dir,
            "log_file": str(self.log_file) if self.data_dir else None,
            "max_message_bytes": self.max_message_bytes,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LocalKafka:
        """A handle on a broker started elsewhere (by ``state()``): for stop/status."""
        obj = cls(
            port=state.get("port"),
            controller_port=state.get("controller_port"),
            data_dir=state["data_dir"],
            sasl_port=state.get("sasl_port"),
            sasl_mechanisms=state.get("sasl_mechanisms") or "PLAIN",
            users=state.get("users") or None,
            max_message_bytes=state.get("max_message_bytes"),
        )
        obj.pid = state.get("pid")
        obj.cluster_id = state.get("cluster_id")
        obj._owns_data_dir = bool(state.get("owns_data_dir"))
        return obj

    # ---- internals ---------------------------------------------------------------------

    def _data(self) -> Path:
        if self.data_dir is None:
            raise BrokerError("no data dir yet (broker never started)")
        return self.data_dir

    def _prepare(self, java_home: Path, libs: Path) -> bool:
        """Pick ports, write configs, format storage if needed. Returns True if fresh."""
        data = self._data()
        meta_file = data / DATA_META
        formatted = (data / LOG_DIRS / "meta.properties").is_file()
        previous: dict[str, Any] = {}
        if formatted and meta_file.is_file():
            previous = json.loads(meta_file.read_text())
        self.port = self.port or previous.get("port") or free_port()
        self.controller_port = self.controller_port or previous.get("controller_port")
        self.controller_port = self.controller_port or self._other_free_port()
        if self.sasl_enabled:
            self.sasl_port = self.sasl_port or previous.get("sasl_port") or self._other_free_port()
        (data / APP_LOGS).mkdir(parents=True, exist_ok=True)
        (data / "server.properties").write_text(self._server_properties())
        (data / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if formatted:
            # Same as `format --ignore-formatted`, without paying for one more JVM start.
            self.cluster_id = self._read_cluster_id()
        else:
            self.cluster_id = random_cluster_id()
            self._format(java_home, libs)
        meta_file.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "controller_port": self.controller_port,
                    "sasl_port": self.sasl_port if self.sasl_enabled else None,
                    "cluster_id": self.cluster_id,
                },
                indent=2,
            )
        )
        return not formatted

    def _other_free_port(self) -> int:
        taken = {self.port, self.controller_port, self.sasl_port}
        while True:
            port = free_port()
            if port not in taken:
                return port

    def _repick_ports(self, fresh: bool) -> None:
        # Only a fresh data dir moves to new ports (and is formatted again); a resumed one
        # keeps its ports (clients expect them), so just wait and retry.
        if fresh:
            shutil.rmtree(self._data() / LOG_DIRS, ignore_errors=True)
            (self._data() / DATA_META).unlink(missing_ok=True)
            if not self._requested["port"]:
                self.port = None
            if not self._requested["controller_port"]:
                self.controller_port = None
            if self.sasl_enabled and not self._requested["sasl_port"]:
                self.sasl_port = None
        time.sleep(1.0)

    def _read_cluster_id(self) -> str:
        for line in (self._data() / LOG_DIRS / "meta.properties").read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        raise BrokerError(f"no cluster.id in {self._data() / LOG_DIRS / 'meta.properties'}")

    def _format(self, java_home: Path, libs: Path) -> None:
        data = self._data()
        cmd = [
            str(java_home / "bin" / "java"),
            "-Xmx256m",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={data / APP_LOGS}",
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            str(self.cluster_id),
            "-c",
            str(data / "server.properties"),
        ]
        if self.sasl_enabled:
            for mech in self.sasl_mechanisms:
                if mech.startswith("SCRAM-"):
                    for name, password in self.users.items():
                        cmd += [
                            "--add-scram",
                            f'{mech}=[name={name},password="{password}",'
                            f"iterations={SCRAM_ITERATIONS}]",
                        ]
        proc = subprocess.run(
            cmd, env=self._env(java_home), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise BrokerError(
                f"StorageTool format failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )

    def _env(self, java_home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java_home)
        env.pop("JAVA_TOOL_OPTIONS", None)
        env.pop("_JAVA_OPTIONS", None)
        return env

    def _cds_options(self, java_home: Path) -> list[str]:
        """Class-data sharing: a JVM start with Kafka's classes pre-parsed is ~2-3 s faster.

        The archive ``<cache>/cds/kafka-<pom hash>-java<N>.jsa`` is recorded once, by a broker
        this object started and stopped cleanly (``-XX:ArchiveClassesAtExit`` dumps at JVM
        exit), then reused by every later start.  ``KAFKA_CDS=0`` disables it.
        """
        self._cds_pending = None
        if os.environ.get("KAFKA_CDS", "1") == "0":
            return []
        base = (self.cache or cache_dir()) / "cds"
        final = base / f"kafka-{_pom_digest()[:12]}-java{_java_major(java_home) or 0}.jsa"
        if final.is_file():
            return [f"-XX:SharedArchiveFile={final}"]
        if not self.record_cds:
            return []
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob("*.tmp-*.jsa"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink()
        tmp = base / f"{final.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsa"
        self._cds_pending = (tmp, final)
        return [f"-XX:ArchiveClassesAtExit={tmp}"]

    def _finish_cds(self, clean: bool) -> None:
        if self._cds_pending is None:
            return
        tmp, final = self._cds_pending
        self._cds_pending = None
        if clean and tmp.is_file() and tmp.stat().st_size > 0 and not final.exists():
            os.replace(tmp, final)
        else:
            tmp.unlink(missing_ok=True)

    def _launch(self, java_home: Path, libs: Path) -> None:
        data = self._data()
        cmd = [
            str(java_home / "bin" / "java"),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *self._cds_options(java_home),
            *os.environ.get("KAFKA_JVM_OPTS", "").split(),
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={data / APP_LOGS}",
            # Kafka's own shutdown hook logs the clean shutdown; log4j's must not close first
            "-Dlog4j2.shutdownHookEnabled=false",
            "kafka.Kafka",
            str(data / "server.properties"),
        ]
        with (data / STDOUT_LOG).open("ab") as out:
            out.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(java_home),
                cwd=data,
                start_new_session=True,  # Ctrl-C in the terminal goes to us, not the JVM
            )
        self.pid = self._proc.pid
        if self.die_with_parent:
            self._watchdog = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG,
                    str(os.getpid()),
                    str(self.pid),
                    "20",
                    str(self.data_dir) if self._owns_data_dir else "",
                ],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        admin = self._probe_admin()
        while True:
            if not self.is_running():
                text = _tail(self.stdout_file, 200) + "\n" + _tail(self.log_file, 200)
                if any(marker in text for marker in BIND_ERRORS):
                    raise _PortInUse(
                        f"port in use: {self.port}/{self.controller_port}/{self.sasl_port}"
                    )
                code = self._proc.returncode if self._proc is not None else "?"
                raise BrokerError(f"Kafka broker exited with code {code}\n{self.log_tail()}")
            if self._metadata_ok(min(2.0, max(0.1, deadline - time.monotonic())), admin):
                self._warm_group_coordinator(min(deadline, time.monotonic() + 15))
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"Kafka broker not ready after {timeout:.0f}s on {self.bootstrap_servers}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def _probe_admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "log_level": 0,  # silence "connection refused" noise while waiting
                "socket.connection.setup.timeout.ms": 1000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
            }
        )

    def _metadata_ok(self, timeout: float, admin: Any = None) -> bool:
        from confluent_kafka import KafkaException

        admin = admin if admin is not None else self._probe_admin()
        try:
            md = admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        if NODE_ID not in md.brokers:
            return False
        # Another process may have grabbed the port we released: check it is our cluster.
        return self.cluster_id is None or md.cluster_id == self.cluster_id

    def _warm_group_coordinator(self, deadline: float) -> None:
        """Fetch a committed offset once, so __consumer_offsets exists and is loaded before
        the first test's consumer joins (else librdkafka backs off ~3 s on
        COORDINATOR_NOT_AVAILABLE).  Best effort: failures here are not startup failures.

        A Consumer, not ``AdminClient.list_consumer_group_offsets``: the latter segfaults in
        librdkafka (<= 2.16 at least) when the coordinator answers NOT_COORDINATOR / is
        loading (librdkafka issue #5040), which is exactly the state right after startup.
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        probe = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": "__local-kafka-warmup",
                "log_level": 0,
                "enable.auto.commit": False,
            }
        )
        try:
            while time.monotonic() < deadline:
                try:
                    probe.committed([TopicPartition("__local-kafka-warmup", 0)], timeout=5)
                    return
                except KafkaException:
                    time.sleep(0.2)
        finally:
            probe.close()

    def _upsert_scram_users(self) -> None:
        """On a resumed data dir, (re)set SCRAM credentials (format-time ones were skipped)."""
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        # one request per mechanism: a user may appear only once per request
        for mech in self.sasl_mechanisms:
            if not mech.startswith("SCRAM-"):
                continue
            info = ScramCredentialInfo(ScramMechanism[mech.replace("-", "_")], SCRAM_ITERATIONS)
            alterations = [
                UserScramCredentialUpsertion(name, info, password.encode())
                for name, password in self.users.items()
            ]
            for fut in admin.alter_user_scram_credentials(alterations).values():
                fut.result(timeout=30)

    def _terminate(self, *, hard: bool, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        pid = self.pid
        if pid is None or not self.is_running():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # in case it was paused
            self.paused = False
            os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.is_running():
            raise BrokerError(f"broker pid {pid} did not exit")
        self._reap()

    def _reap(self) -> None:
        clean = False
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            # 143 = the JVM's exit after a handled SIGTERM (its shutdown hooks ran)
            clean = self._proc.returncode in (0, 143, -signal.SIGTERM)
        self._finish_cds(clean)
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def _server_properties(self) -> str:
        data = self._data()
        listeners = [
            f"{PLAINTEXT}://127.0.0.1:{self.port}",
            f"{CONTROLLER}://127.0.0.1:{self.controller_port}",
        ]
        advertised = [f"{PLAINTEXT}://127.0.0.1:{self.port}"]
        protocol_map = [f"{CONTROLLER}:PLAINTEXT", f"{PLAINTEXT}:PLAINTEXT"]
        if self.sasl_enabled:
            listeners.append(f"{SASL_LISTENER}://127.0.0.1:{self.sasl_port}")
            advertised.append(f"{SASL_LISTENER}://127.0.0.1:{self.sasl_port}")
            protocol_map.append(f"{SASL_LISTENER}:SASL_PLAINTEXT")
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": CONTROLLER,
            "inter.broker.listener.name": PLAINTEXT,
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(data / LOG_DIRS),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # after a kill -9, the restarted broker cannot register until its previous
            # session expires (DUPLICATE_BROKER_REGISTRATION): keep that short (default 9 s)
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # classic protocol: allow short session timeouts (tests use 6000)
            "group.min.session.timeout.ms": "1000",
            # KIP-848 (group.protocol=consumer): short defaults too
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "delete.topic.enable": "true",
            "log.retention.check.interval.ms": "10000",
            "log.initial.task.delay.ms": "1000",
            "log.segment.delete.delay.ms": "1000",
            "file.delete.delay.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
        }
        if self.max_message_bytes:
            size = int(self.max_message_bytes)
            props["message.max.bytes"] = str(size)
            props["replica.fetch.max.bytes"] = str(size)
            props["replica.fetch.response.max.bytes"] = str(max(size, 10 * 1024 * 1024))
            props["socket.request.max.bytes"] = str(max(size + 1024 * 1024, 104857600))
        if self.sasl_enabled:
            prefix = f"listener.name.{SASL_LISTENER.lower()}"
            props[f"{prefix}.sasl.enabled.mechanisms"] = ",".join(self.sasl_mechanisms)
            for mech in self.sasl_mechanisms:
                if mech == "PLAIN":
                    users = " ".join(f'user_{n}="{p}"' for n, p in self.users.items())
                    props[f"{prefix}.plain.sasl.jaas.config"] = (
                        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
                    )
                else:
                    props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    )
        if self.authorizer:
            props["authorizer.class.name"] = (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            )
            supers = ["User:ANONYMOUS", *(f"User:{u}" for u in self.super_users)]
            props["super.users"] = ";".join(supers)
            props["allow.everyone.if.no.acl.found"] = str(self.allow_everyone_if_no_acl).lower()
        props.update(self.extra_properties)
        lines = ["# written by deploy/local/kafka/broker.py: edits are overwritten on start"]
        lines += [f"{key}={_prop_escape(value)}" for key, value in props.items()]
        return "\n".join(lines) + "\n"


class _PortInUse(BrokerError):
    pass


LOG4J2_PROPERTIES = """\
# written by deploy/local/kafka/broker.py
status = warn
name = local-kafka

appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
appender.out.filter.threshold.type = ThresholdFilter
appender.out.filter.threshold.level = WARN

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
rootLogger.appenderRef.out.ref = STDOUT

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker.py",
        description="Run a real single-node Apache Kafka broker (KRaft) on 127.0.0.1.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="start|stop|status|fetch")
    state_help = f"state file (default {DEFAULT_STATE_FILE})"

    start = sub.add_parser("start", help="start a broker in the background, print bootstrap")
    start.add_argument("--port", type=int, default=0, help="PLAINTEXT port (default: free)")
    start.add_argument("--controller-port", type=int, default=0, help="default: free")
    start.add_argument("--data-dir", help="data dir (default: a new temp dir, deleted on stop)")
    start.add_argument("--sasl-port", type=int, help="add a SASL_PLAINTEXT listener (0 = free)")
    start.add_argument(
        "--sasl-mechanism",
        action="append",
        metavar="PLAIN|SCRAM-SHA-256|SCRAM-SHA-512",
        help="repeatable or comma separated (default PLAIN)",
    )
    start.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD", help="SASL user"
    )
    start.add_argument("--authorizer", action="store_true", help="enable StandardAuthorizer")
    start.add_argument(
        "--super-user", action="append", default=[], metavar="NAME", help="with --authorizer"
    )
    start.add_argument(
        "--deny-if-no-acl",
        action="store_true",
        help="with --authorizer: allow.everyone.if.no.acl.found=false",
    )
    start.add_argument("--max-message-bytes", type=int, help="message.max.bytes and friends")
    start.add_argument("--auto-create-topics", action="store_true")
    start.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE", help="extra broker prop"
    )
    start.add_argument("--heap", default="512m", help="JVM -Xmx/-Xms (default 512m)")
    start.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT)
    start.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help=state_help)

    stop = sub.add_parser("stop", help="stop the broker of the state file")
    stop.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help=state_help)
    stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT)
    stop.add_argument("--keep-data", action="store_true", help="keep a temp data dir")

    sub.add_parser("fetch", help="fetch the broker jars from Maven Central (once), print their dir")
    status = sub.add_parser("status", help="exit 0 if running and reachable")
    status.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE, help=state_help)
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    return parser


def _cmd_start(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    state_file: Path = args.state_file.resolve()
    previous = _read_state(state_file)
    if previous and previous.get("data_dir"):
        handle = LocalKafka.from_state(previous)
        if handle.is_running():
            if handle.is_reachable(10):
                print(handle.bootstrap_servers)
                print(f"already running (pid {handle.pid}, state {state_file})", file=sys.stderr)
                return 0
            print(f"broker pid {handle.pid} is running but not reachable", file=sys.stderr)
            return 1
        if handle._owns_data_dir and handle.data_dir and not args.data_dir:
            shutil.rmtree(handle.data_dir, ignore_errors=True)  # stale temp dir
    if args.sasl_port is None and (args.user or args.sasl_mechanism):
        parser.error("--user/--sasl-mechanism need --sasl-port (0 = a free port)")
    if args.super_user and not args.authorizer:
        parser.error("--super-user needs --authorizer")
    try:
        users = [parse_user(u) for u in args.user]
        extra = {}
        for item in args.property:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--property {item!r}: expected KEY=VALUE")
            extra[key.strip()] = value
        kafka = LocalKafka(
            port=args.port or None,
            controller_port=args.controller_port or None,
            data_dir=args.data_dir,
            sasl_port=args.sasl_port,
            sasl_mechanisms=args.sasl_mechanism or "PLAIN",
            users=users,
            authorizer=args.authorizer,
            super_users=args.super_user,
            allow_everyone_if_no_acl=not args.deny_if_no_acl,
            max_message_bytes=args.max_message_bytes,
            auto_create_topics=args.auto_create_topics,
            extra_properties=extra,
            heap=args.heap,
            die_with_parent=False,  # the broker outlives this command
            startup_timeout=args.timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))
    kafka.record_cds = False  # this process exits now: it cannot see the JVM's exit
    started = time.monotonic()
    try:
        kafka.start()
    except BaseException:
        kafka.close()  # deletes a temp data dir it created
        raise
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state = kafka.state()
    state["started_at"] = time.time()
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_file)
    print(kafka.bootstrap_servers)
    info = f"Kafka ready in {time.monotonic() - started:.1f}s: {kafka.bootstrap_servers}"
    if kafka.sasl_bootstrap_servers:
        info += f", SASL {kafka.sasl_bootstrap_servers} ({','.join(kafka.sasl_mechanisms)})"
    print(f"{info}; pid {kafka.pid}; data {kafka.data_dir}; state {state_file}", file=sys.stderr)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state_file: Path = args.state_file.resolve()
    state = _read_state(state_file)
    if state is None or not state.get("data_dir"):
        print(f"no broker state in {state_file}: nothing to stop", file=sys.stderr)
        return 0
    handle = LocalKafka.from_state(state)
    was_running = handle.is_running()
    handle.stop(timeout=args.timeout)
    if handle._owns_data_dir and handle.data_dir and not args.keep_data:
        shutil.rmtree(handle.data_dir, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    print(f"stopped (pid {handle.pid})" if was_running else "was not running", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_file: Path = args.state_file.resolve()
    state = _read_state(state_file)
    if state is None or not state.get("data_dir"):
        print(f"not running (no state in {state_file})", file=sys.stderr)
        return 3
    handle = LocalKafka.from_state(state)
    running = handle.is_running()
    reachable = running and handle.is_reachable(5)
    if args.json:
        print(json.dumps({**state, "running": running, "reachable": reachable}, indent=2))
    if reachable:
        if not args.json:
            print(handle.bootstrap_servers)
        print(f"running, pid {handle.pid}, data {handle.data_dir}", file=sys.stderr)
        return 0
    what = "running but not reachable" if running else "not running (stale state)"
    print(f"{what}: pid {handle.pid}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            return _cmd_start(args, parser)
        if args.command == "stop":
            return _cmd_stop(args)
        if args.command == "fetch":
            print(ensure_jars())
            return 0
        return _cmd_status(args)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
