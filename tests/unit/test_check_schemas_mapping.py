"""``check-schemas`` also maps every valid fixture to every default target and validates it."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
from click.testing import CliRunner

from worker.cli import main
from worker.mapping import DEFAULT_FAMILIES
from worker.schemas import DEFAULT_ROOT


def test_mapping_rows_are_checked() -> None:
    result = CliRunner().invoke(main, ["check-schemas"])
    assert result.exit_code == 0, result.output
    capillary = list((DEFAULT_ROOT / "capillary" / "fixtures").glob("*/*/*.json"))
    xdm = [p for p in (DEFAULT_ROOT / "xdm" / "fixtures").glob("*/*/*.json")
           if not p.name.startswith("_")]  # fmt: skip
    valid = (DEFAULT_ROOT / "capillary" / "fixtures" / "valid").glob("*/*.json")
    mapped = sum(len(DEFAULT_FAMILIES[p.parent.name]) for p in valid)
    checked = len(capillary) + len(xdm) + mapped
    assert f"{checked} fixtures checked, 0 not as expected" in result.output


def test_a_fixture_that_validates_but_cannot_map_fails_the_check(tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(DEFAULT_ROOT, root)
    path = root / "capillary" / "fixtures" / "valid" / "pointsRedeemed" / "flat.json"
    doc = orjson.loads(path.read_bytes())
    doc["data"]["redemptionFromEarningPrograms"] = None  # valid input, but no balance to map
    path.write_bytes(orjson.dumps(doc))
    result = CliRunner().invoke(
        main, ["check-schemas", "--schemas-dir", str(root)], terminal_width=250
    )
    assert result.exit_code == 1
    assert "mapping/pointsRedeemed" in result.output and "missing-field" in result.output
    assert "1 not as expected" in result.output
