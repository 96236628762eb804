"""Command line: ``capillary-aep <command>`` (also ``python -m worker``).

Each command lives in its own module and is imported only when used, so ``--help`` is fast
and a broken optional command cannot take the others down.
"""

from __future__ import annotations

import importlib

import click

from worker import __version__

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "run": "worker.commands.run:run_command",
    "sandbox": "worker.sandbox.command:sandbox_command",
    "produce-samples": "worker.tools.samples:produce_samples_command",
    "check-schemas": "worker.commands.check_schemas:check_schemas_command",
    "replay": "worker.tools.replay:replay_command",
    "dlq": "worker.tools.dlq.command:dlq_group",
    "transform": "worker.commands.transform:transform_command",
    "preflight": "worker.commands.preflight:preflight_command",
    "trace": "worker.tools.trace:trace_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capillary-aep")
def main() -> None:
    """Stream Capillary loyalty events from Kafka into Adobe Experience Platform."""
