"""Options every operator tool shares: the worker's settings, JSON output; and their errors.

The tools read the worker's own configuration (same ``--config`` file, same
``CAPILLARY_AEP_*`` variables), so they reach the same cluster, with the same credentials,
as the worker they operate on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from worker.config import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_REFUSED = 1  # the tool refused or failed; nothing was changed
EXIT_USAGE = 2  # misuse of the command line or a bad configuration


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
        help="The worker's TOML settings; CAPILLARY_AEP_* environment variables override it.",
    )(fn)


def json_option(fn: F) -> F:
    return click.option(
        "--json", "json_output", is_flag=True, help="Print one JSON document (for scripts)."
    )(fn)


def load(config_file: Path | None, command: str) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"capillary-aep {command}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
