"""`bollard cell ...`: the cells behind an API server (`bollard api`): list, show, create,
set, delete; and what every list shares with cells: gathering its pages with the cells that
did not answer, and the warning line for each of those.

Each cell is an ordinary `bollard server` with its own database and agents; the API server
in front of them routes every call about a VM or node to its cell and gathers lists from all
of them. A cell's admin token travels in a file (`--token-file`), never on the command line;
the API server stores it encrypted and never shows it again. Reads are open to every role;
changes need an admin (permission cell.manage). A plain server (no cells) answers none of
this: the commands then say so in one line.

A leaf of the cli package: it imports no command module, so status_cmd and the commands
with gathered lists (vm, node, task, command, volume, pool, migration, events) import it and
none imports another back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from bollard.cli.client import ApiError, Client, CliError, check_url, connect
from bollard.cli.output import (
    OUTPUT_OPTION,
    Output,
    console,
    err_console,
    name_check,
    print_fields,
    print_json,
    print_table,
)

cell_app = typer.Typer(
    help="Cells behind an API server (`bollard api`): list, show, create, set, delete. Each "
    "cell is a `bollard server` with its own database and agents.",
    no_args_is_help=True,
)

CELL_ARGUMENT = typer.Argument(..., help="Cell name.", callback=name_check("cell"))


def register(app: typer.Typer) -> None:
    app.add_typer(cell_app, name="cell")


# -- lists gathered from cells ------------------------------------------------------------


@dataclass
class Gathered:
    """The items of a list, and the cells that did not answer (cell -> why), from every
    page's ``unreachable`` (an API server's gathered lists; empty from a plain server)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def with_cells(self) -> bool:
        """True if the answer names cells (an API server): lists then show a CELL column."""
        return any("cell" in item for item in self.items)


def gather(
    client: Client,
    path: str,
    *,
    limit: int | None = None,
    params: Mapping[str, str | int] | None = None,
) -> Gathered:
    """Every item of a list endpoint (following ``next_cursor``, at most ``limit``), with
    the cells each page says did not answer."""
    found = Gathered()
    found.items = client.list_all(path, limit=limit, params=params, unreachable=found.unreachable)
    return found


