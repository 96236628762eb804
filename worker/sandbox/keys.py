"""Typed keys of the sandbox's aiohttp Application."""

from __future__ import annotations

from aiohttp import web

from worker.sandbox.state import SandboxState

STATE: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)
