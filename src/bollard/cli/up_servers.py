"""`bollard up [--servers N --db postgresql://...]`: the servers of a local cluster without
cells, and its agents, each given the address of every server.

With one server (the default) the layout is the usual one: the server's data dir is the
cluster's data dir ROOT (admin.token, the SQLite database unless --db). With several, they
share one PostgreSQL database (SQLite runs one server) and each has its own data dir::

    ROOT/servers/serverK/   server K (`bollard server`, process serverK) on --port + K - 1
    ROOT/admin.token        the admin token (one for all: its hash is in the database)
    ROOT/fabric/            the sim fabric all servers and agents share
    ROOT/agents/nodeJ/      token and state of agent J (`--server` once per server)

The first server starts alone (it creates or upgrades the schema and makes the admin token),
then the others. Each server is given --db, or its own --server-db (the same database reached
another way, e.g. through a proxy), and --lease-ttl when given. Database URLs are on the
servers' command lines, so none may hold a password: libpq finds one in PGPASSWORD or
~/.pgpass (which the servers inherit).

A leaf of the cli package as far as the `up` commands go: up_cmd imports it, never the
other way round.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bollard.cli.client import Client, CliError, TlsFiles
from bollard.cli.context import fabric_dir_of
from bollard.cli.output import console
from bollard.cli.secret_file import write_secret
from bollard.cli.up_cells import (
    CellsPlan,
    Launcher,
    ServerTls,
    enroll,
    listen_arg,
    read_admin_token,
    wait_connected,
    wait_healthy,
)
from bollard.durable import private_dir

SERVERS_DIR = "servers"
SINGLE = "server"  # the process name of the only server
MAX_SERVERS = 9
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def check_db(db: str | None, servers: int, server_dbs: Sequence[str] = ()) -> None:
    """Refuse a `--servers`/`--db`/`--server-db` set `bollard up` cannot start, in one line
    (a URL is never repeated in it: it might hold a password)."""
    if db is None:
        if servers > 1:
            raise CliError(
                f"--servers {servers} needs --db postgresql://USER@HOST:PORT/DB: several "
                "servers share one PostgreSQL database (SQLite runs one server)"
            )
        if server_dbs:
            raise CliError("--server-db needs --db (the database every --server-db reaches)")
        return
    postgres = _check_url("--db", db)
    if servers > 1 and not postgres:
        raise CliError(
            f"--servers {servers} needs a PostgreSQL --db (postgresql://USER@HOST:PORT/DB): "
            "SQLite runs one server"
        )
    if not server_dbs:
        return
    if len(server_dbs) != servers:
        raise CliError(
            f"--servers {servers} takes --server-db {servers} times (once per server, the"
            f" first for server1) or not at all, not {len(server_dbs)}"
        )
    for url in server_dbs:
        if not _check_url("--server-db", url):
            raise CliError(
                "--server-db must be a postgresql:// URL (the --db database reached another"
                " way, e.g. through a proxy)"
            )
    if not postgres:
        raise CliError("--server-db needs a PostgreSQL --db (SQLite is reached one way only)")


def _check_url(option: str, url: str) -> bool:
    """Whether ``url`` is a PostgreSQL URL (else SQLite); a one-line error for another kind
    or one holding a password."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as exc:
        raise CliError(f"{option} is not a database URL: {exc}") from None
    postgres = parts.scheme in POSTGRES_SCHEMES
    if not postgres and parts.scheme != "sqlite":
        raise CliError(f"{option} must be a postgresql:// or sqlite:/// URL, not {parts.scheme}://")
    if password is not None:
        raise CliError(
            f"{option} must not hold a password (it would be on the servers' command lines): "
            "give it in PGPASSWORD or ~/.pgpass"
        )
    return postgres


@dataclass(frozen=True)
class ServersPlan:
    """The servers `bollard up` starts: one (`server`, in ROOT) or several (`serverK` in
    ROOT/servers/serverK on ``port + K - 1``); ``db`` None: the SQLite file of the one."""

    base: CellsPlan  # root, host, first port, nodes and their settings (no cells)
    servers: int = 1
    db: str | None = None
    server_dbs: tuple[str, ...] = ()  # one per server (--server-db), else each gets ``db``
    lease_ttl: float | None = None  # `bollard server --lease-ttl`; None: its default

    @property
    def names(self) -> list[str]:
        if self.servers == 1:
            return [SINGLE]
        return [f"server{k}" for k in range(1, self.servers + 1)]

    def data_dir(self, name: str) -> Path:
        root = self.base.root
        return root if name == SINGLE else root / SERVERS_DIR / name

    def db_of(self, name: str) -> str | None:
        """The database URL server ``name`` is given: its --server-db, else --db."""
        if self.server_dbs:
            return self.server_dbs[self.names.index(name)]
        return self.db

    def port(self, name: str) -> int:
        return self.base.port + (0 if name == SINGLE else int(name.removeprefix("server")) - 1)

    def url(self, name: str) -> str:
        return self.base.url(self.port(name))

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in self.names]

    @property
    def ports(self) -> list[int]:
        return [self.port(n) for n in self.names]

    @property
    def node_names(self) -> list[str]:
        return [f"node{j}" for j in range(1, self.base.nodes + 1)]


