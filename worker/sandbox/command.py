"""``capillary-aep sandbox``: run the AEP sandbox (IMS + DCS emulation) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import click
import orjson

from worker.sandbox.config import SandboxConfig, SandboxConfigError
from worker.sandbox.faults import FaultConfigError
from worker.sandbox.server import SandboxServer

DEFAULT_PORT = 8765


def build_config(
    config_file: Path | None,
    store: str | None,
    token_lifetime: float | None,
    max_records: int | None,
    seed: int | None,
    faults_json: str | None,
    fault_flags: dict[str, float | None],
) -> SandboxConfig:
    config = SandboxConfig.from_file(config_file) if config_file else SandboxConfig()
    overrides: dict[str, Any] = {}
    if store is not None:
        overrides["store"] = store
    if token_lifetime is not None:
        overrides["token_lifetime_s"] = token_lifetime
    if max_records is not None:
        overrides["max_records_per_dataset"] = max_records
    if overrides:
        config = config.with_overrides(overrides)
    patch: dict[str, Any] = {}
    if faults_json:
        text = Path(faults_json[1:]).read_text() if faults_json.startswith("@") else faults_json
        try:
            loaded = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise SandboxConfigError(f"--faults is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise SandboxConfigError("--faults must be a JSON object")
        patch.update(loaded)
    patch.update({k: v for k, v in fault_flags.items() if v is not None})
    if seed is not None:
        patch["seed"] = seed
    if patch:
        config = config.with_overrides({"faults": config.faults.merged(patch)})
    return config


async def _serve(config: SandboxConfig, host: str, port: int, ready_file: Path | None) -> None:
    server = SandboxServer(config)
    base = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    client = config.ims_clients[0] if config.ims_clients else None
    click.echo(f"AEP sandbox listening on {base}")
    click.echo(f"  IMS token (v3):   {base}/ims/token/v3")
    click.echo(f"  IMS token (old):  {base}/ims/token")
    for inlet in config.inlets:
        auth = "token required" if inlet.auth_required else "no auth"
        click.echo(f"  inlet {inlet.id:<16} {base}/collection/{inlet.id}  ({auth})")
    if client is not None:
        click.echo(f"  client_id={client.client_id}  org={config.org_id}")
    click.echo(f"  admin:            {base}/sandbox/stats  (store: {config.store})", nl=True)
    if ready_file is not None:
        await asyncio.to_thread(ready_file.write_text, base + "\n")
    try:
        await stop.wait()
    finally:
        await server.close()
        click.echo("AEP sandbox stopped")


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="0 picks a free port"
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML or JSON sandbox settings (see worker/sandbox/README.md)",
)
@click.option("--store", default=None, help="memory | count | jsonl:PATH  [default: memory]")
@click.option(
    "--token-lifetime",
    type=float,
    default=None,
    help="IMS token lifetime in seconds [default: 86399]",
)
@click.option(
    "--max-records",
    type=int,
    default=None,
    help="records kept in memory per dataset [default: 100000]",
)
@click.option("--seed", type=int, default=None, help="random seed for the fault shares")
@click.option(
    "--faults",
    "faults_json",
    default=None,
    help="fault settings as JSON, or @FILE (the POST /sandbox/faults shape)",
)
@click.option("--share-429", type=float, default=None, help="share of DCS requests answered 429")
@click.option("--share-500", type=float, default=None, help="share answered 500")
@click.option("--share-503", type=float, default=None, help="share answered 503")
@click.option("--reset-share", type=float, default=None, help="share of connections reset")
@click.option("--latency-ms", type=float, default=None, help="added latency per DCS request")
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="write the base URL here once listening",
)
def sandbox_command(
    host: str,
    port: int,
    config_file: Path | None,
    store: str | None,
    token_lifetime: float | None,
    max_records: int | None,
    seed: int | None,
    faults_json: str | None,
    share_429: float | None,
    share_500: float | None,
    share_503: float | None,
    reset_share: float | None,
    latency_ms: float | None,
    ready_file: Path | None,
) -> None:
    """Run a local AEP sandbox: IMS tokens, DCS inlets (capillary-inlet, open-inlet), XDM
    validation, 207 results, stored records and fault injection."""
    try:
        config = build_config(
            config_file,
            store,
            token_lifetime,
            max_records,
            seed,
            faults_json,
            {
                "share_429": share_429,
                "share_500": share_500,
                "share_503": share_503,
                "reset_share": reset_share,
                "latency_ms": latency_ms,
            },
        )
    except (SandboxConfigError, FaultConfigError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    asyncio.run(_serve(config, host, port, ready_file))
