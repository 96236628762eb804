"""``capillary-aep preflight`` and ``run --preflight`` on the command line, without AEP:
help, and a bad configuration naming the setting (exit 2)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from worker.cli import main


def test_preflight_help_lists_its_options() -> None:
    result = CliRunner().invoke(main, ["preflight", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output and "--config" in result.output
    result = CliRunner().invoke(main, ["run", "--help"])
    assert "--preflight" in result.output


def test_preflight_with_bad_config_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPILLARY_AEP_AEP__SCHEMA_DRIFT_INTERVAL_S", "-1")
    monkeypatch.setenv("CAPILLARY_AEP_AEP__ORG_ID", "X@AdobeOrg")
    result = CliRunner().invoke(main, ["preflight"])
    assert result.exit_code == 2
    assert "aep.schema_drift_interval_s" in result.output


def test_preflight_with_missing_config_file_fails() -> None:
    result = CliRunner().invoke(main, ["preflight", "--config", "/nonexistent/worker.toml"])
    assert result.exit_code == 2
    assert "file not found" in result.output
