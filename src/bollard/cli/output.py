"""Shared output helpers: `-o table|json`, tables, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Not on a terminal (pipes, tests, CI), Rich would wrap at 80 columns and cut table cells.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class Output(StrEnum):
    table = "table"
    json = "json"


OUTPUT_OPTION = typer.Option(
    Output.table, "--output", "-o", help="Output format: table (for people) or json (for tools)."
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    console.print(table)


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in fields), default=0)
    for key, value in fields:
        # Values are plain text: no Rich markup or emoji codes (":ab:" in a MAC address).
        shown = "-" if value is None else str(value)
        console.print(Text.assemble((key.ljust(width), "bold"), "  ", shown))


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit; never a traceback."""
    err_console.print(
        Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)
