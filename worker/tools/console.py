"""Output of the operator tools: rich tables for people, JSON for scripts, progress on stderr.

Tables and results go to stdout; progress bars, warnings and notes to stderr, so
``... --json | jq`` sees only the JSON document. Progress bars show only on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


class Output:
    def __init__(self, json_output: bool = False) -> None:
        self.json = json_output
        self.out = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def emit_json(self, doc: Any) -> None:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        sys.stdout.flush()

    def table(
        self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
        *, numeric: Iterable[str] = (),
    ) -> None:
        right = set(numeric)
        table = Table(title=title, title_justify="left", show_lines=False)
        for col in columns:
            table.add_column(col, justify="right" if col in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*("-" if v is None else str(v) for v in row))
        self.out.print(table)

    def note(self, text: str) -> None:
        """A remark for the operator, on stderr (never mixed into JSON)."""
        self.err.print(text, highlight=False, markup=False)

    def line(self, text: str) -> None:
        self.out.print(text, highlight=False, markup=False)

    def progress(self, description: str, total: int | None) -> Progress:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            disable=not self.err.is_terminal,
            transient=False,
        )
        progress.add_task(description, total=total)
        return progress