def warn_unreachable(unreachable: Mapping[str, str], shown_as: str) -> None:
    """One line on stderr per cell that did not answer: ``cell cell2 did not answer: <why>;
    <shown_as>`` (e.g. "its VMs are shown as UNKNOWN")."""
    for cell, error in sorted(unreachable.items()):
        why = " ".join(error.split()) or "no answer"
        # (an error that names the cell already, "cell cell2 did not answer within 5 s: ...",
        # is not repeated after "cell cell2 did not answer: ")
        said = why if why.startswith(f"cell {cell} ") else f"cell {cell} did not answer: {why}"
        err_console.print(
            f"warning: {said}; {shown_as}",
            style="yellow",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


def with_cell(
    columns: list[str], rows: list[tuple[Any, ...]], items: list[dict[str, Any]], at: int = 1
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``columns`` and ``rows`` with a CELL column at position ``at`` (each item's "cell")."""
    columns = [*columns[:at], "CELL", *columns[at:]]
    shown = [
        (*row[:at], item.get("cell"), *row[at:]) for row, item in zip(rows, items, strict=True)
    ]
    return columns, shown


# -- the commands -------------------------------------------------------------------------


def cell_path(name: str) -> str:
    return f"/cells/{quote(name, safe='')}"


def no_cells_line(url: str) -> str:
    return (
        f"the server at {url} runs without cells (a plain `bollard server`); cells live "
        "behind an API server: `bollard api`, or `bollard up --cells N` for a local one"
    )


@contextmanager
def _cells(client: Client) -> Iterator[None]:
    """A 404 from a server that has no /cells at all becomes one line saying it runs without
    cells; a 404 about one cell (an API server without it) stays as the server said it."""
    try:
        yield
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            client.get("/cells")
        except ApiError as probe:
            if probe.status == 404:
                raise CliError(no_cells_line(client.base_url)) from None
            raise exc from None
        raise


def _url_check(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_url(value, "--url")
    except CliError as exc:
        raise typer.BadParameter(exc.message) from None


URL_HELP = (
    "Where the API server reaches the cell's server: https://HOST:PORT (or http://HOST:PORT)."
)
TOKEN_FILE_HELP = (
    "A file holding the cell server's admin token (its DATA_DIR/admin.token). The API server "
    "checks the cell answers with it, stores it encrypted and never shows it again."
)
CA_FILE_HELP = (
    "The PEM CA certificate the API server verifies the cell's https certificate with "
    "(default: the system's trust store)."
)


def read_token(path: Path) -> str:
    """The one token in ``path``, or a one-line error."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the token file {path}: {_why(exc)}") from None
    if not token:
        raise CliError(f"token file {path} is empty")
    if any(c.isspace() for c in token):
        raise CliError(f"token file {path} must hold a single token")
    return token


def read_ca(path: Path) -> str:
    """The PEM text of the CA file ``path``, or a one-line error."""
    try:
        pem = path.read_text()
    except FileNotFoundError:
        raise CliError(f"CA file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the CA file {path}: {_why(exc)}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise CliError(f"CA file {path} holds no PEM certificate")
    return pem


def _why(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)


@cell_app.command("list")
def list_cells(output: Output = OUTPUT_OPTION) -> None:
    """List the cells: whether each answered when last checked (and how fast), its nodes
    and VMs (as the API server maps them), its database and URL, and why it did not answer."""
    with connect() as client, _cells(client):
        page: dict[str, Any] = client.get("/cells")
    cells: list[dict[str, Any]] = list(page.get("items") or [])
    if output is Output.json:
        print_json(cells)
        return
    rows = [
        (
            c.get("name"),
            state_text(c),
            c.get("nodes"),
            c.get("vms"),
            latency_text(c.get("latency_ms")),
            c.get("database"),
            c.get("url"),
            c.get("error"),
        )
        for c in cells
    ]
    columns = ["NAME", "STATE", "NODES", "VMS", "LATENCY", "DATABASE", "URL", "ERROR"]
    print_table(None, columns, rows)
    if not cells:
        _say("\nNo cells yet: add one with `bollard cell create NAME --url URL --token-file F`.")


@cell_app.command("show")
def show(name: str = CELL_ARGUMENT, output: Output = OUTPUT_OPTION) -> None:
    """Show one cell: its record, its status as it answered just now (version, database,
    nodes, VMs by status) and the names of its nodes."""
    with connect() as client, _cells(client):
        cell: dict[str, Any] = client.get(cell_path(name))
    if output is Output.json:
        print_json(cell)
        return
    print_cell(cell)


@cell_app.command("create")
def create(
    name: str = CELL_ARGUMENT,
    url: str = typer.Option(..., "--url", help=URL_HELP, callback=_url_check),
    token_file: Path = typer.Option(..., "--token-file", metavar="FILE", help=TOKEN_FILE_HELP),
    ca_file: Path | None = typer.Option(None, "--ca-file", metavar="FILE", help=CA_FILE_HELP),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Add a cell: a running `bollard server` the API server then sends VMs and nodes to.

    The API server checks that the cell answers with the token before it keeps it."""
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "token": read_token(token_file),
        "ca_pem": None if ca_file is None else read_ca(ca_file),
    }
    with connect() as client, _cells(client):
        cell: dict[str, Any] = client.post("/cells", body)
    if output is Output.json:
        print_json(cell)
        return
    _say(f"Cell {cell.get('name')} added: {cell.get('url')}, {state_text(cell)}.")


@cell_app.command("set")
def set_(
    name: str = CELL_ARGUMENT,
    url: str | None = typer.Option(None, "--url", help=URL_HELP, callback=_url_check),
    token_file: Path | None = typer.Option(
        None, "--token-file", metavar="FILE", help=TOKEN_FILE_HELP
    ),
    ca_file: Path | None = typer.Option(None, "--ca-file", metavar="FILE", help=CA_FILE_HELP),
    disable: bool | None = typer.Option(
        None,
        "--disable/--enable",
        help="A disabled cell gets no new VMs; everything else (its VMs, nodes, lists) works.",
        show_default=False,
    ),
    weight: str | None = typer.Option(
        None,
        "--weight",
        metavar="MULTIPLIER|default",
        help="How much a VM of this cell moving between cells prefers its nodes (the cross-cell "
        "weigher's multiplier for this cell; negative drains it); `default`: the setting "
        "scheduler.cross_cell_weight_multiplier.",
    ),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Change a cell: its URL, its token, its CA, whether it gets new VMs, its weight."""
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if token_file is not None:
        body["token"] = read_token(token_file)
    if ca_file is not None:
        body["ca_pem"] = read_ca(ca_file)
    if disable is not None:
        body["disabled"] = disable
    if weight is not None:
        body["weight_multiplier"] = _weight(weight)
    if not body:
        raise typer.BadParameter(
            "nothing to change: give --url, --token-file, --ca-file, --disable, --enable or "
            "--weight"
        )
    with connect() as client, _cells(client):
        cell: dict[str, Any] = client.request("PATCH", cell_path(name), json=body)
    if output is Output.json:
        print_json(cell)
        return
    print_cell(cell)


@cell_app.command("delete")
def delete(name: str = CELL_ARGUMENT) -> None:
    """Remove a cell from the API server (the cell's server itself keeps running). Refused
    while nodes or VMs are mapped to it."""
    with connect() as client, _cells(client):
        client.delete(cell_path(name))
    _say(f"Cell {name} deleted.")


# -- display ------------------------------------------------------------------------------


def state_text(cell: Mapping[str, Any]) -> str | None:
    """'up', 'unreachable', 'up (disabled)', ..."""
    state = cell.get("state")
    if state is None:
        return None
    return f"{state} (disabled)" if cell.get("disabled") else str(state)


def latency_text(latency_ms: Any) -> str | None:
    if latency_ms is None:
        return None
    try:
        return f"{float(latency_ms):.1f} ms"
    except (TypeError, ValueError):
        return str(latency_ms)


def status_counts(status: Mapping[str, Any]) -> tuple[str, str]:
    """('2/2 connected', '17 (3 ACTIVE, 14 SHUTOFF)') from a StatusOut."""
    nodes = status.get("nodes") or {}
    vms = status.get("vms") or {}
    by_status: dict[str, int] = vms.get("by_status") or {}
    breakdown = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()) if n) or "none"
    return (
        f"{nodes.get('connected', 0)}/{nodes.get('total', 0)} connected",
        f"{vms.get('total', 0)} ({breakdown})",
    )


def _weight(given: str) -> float | None:
    if given == "default":
        return None
    try:
        return float(given)
    except ValueError:
        raise typer.BadParameter(f"--weight: {given!r} is not a number or `default`") from None


def print_cell(cell: Mapping[str, Any]) -> None:
    status = cell.get("status")
    node_names = cell.get("node_names")
    fields: list[tuple[str, Any]] = [
        ("name", cell.get("name")),
        ("state", state_text(cell)),
        ("url", cell.get("url")),
        ("disabled", "yes: gets no new VMs" if cell.get("disabled") else "no"),
        (
            "weight",
            "default"
            if cell.get("weight_multiplier") is None
            else f"{cell.get('weight_multiplier'):g}",
        ),
        ("error", cell.get("error")),
        ("checked_at", cell.get("checked_at")),
        ("latency", latency_text(cell.get("latency_ms"))),
        ("version", cell.get("version")),
        ("database", cell.get("database")),
        ("nodes", cell.get("nodes")),
        ("vms", cell.get("vms")),
        ("created_at", cell.get("created_at")),
    ]
    if "status" in cell:
        if isinstance(status, Mapping):
            connected, vms = status_counts(status)
            fields += [
                ("status: nodes", connected),
                ("status: vms", vms),
                ("status: tasks running", status.get("tasks_running")),
                ("status: maintenance", "ON" if status.get("maintenance") else "off"),
            ]
        else:
            fields.append(("status", "- (the cell did not answer)"))
    if node_names is not None:
        fields.append(("node names", ", ".join(str(n) for n in node_names) or "none"))
    print_fields(fields)


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
