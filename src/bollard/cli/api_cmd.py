"""`bollard api`: the API server in front of cells (issue 20), in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bollard.cli.output import fail
from bollard.cli.server_cmd import first_line, parse_listen
from bollard.domain.errors import BollardError

DEFAULT_API_DATA_DIR = Path("/var/lib/bollard-api")


def api(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The API database: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
            "(cells, host and VM mappings, flavors, users, tokens). "
            "Default: SQLite file bollard-api.db in the data dir.",
            envvar="BOLLARD_API_DB",
            show_envvar=True,
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="Address and port of the API.")
    ] = "127.0.0.1:8700",
    host: Annotated[
        str | None,
        typer.Option(metavar="HOST", help="The address part of --listen, given on its own."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="The port part of --listen, given on its own."),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Where the API server keeps its files (SQLite database, admin.token, "
            "access log). Not a cell server's data dir: each has its own admin.token.",
            envvar="BOLLARD_API_DATA_DIR",
        ),
    ] = DEFAULT_API_DATA_DIR,
    cell_deadline: Annotated[
        float,
        typer.Option(
            min=0.1,
            metavar="SECONDS",
            help="How long each call to a cell may take (a routed call, or one cell's part "
            "of a list); a cell slower than that is reported as not answering.",
        ),
    ] = 5.0,
    discover_interval: Annotated[
        float,
        typer.Option(
            min=0.5,
            metavar="SECONDS",
            help="How often the API server checks every cell and learns its nodes and VMs.",
        ),
    ] = 10.0,
    move_cell_wait: Annotated[
        float,
        typer.Option(
            min=1,
            max=86_400,
            metavar="SECONDS",
            help="How long a step of a move between cells waits for a cell that does not "
            "answer before the move rolls back.",
        ),
    ] = 120.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Serve the API over HTTPS with this PEM certificate (its chain after it)."
            " Without --tls-cert and --tls-key: plain HTTP.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="The PEM private key of --tls-cert (keep it mode 0600)."),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Require a client certificate signed by this CA from every client"
            " (CLIs: BOLLARD_CLIENT_CERT/BOLLARD_CLIENT_KEY).",
        ),
    ] = None,
    max_body: Annotated[
        int,
        typer.Option(
            min=1024,
            max=1024**3,
            metavar="BYTES",
            help="Refuse request bodies over this size (413), before reading them.",
        ),
    ] = 1024 * 1024,
    access_log: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The API access log (rotated at 10 MiB, 5 kept) [default: DATA_DIR/access.log].",
        ),
    ] = None,
    novnc_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            envvar="BOLLARD_NOVNC_DIR",
            help="noVNC for the web console's graphical console (the directory holding"
            " core/rfb.js) [default: .venv/share/bollard/novnc, then /usr/share/novnc].",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API server in front of cells (REST API and web console) in the foreground.

    Clients (CLI, web console) talk to it exactly as to a `bollard server`, on the same
    /api/v1 paths: it answers users, tokens and flavors itself, sends every call about a VM
    or node to that one's cell, and gathers lists from every cell, each within
    --cell-deadline (a cell that does not answer is named in the answer; its VMs are listed
    as UNKNOWN). Each cell is an ordinary `bollard server` with its own database and agents;
    add one with `bollard cell create NAME --url URL --token-file CELL_DATA_DIR/admin.token`.

    The schema of the API database is created or upgraded at start. At first start the
    admin token is written to DATA_DIR/admin.token (mode 0600). With --tls-cert and
    --tls-key it serves HTTPS; without them, plain HTTP (logged as a warning). For a local
    try-out, `bollard up --cells 2 --nodes 2` starts an API server, two cells and their
    sim agents.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from bollard.cells.config import ApiConfig, default_api_db_url
    from bollard.cells.main import run_api

    host_of, port_of = parse_listen(listen)
    if host is not None:
        host_of = host.strip("[]") or "127.0.0.1"
    if port is not None:
        port_of = port
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        fail("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
    if novnc_dir is not None and not (novnc_dir / "core" / "rfb.js").is_file():
        fail(f"--novnc-dir {novnc_dir}: no core/rfb.js there (is it a noVNC directory?)")
    config = ApiConfig(
        data_dir=data_dir,
        db_url=db or default_api_db_url(data_dir),
        host=host_of,
        port=port_of,
        cell_deadline=cell_deadline,
        discover_interval=discover_interval,
        move_cell_wait=move_cell_wait,
        max_body_bytes=max_body,
        access_log=access_log,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        novnc_dir=novnc_dir,
    )
    try:
        run_api(config, log_level=log_level.lower())
    except BollardError as exc:
        fail(exc.message)
    except SQLAlchemyError as exc:
        fail(f"cannot open the API database: {first_line(exc)}")
    except OSError as exc:
        fail(f"cannot start the API server: {exc}")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
