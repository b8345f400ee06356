"""Shared output helpers: `-o table|json`, tables, one-line errors (usage errors too)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
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


# -- names --------------------------------------------------------------------------------
# The API's rule for the names of VMs and nodes (`Name` in server/api/schemas.py). The CLI
# checks it before any request: a name outside it would not only be refused, it could name
# another path ("a/b", "..", "" or "x?y" in a URL).
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
NAME_HINT = "names are 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


class BadName(typer.BadParameter):
    """A name outside the rule (its message says so; no "invalid value for ..." before it)."""


def name_check(kind: str) -> Callable[[str | None], str | None]:
    """A typer callback refusing a ``kind`` name (e.g. "VM") outside the rule: a usage error
    (exit code 2) before any request."""

    def check(value: str | None) -> str | None:
        if value is None or NAME_RULE.fullmatch(value):
            return value
        raise BadName(f"{value!r} is not a valid {kind} name: {NAME_HINT}")

    return check


# -- usage errors -------------------------------------------------------------------------
# Typer (click) reports a usage error as a box of several lines; the CLI prints one line:
# what was wrong, then where to read more. The error types are told apart by their
# attributes (`param`, `option_name`, ...), the way typer itself does, so that no private
# module of typer is imported.


def usage_error_line(exc: Exception, command_path: str = "bollard") -> str:
    """A usage error (missing argument, bad option value, unknown option or command) as one
    line: ``missing argument NAME (see `bollard vm create --help`)``. ``command_path`` is
    the command's when the error does not know it (errors of the option parser)."""
    kind, message = type(exc).__name__, str(getattr(exc, "message", None) or exc)
    param = getattr(exc, "param", None)
    option = getattr(exc, "option_name", None)
    if isinstance(exc, BadName):
        what = exc.message
    elif kind == "MissingParameter" and param is not None:
        what = f"missing {getattr(param, 'param_type_name', 'parameter')} {param_label(param)}"
    elif param is not None:
        what = f"invalid value for {param_label(param)}: {bad_value(exc)}"
    elif option and kind == "NoSuchOption":
        what = f"no such option {option}"
        maybe = sorted(getattr(exc, "possibilities", None) or [])
        if maybe:
            what += f"; did you mean {' or '.join(maybe)}?"
    elif option and "requires" in message:  # an option given without its value(s)
        what = f"option {option} needs a value"
    elif message.startswith("Got unexpected extra argument"):
        extra = message.split(") (", 1)[-1].rstrip(")")  # "Got ... argument(s) (a b)"
        what = f"unexpected extra argument(s): {extra}"
    else:
        what = sentence(message)
    path = getattr(getattr(exc, "ctx", None), "command_path", None) or command_path
    return f"{what} (see `{path} --help`)"


def param_label(param: Any) -> str:
    """``--vcpus`` for an option, ``NAME`` for an argument."""
    opts = [o for o in getattr(param, "opts", None) or [] if o.startswith("--")]
    if getattr(param, "param_type_name", "") == "option" and (opts or param.opts):
        return str((opts or param.opts)[0])
    return str(getattr(param, "name", None) or "value").upper()


def bad_value(exc: Exception) -> str:
    """Why a value was refused, in plain words (never the validation library's phrasing)."""
    from pydantic import ValidationError  # here: a read would not need it (issue 24)

    cause = exc.__cause__
    if not isinstance(cause, ValidationError) or not cause.errors():
        return sentence(str(getattr(exc, "message", None) or exc))
    err = cause.errors(include_url=False)[0]
    kind, given, limits = err["type"], err.get("input"), err.get("ctx") or {}
    shown = repr(given) if isinstance(given, str) else str(given)
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{shown} is not a number"
    if kind == "finite_number":
        return f"{shown} is not a finite number"
    if kind == "bool_parsing":
        return f"{shown} is not true or false"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{given} is out of range: it must be {words} {limits.get(key)}"
    message = str(err.get("msg") or kind).removeprefix("Value error, ")
    message = message.replace("Input should be", "it should be")
    return sentence(message)


def sentence(text: str) -> str:
    """A message as part of one line: flat, no capital first, no final full stop."""
    flat = " ".join(text.split()).rstrip(".").replace(". Did you mean", "; did you mean")
    if flat[:1].isupper() and not flat[1:2].isupper():
        flat = flat[0].lower() + flat[1:]
    return flat
