"""`bollard server` (and the options `bollard db` shares with it)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bollard.cli.output import fail
from bollard.domain.errors import BollardError

DEFAULT_DATA_DIR = Path("/var/lib/bollard")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB. "
        "Default: SQLite file bollard.db in the data dir.",
        envvar="BOLLARD_DB",
        show_envvar=True,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Where the server keeps its files (SQLite database, admin.token).",
        envvar="BOLLARD_DATA_DIR",
    ),
]


class ReconcileScan(StrEnum):
    AUTO = "auto"
    PROCESS = "process"
    THREAD = "thread"


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen must be HOST:PORT (got {listen!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


def first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def db_url_of(db: str | None, data_dir: Path) -> str:
    from bollard.store.db import default_url

    return db or default_url(data_dir)


def server(
    db: DbOption = None,
    listen: Annotated[
        str, typer.Option(help="Address and port for the API and the agent gateway.")
    ] = "127.0.0.1:8700",
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    heartbeat_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between agent heartbeats (sent to agents).")
    ] = 5.0,
    command_timeout: Annotated[
        float, typer.Option(min=1, help="Default seconds a command may take on an agent.")
    ] = 60.0,
    sim_fabric_dir: Annotated[
        Path | None,
        typer.Option(help="The sim fabric, for nodes whose power (fencing) driver is `sim`."),
    ] = None,
    reconcile_scan: Annotated[
        ReconcileScan,
        typer.Option(
            case_sensitive=False,
            envvar="BOLLARD_RECONCILE_SCAN",
            help="Where the state reconciler reads and classifies the cluster: in a worker "
            "process of its own (`process`: heartbeats and the API do not wait for it), in a "
            "thread of the server (`thread`), or `auto`: the thread until a scan sees 5,000 "
            "VMs, the process from then on.",
        ),
    ] = ReconcileScan.AUTO,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Serve the API and the agent gateway over HTTPS/WSS with this PEM certificate"
            " (its chain after it). Without --tls-cert and --tls-key: plain HTTP.",
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
            help="Require a client certificate signed by this CA from every client: agents"
            " (--client-cert/--client-key) and CLIs (BOLLARD_CLIENT_CERT/BOLLARD_CLIENT_KEY).",
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
    name: Annotated[
        str | None,
        typer.Option(
            help="This server's name among the servers of its database, unique among them"
            " [default: this host's name:PORT]. A server started again under its name takes"
            " over from its previous run at once.",
        ),
    ] = None,
    advertise_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The address agents and clients use to reach this server, sent to agents in"
            " the list of servers [default: http(s)://LISTEN-ADDRESS:PORT].",
        ),
    ] = None,
    lease_ttl: Annotated[
        float,
        typer.Option(
            min=1.0,
            max=600.0,
            metavar="SECONDS",
            help="How long this server's membership (and the leader's lease) lives without a"
            " renewal; renewed every third of it.",
        ),
    ] = 15.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the management server (REST API and agent gateway) in the foreground.

    The schema is created or upgraded at start; a database written by a newer Bollard is
    refused. At first start the admin token is written to DATA_DIR/admin.token (mode 0600).
    With --tls-cert and --tls-key it serves HTTPS and WSS; without them, plain HTTP (logged
    as a warning: tokens then cross the network unencrypted).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from bollard.server.config import ServerConfig
    from bollard.server.main import run_server

    host, port = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        fail("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
    if novnc_dir is not None and not (novnc_dir / "core" / "rfb.js").is_file():
        fail(f"--novnc-dir {novnc_dir}: no core/rfb.js there (is it a noVNC directory?)")
    config = ServerConfig(
        data_dir=data_dir,
        db_url=db_url_of(db, data_dir),
        host=host,
        port=port,
        heartbeat_interval=heartbeat_interval,
        command_timeout=command_timeout,
        sim_fabric_dir=sim_fabric_dir,
        reconcile_scan=reconcile_scan.value,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        max_body_bytes=max_body,
        access_log=access_log,
        novnc_dir=novnc_dir,
        name=name,
        advertise_url=advertise_url,
        lease_ttl=lease_ttl,
    )
    if advertise_url is not None and not advertise_url.startswith(("http://", "https://")):
        fail(f"--advertise-url {advertise_url}: must look like http(s)://host:port")
    try:
        run_server(config, log_level=log_level.lower())
    except BollardError as exc:
        fail(exc.message)
    except SQLAlchemyError as exc:
        fail(f"cannot open the database: {first_line(exc)}")
    except OSError as exc:
        fail(f"cannot start the server: {exc}")


def register(app: typer.Typer) -> None:
    app.command("server")(server)
