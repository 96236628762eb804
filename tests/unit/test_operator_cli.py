"""The operator commands' command line, without a broker: help, and misuse caught up front."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from worker.cli import main

COMMANDS = (
    ["replay"], ["dlq"], ["dlq", "summary"], ["dlq", "show"], ["dlq", "export"],
    ["dlq", "retest"], ["dlq", "redrive"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["replay", "--to-earliest", "--to-offset", "3"], "choose one reset mode"),
        (["replay", "--shift-by", "2", "--from", "PT1H", "--to", "PT1M"], "one or the other"),
        (["replay", "--to-latest", "--rate", "10"], "are for side replays"),
        (["replay", "--from", "PT1H", "--to", "PT1M", "--allow-new-group"], "for resets"),
        (["replay", "--topic", ":1", "--to-latest"], "expected TOPIC"),
        (["dlq", "redrive", "--job", "has space"], "without spaces"),
        (["dlq", "show", "--stage", "nope"], "nope"),
        (["dlq", "export", "--limit", "0"], "0"),
    ],
)
def test_misuse_prints_usage_and_exits_2_before_connecting(args: list[str], says: str) -> None:
    # No broker is reachable here: each of these must fail on the arguments alone.
    env = {"CAPILLARY_AEP_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, (args, result.output)
    assert "Usage:" in result.output and says in result.output