def _bollard() -> list[str]:
    return [sys.executable, "-m", "bollard"]


def server_argv(plan: ServersPlan, name: str, tls: ServerTls | None) -> list[str]:
    base = plan.base
    return [
        *_bollard(), "server", "--data-dir", str(plan.data_dir(name)),
        "--listen", listen_arg(base.host, plan.port(name)),
        "--heartbeat-interval", f"{base.heartbeat:g}",
        "--sim-fabric-dir", str(fabric_dir_of(base.root)),
        *(["--db", db] if (db := plan.db_of(name)) else []),
        *(["--lease-ttl", f"{plan.lease_ttl:g}"] if plan.lease_ttl is not None else []),
        *(tls.server_args() if tls else []),
    ]  # fmt: skip


def agent_argv(plan: ServersPlan, node: str, tls: ServerTls | None) -> list[str]:
    base = plan.base
    home = base.root / "agents" / node
    servers = [arg for url in plan.urls for arg in ("--server", url)]
    return [
        *_bollard(), "agent", *servers, "--node", node,
        "--token-file", str(home / "token"), "--driver", "sim",
        "--state-dir", str(home / "state"), "--fabric-dir", str(fabric_dir_of(base.root)),
        "--sim-latency", f"{base.sim_latency:g}", "--vcpus", str(base.vcpus),
        "--memory-mb", str(base.memory), *base.agent_extra,
        *(tls.agent_args(node) if tls else []),
    ]  # fmt: skip


def start_servers(
    launcher: Launcher, plan: ServersPlan, tls: ServerTls | None, timeout: float
) -> list[str]:
    """Start the servers (the first alone, then the others) and the agents; return once every
    node is connected, with its sim power driver set. Returns the node names."""
    root = plan.base.root
    cli_tls = tls.client("cli") if tls else TlsFiles()
    first, *others = plan.names
    _start_server(launcher, plan, first, tls, cli_tls, timeout)
    token = read_admin_token(plan.data_dir(first), f"the server {first}")
    if plan.data_dir(first) != root:
        # One admin token for all: the CLI context reads ROOT's; each server keeps a copy (a
        # server whose database has the token's hash but whose data dir lacks it warns).
        write_secret(root / "admin.token", token)
        for name in others:
            private_dir(plan.data_dir(name))
            write_secret(plan.data_dir(name) / "admin.token", token)
    started = {name: launcher.start(name, server_argv(plan, name, tls)) for name in others}
    for name, child in started.items():
        _say(f"server {name} starting at {plan.url(name)} (pid {child.pid})")
    for name, child in started.items():
        log = root / "logs" / f"{name}.log"
        wait_healthy(plan.url(name), child, log, timeout, cli_tls, f"the server {name}")
    agents: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    with Client(plan.url(first), token, tls=cli_tls) as client:
        for node in plan.node_names:
            enroll(client, node, root / "agents" / node / "token")
            agents[node] = (
                launcher.start(node, agent_argv(plan, node, tls)),
                root / "logs" / f"{node}.log",
            )
        _say(f"agents starting: {', '.join(agents)}")
        wait_connected(client, agents, timeout)
        for node in agents:  # sim nodes are fenced through the sim fabric (`bollard sim power`)
            client.request("PUT", f"/nodes/{node}/power", json={"driver": "sim", "address": node})
    return list(agents)


def _start_server(
    launcher: Launcher,
    plan: ServersPlan,
    name: str,
    tls: ServerTls | None,
    cli_tls: TlsFiles,
    timeout: float,
) -> None:
    home = plan.data_dir(name)
    private_dir(home)
    child = launcher.start(name, server_argv(plan, name, tls))
    _say(f"server {'' if name == SINGLE else name + ' '}starting at {plan.url(name)} "
         f"(pid {child.pid})")  # fmt: skip
    log = plan.base.root / "logs" / f"{name}.log"
    what = "the server" if name == SINGLE else f"the server {name}"
    wait_healthy(plan.url(name), child, log, timeout, cli_tls, what)
    if not (home / "admin.token").exists():
        raise CliError(
            f"{what} is up but {home / 'admin.token'} is missing: its database has an admin "
            "token made earlier (only its hash is stored); use a fresh database or data dir"
        )


def servers_lines(plan: ServersPlan) -> list[str]:
    """What `bollard up --servers N` prints about the servers, before the usual lines."""
    if plan.servers == 1:
        return []
    lines = ["Servers sharing one database (every agent knows them all; the CLI context"
             " points at the first):"]  # fmt: skip
    for name in plan.names:
        via = f"; database {plan.db_of(name)}" if plan.server_dbs else ""  # (no password)
        lines.append(f"  {name}: {plan.url(name)}; data dir {plan.data_dir(name)}{via}")
    if plan.lease_ttl is not None:
        lines.append(f"  membership and leader leases: {plan.lease_ttl:g}s")
    lines.append("  `bollard cluster servers` shows them, with the leader")
    return lines


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
