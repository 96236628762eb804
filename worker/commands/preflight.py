"""``capillary-aep preflight``: check a configuration against AEP before streaming.

Loads the same configuration as ``run`` (``--config``, ``CAPILLARY_AEP_*``) and checks IMS
credentials, every inlet (a probe that cannot ingest), every route's dataset in Catalog and
its schema, the schema in the Schema Registry, and the local XDM schema against the
registry's (``worker.preflight``). Exit 0 when every check passes, 1 when any fails, 2 when
the configuration itself is invalid. Secrets are never printed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from worker.config import ConfigError, Settings, load_settings
from worker.preflight import Check, Preflight, failed

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_CONFIG = 2


async def run_preflight(settings: Settings) -> list[Check]:
    """Every check, once. Raises ConfigError when routes or schemas cannot be built."""
    from worker.mapping import DEFAULT_FAMILIES, MAPPERS
    from worker.routing import RoutingError, build_routes
    from worker.schemas import SchemaLoadError, SchemaStore

    try:
        schemas = SchemaStore(user_xdm=settings.xdm.schemas_dir)
        targets, _ = build_routes(settings, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
    except (SchemaLoadError, RoutingError) as exc:
        raise ConfigError(str(exc)) from None
    preflight = Preflight(settings, targets, schemas)
    try:
        return await preflight.run()
    finally:
        await preflight.close()


def render(checks: list[Check], json_output: bool, *, err: bool = False) -> None:
    from worker.tools.console import Output

    out = Output(json_output)
    bad = failed(checks)
    if json_output:
        out.emit_json({"ok": not bad, "problems": len(bad),
                       "checks": [c.to_json() for c in checks]})
        return
    rows = [
        (c.check, c.subject, {"ok": "ok", "fail": "FAIL", "skip": "skip"}[c.status],
         c.problem or "-", c.detail)
        for c in checks
    ]
    if err:
        out.out = out.err
    out.table("preflight", ("check", "subject", "result", "problem", "detail"), rows)
    summary = (
        "preflight: all checks passed" if not bad
        else f"preflight: {len(bad)} problem(s): " + "; ".join(
            f"{c.problem} ({c.subject})" for c in bad
        )
    )
    (out.note if err else out.line)(summary)


@click.command("preflight")
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file; CAPILLARY_AEP_* environment variables override it.",
)
@click.option("--json", "json_output", is_flag=True, help="One JSON document on stdout.")
def preflight_command(config_file: Path | None, json_output: bool) -> None:
    """Check IMS credentials, inlets, datasets and schemas against AEP (nothing is sent)."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"capillary-aep preflight: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    from worker.logs import configure

    configure("error")  # the table is the output; token refresh logs would only clutter it
    try:
        checks = asyncio.run(run_preflight(settings))
    except ConfigError as exc:
        click.echo(f"capillary-aep preflight: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    render(checks, json_output)
    sys.exit(EXIT_PROBLEMS if failed(checks) else EXIT_OK)
