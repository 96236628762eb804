"""``capillary-aep run``: the production entry point; ``--dry-run`` transforms without sending."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import BinaryIO

import click
import orjson

from worker import gc_policy
from worker.config import ConfigError, Settings, load_settings
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
        "filtered_by_reason": m.by_label(m.filtered, "reason"),
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
@click.option(
    "--dry-run", is_flag=True,
    help="Consume under a throwaway group, transform and validate, write the XDM (one JSON "
    "line per message, dead letter or filtered record); never send, never commit.",
)
@click.option(
    "--output", "-o", "output", type=click.Path(path_type=Path, dir_okay=False),
    help="--dry-run: write to this file instead of stdout.",
)
@click.option("--max-records", type=click.IntRange(min=1),
              help="--dry-run: stop after this many records.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="--dry-run from the latest offsets: stop after this long without a record.")
@click.option("--show-pii", is_flag=True,
              help="--dry-run: print the messages byte for byte (emails and phones unmasked).")
@click.option("--preflight", "preflight", is_flag=True,
              help="Run the preflight checks first; stop without streaming if any fails.")
def run_command(
    config_file: Path | None, reset_dlq_guard: bool, exit_when_drained: bool, print_summary: bool,
    dry_run: bool, output: Path | None, max_records: int | None, idle_timeout: float,
    show_pii: bool, preflight: bool = False,
) -> None:
    """Consume Capillary events from Kafka and stream them to AEP."""
    if not dry_run and (output or max_records or show_pii):
        raise click.UsageError("--output, --max-records and --show-pii need --dry-run")
    if dry_run and (reset_dlq_guard or exit_when_drained):
        raise click.UsageError("--dry-run cannot be combined with --reset-dlq-guard or "
                               "--exit-when-drained")
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"capillary-aep run: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    configure(settings.log_level)
    if dry_run:
        sys.exit(_dry_run(settings, output, max_records, idle_timeout, show_pii))
    if preflight:
        _preflight_or_exit(settings)
    gc_policy.tune()
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


def _preflight_or_exit(settings: Settings) -> None:
    """``--preflight``: every check once; on any problem the table goes to stderr and the
    worker exits 2 (configuration) without consuming anything."""
    from worker.commands.preflight import render, run_preflight
    from worker.preflight import failed

    try:
        checks = asyncio.run(run_preflight(settings))
    except ConfigError as exc:
        click.echo(f"capillary-aep run: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    problems = failed(checks)
    if problems:
        render(checks, json_output=False, err=True)
        get_logger("worker").error(
            "preflight_failed", problems=[f"{c.problem}: {c.subject}" for c in problems]
        )
        click.echo(
            "capillary-aep run: preflight failed: "
            + "; ".join(f"{c.problem} ({c.subject})" for c in problems),
            err=True,
        )
        sys.exit(EXIT_CONFIG)
    get_logger("worker").info("preflight_passed", checks=len(checks))


def _dry_run(
    settings: Settings, output: Path | None, max_records: int | None, idle_timeout: float,
    show_pii: bool,
) -> int:
    """Exit code: 0 all would be sent or filtered; 1 some would be dead-lettered; 2 config."""
    from confluent_kafka import KafkaException

    from worker.dry_run import DryRun, consume_topics
    from worker.routing import RoutingError
    from worker.schemas import SchemaLoadError

    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    with contextlib.ExitStack() as stack:
        out: BinaryIO = (
            stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
        )
        try:
            dry = DryRun(settings, out, show_pii=show_pii)
        except (SchemaLoadError, RoutingError) as exc:
            click.echo(f"capillary-aep run --dry-run: {exc}", err=True)
            return EXIT_CONFIG
        previous = signal.signal(signal.SIGINT, stop)
        try:
            consume_topics(
                settings, dry, max_records=max_records, idle_timeout_s=idle_timeout,
                should_stop=lambda: stopping,
            )
        except KafkaException as exc:
            click.echo(f"capillary-aep run --dry-run: Kafka: {exc}", err=True)
            return EXIT_CONFIG
        finally:
            signal.signal(signal.SIGINT, previous)
            out.flush()
    click.echo(dry.summary.line(), err=True)
    return 0 if dry.summary.ok else 1
