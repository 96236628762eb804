"""Chaos suite fixtures: the sizes (short by default, full with ``CHAOS_FULL=1``), a scenario
factory, and the report printed at the end of the run (and written to ``CHAOS_REPORT``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import report
from tests.chaos.scenario import Scenario
from tests.chaos.sizes import Sizes, select
from tests.fixtures.kafka import KafkaNames

SIZES = select(False)


@pytest.fixture
def sizes() -> Sizes:
    return SIZES


@pytest.fixture
def scenario(
    kafka_bootstrap: str, kafka_names: KafkaNames, tmp_path: Path
) -> Iterator[Callable[..., Scenario]]:
    """``scenario(name, sandbox, partitions=3, topic_config=None)`` -> a :class:`Scenario`."""
    made: list[Scenario] = []

    def make(name: str, sandbox: Any, **kwargs: Any) -> Scenario:
        s = Scenario(
            name, bootstrap=kafka_bootstrap, sandbox=sandbox, names=kafka_names,
            log_dir=tmp_path, **kwargs,
        )
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not report.RESULTS:
        return
    terminalreporter.section(f"chaos scenarios ({SIZES.name} sizes)")
    for line in report.lines():
        terminalreporter.write_line(line)
    target = os.environ.get("CHAOS_REPORT")
    if target:
        report.write(Path(target), SIZES)
        terminalreporter.write_line(f"report table written to {target}")
