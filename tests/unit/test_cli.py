"""The command line: usage errors exit non-zero, check-schemas passes on the shipped schemas."""

from __future__ import annotations

from click.testing import CliRunner

from worker.cli import main


def test_unknown_command_prints_usage_and_fails() -> None:
    result = CliRunner().invoke(main, ["bogus"])
    assert result.exit_code == 2
    assert "Usage" in result.output


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name in ("run", "sandbox", "produce-samples", "check-schemas"):
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_check_schemas_passes_on_shipped_schemas() -> None:
    result = CliRunner().invoke(main, ["check-schemas"])
    assert result.exit_code == 0, result.output
    assert "0 not as expected" in result.output


def test_run_with_bad_config_names_the_setting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAPILLARY_AEP_KAFKA__CONSUME_BATCH_SIZE", "-5")
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2
    assert "kafka.consume_batch_size" in result.output
