"""The root `bollard` command: registers every command group and turns errors into one line."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx
import typer
from rich.text import Text
from typer.core import TyperGroup

from bollard import __version__
from bollard.cli import (
    agent_cmd,
    api_cmd,
    cell_cmd,
    command_cmd,
    db_cmd,
    events_cmd,
    flavor_cmd,
    fleet_cmd,
    ha_cmd,
    migration_cmd,
    node_cmd,
    pool_cmd,
    reconcile_cmd,
    server_cmd,
    servers_cmd,
    settings_cmd,
    status_cmd,
    task_cmd,
    token_cmd,
    up_cmd,
    vm_cmd,
    volume_cmd,
    whoami_cmd,
)
from bollard.cli.client import CliError
from bollard.cli.command_tree import lazy_command
from bollard.cli.node_power_cmd import cluster_app
from bollard.cli.output import err_console, usage_error_line
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


def report_usage(exc: Exception, command_path: str) -> None:
    err_console.print(
        Text.assemble(("error:", "red"), " ", usage_error_line(exc, command_path)),
        highlight=False,
        soft_wrap=True,
    )


def command_path(root: Any, prog_name: str, args: Sequence[str]) -> str:
    """``bollard vm create`` for the arguments ``vm create x --vcpus``: the (sub)commands
    named first in ``args``, for an error that does not say which command it is about."""
    path, command = [prog_name], root
    for token in args:
        if token.startswith("-"):
            continue
        sub = (getattr(command, "commands", None) or {}).get(token)
        if sub is None:
            break
        path.append(token)
        command = sub
    return " ".join(path)


def quiet_broken_pipe() -> NoReturn:
    """Whoever reads our output stopped reading (`bollard vm list | head -1`): stop at once
    and quietly, as Unix tools do (and as Rich does for its tables), exit code 1."""
    # Python flushes stdout once more on exit, which would fail again: send it to /dev/null.
    # (Not possible when stdout is no file, e.g. under a test runner: nothing to flush then.)
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


class BollardGroup(TyperGroup):
    """Root group: any reported error from any subcommand becomes ``error: ...`` on stderr,
    and so does a usage error (one line, exit code 2, instead of typer's box)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_broken_pipe()
        except _REPORTED as exc:
            if os.environ.get("BOLLARD_DEBUG"):
                raise
            report(exc)
            raise typer.Exit(1) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            # Not standalone: typer hands us its errors instead of printing them in a box.
            # It then returns the code of a `typer.Exit`, or what the command returned (None).
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # click's errors: usage errors and the like
            if type(exc).__name__ != "NoArgsIsHelpError":  # (its help is printed already)
                given = sys.argv[1:] if args is None else list(args)
                report_usage(exc, command_path(self, prog_name or "bollard", given))
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print(Text.assemble(("error:", "red"), " aborted"))
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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
servers_cmd.register(cluster_app)  # cluster servers (cluster maintenance: node_power_cmd)
vm_cmd.register(app)
cell_cmd.register(app)  # cells behind an API server
flavor_cmd.register(app)
ha_cmd.register(app)  # ha group, ha rule, ha status
migration_cmd.register(app)
pool_cmd.register(app)
volume_cmd.register(app)  # volume, volume snapshot
task_cmd.register(app)
command_cmd.register(app)
settings_cmd.register(app)
events_cmd.register(app)
reconcile_cmd.register(app)
token_cmd.register(app)  # user, token
whoami_cmd.register(app)
app.add_typer(sim_app, name="sim")
server_cmd.register(app)  # server
db_cmd.register(app)  # db status, db upgrade
api_cmd.register(app)  # api: the API server in front of cells
agent_cmd.register(app)
fleet_cmd.register(app)


def main() -> None:
    """Console-script entry point (``bollard = bollard.cli.main:main``). The command tree is
    made as the arguments need it (command_tree.py), not whole as ``app()`` would."""
    try:
        lazy_command(app)(prog_name="bollard")
    except BrokenPipeError:
        quiet_broken_pipe()
    except _REPORTED as exc:  # raised outside any subcommand (parsing, callbacks)
        if os.environ.get("BOLLARD_DEBUG"):
            raise
        report(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
