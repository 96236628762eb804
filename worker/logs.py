"""structlog set-up: JSON lines via orjson, context from contextvars, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from functools import partial
from typing import Any

import orjson
import structlog

_SECRET_KEYS = re.compile(r"(password|secret|token|authorization|credential)", re.I)
_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]+")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: no log line carries a secret, whatever a caller passed."""
    for key in list(event):
        if _SECRET_KEYS.search(key) and key != "event":
            event[key] = "**********"
        else:
            value = event[key]
            if isinstance(value, str) and "Bearer" in value:
                event[key] = _BEARER.sub("Bearer **********", value)
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", *, json: bool = True) -> None:
    numeric = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def fresh_logger(name: str) -> Callable[[], Any]:
    """``_log = fresh_logger(__name__)``; ``_log().info(...)``: a new proxy per call, never
    cached, so ``structlog.testing.capture_logs`` works even after ``configure``
    (cache_logger_on_first_use) ran in-process."""
    return partial(structlog.get_logger, name)
