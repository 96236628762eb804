"""``capillary-aep run``: the production entry point."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import orjson

from worker.config import ConfigError, load_settings
from worker.logs import configure, get_logger
from worker.runner import EXIT_CONFIG, RunResult, run_worker


def summary(result: RunResult) -> dict[str, object]:
    m = result.metrics
    delivered = m.total(m.delivered)
    return {
        "exit_code": result.exit_code,
        "seconds": round(result.seconds, 2),
        "consumed": m.total(m.consumed),
        "delivered": delivered,
        "delivered_by_target": m.by_label(m.delivered, "target"),
        "dead_lettered": m.total(m.dead_lettered),
        "dead_lettered_by_reason": m.by_label(m.dead_lettered, "error_kind"),
        "filtered": m.total(m.filtered),
        "retries": m.total(m.retries),
        "retries_by_cause": m.by_label(m.retries, "cause"),
        "requests": result.extra.get("deliver_requests", 0),
        "delivered_per_s": round(delivered / result.seconds, 1) if result.seconds else 0,
        "error": result.error,
    }


@click.command("run")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file; CAPILLARY_AEP_* environment variables override it.",
)
@click.option(
    "--reset-dlq-guard", is_flag=True,
    help="Clear a tripped DLQ guard (after fixing its cause) and resume.",
)
@click.option(
    "--exit-when-drained", is_flag=True,
    help="Stop once every assigned partition is consumed to its end and all is delivered.",
)
@click.option("--summary/--no-summary", "print_summary", default=False,
              help="Print a JSON summary (delivered, dead-lettered, retries) at exit.")
def run_command(
    config_file: Path | None, reset_dlq_guard: bool, exit_when_drained: bool, print_summary: bool
) -> None:
    """Consume Capillary events from Kafka and stream them to AEP."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"capillary-aep run: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    configure(settings.log_level)
    result = asyncio.run(
        run_worker(
            settings, reset_dlq_guard=reset_dlq_guard, exit_when_drained=exit_when_drained
        )
    )
    if result.error:
        get_logger("worker").error("worker_stopped", error=result.error, code=result.exit_code)
        click.echo(f"capillary-aep run: {result.error}", err=True)
    if print_summary:
        click.echo(orjson.dumps(summary(result), option=orjson.OPT_INDENT_2).decode())
    sys.exit(result.exit_code)
