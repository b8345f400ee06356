"""The root `bollard` command: registers every command group and turns errors into one line."""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
import typer
from rich.text import Text
from typer.core import TyperGroup

from bollard import __version__
from bollard.cli import (
    agent_cmd,
    command_cmd,
    events_cmd,
    fleet_cmd,
    node_cmd,
    reconcile_cmd,
    server_cmd,
    settings_cmd,
    status_cmd,
    task_cmd,
    up_cmd,
    vm_cmd,
)
from bollard.cli.client import CliError
from bollard.cli.output import err_console
from bollard.cli.sim_cmd import sim_app

# Errors that are the user's or the environment's, not a bug: one line, exit 1.
# (Set BOLLARD_DEBUG=1 to see the traceback instead.)
_REPORTED = (CliError, httpx.HTTPError, OSError)


def error_line(exc: BaseException) -> str:
    if isinstance(exc, CliError):
        return exc.message
    if isinstance(exc, httpx.HTTPError):
        return f"HTTP error: {exc}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def report(exc: BaseException) -> None:
    message = " ".join(error_line(exc).split()) or type(exc).__name__
    err_console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)


class BollardGroup(TyperGroup):
    """Root group: any reported error from any subcommand becomes ``error: ...`` on stderr."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _REPORTED as exc:
            if os.environ.get("BOLLARD_DEBUG"):
                raise
            report(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="bollard",
    cls=BollardGroup,
    help="Bollard: a virtual-machine cluster manager. "
    "Start a local cluster with `bollard up`, then try `bollard status`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bollard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Bollard: a virtual-machine cluster manager."""


up_cmd.register(app)  # up, down
status_cmd.register(app)
node_cmd.register(app)
vm_cmd.register(app)
task_cmd.register(app)
command_cmd.register(app)
settings_cmd.register(app)
events_cmd.register(app)
reconcile_cmd.register(app)
app.add_typer(sim_app, name="sim")
server_cmd.register(app)  # server, db
agent_cmd.register(app)
fleet_cmd.register(app)


def main() -> None:
    """Console-script entry point (``bollard = bollard.cli.main:main``)."""
    try:
        app(prog_name="bollard")
    except _REPORTED as exc:  # raised outside any subcommand (parsing, callbacks)
        if os.environ.get("BOLLARD_DEBUG"):
            raise
        report(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
