"""Start and stop the sandbox: in the current event loop, or on its own loop in a thread.

``SandboxServer`` keeps its ``SandboxState`` across ``stop()``/``start()``: a restart on the
same port is an outage (connection refused while down), not a fresh AEP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from worker.sandbox.app import build_app
from worker.sandbox.config import SandboxConfig
from worker.sandbox.state import SandboxState

T = TypeVar("T")


class SandboxServer:
    def __init__(
        self, config: SandboxConfig | None = None, *, state: SandboxState | None = None
    ) -> None:
        self.state = state or SandboxState(config or SandboxConfig())
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: a free port); return the base URL."""
        if self._runner is not None:
            raise RuntimeError("sandbox already running")
        runner = web.AppRunner(
            build_app(self.state),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = _bound_port(runner, port)
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close every connection (state is kept)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        await self.stop()
        self.state.close()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


class SandboxThread:
    """A ``SandboxServer`` on its own event loop in a daemon thread, with a blocking API.

    For pytest fixtures and the ``make run`` demo. ``start()`` after ``stop()`` binds the same
    port again.
    """

    def __init__(
        self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.server = SandboxServer(config)
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="aep-sandbox", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def state(self) -> SandboxState:
        return self.server.state

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def running(self) -> bool:
        return self.server.running

    def start(self) -> str:
        url = self._call(self.server.start(self.host, self.port))
        self.port = self.server.port
        return url

    def stop(self) -> None:
        if self._loop.is_running():
            self._call(self.server.stop())

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self.server.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def run_in_thread(
    config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> SandboxThread:
    """Start a sandbox in a background thread.

    The result has ``.base_url``, ``.stop()``, ``.start()`` (same port) and ``.close()``.
    """
    sandbox = SandboxThread(config, host, port)
    try:
        sandbox.start()
    except BaseException:
        sandbox.close()
        raise
    return sandbox


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
