"""`bollard up` / `bollard down`: a whole local cluster (server + N sim agents) for a laptop.

Every wait has a deadline; children run in their own sessions with their output in
``<data-dir>/logs/<name>.log``; tokens travel in files (mode 0600), never in argv. The
cluster speaks HTTPS/WSS with a CA of its own in ``<data-dir>/tls`` (certs.py), which the
agents and the CLI context verify the server with; ``--insecure-http`` opts out.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from bollard.cli import up_cells, up_servers
from bollard.cli.client import CliError, TlsFiles
from bollard.cli.cluster import (
    STOP_TIMEOUT,
    ClusterRecord,
    ProcessRecord,
    cluster_file,
    default_data_dir,
    is_running,
    read_cluster,
    remove_cluster,
    restart_process,
    running_processes,
    spawn,
    write_cluster,
)
from bollard.cli.context import (
    Context,
    forget_context,
    load_context,
    save_context,
)
from bollard.cli.output import console, err_console
from bollard.durable import private_dir

if TYPE_CHECKING:
    from bollard.cli.certs import LocalTls

DATA_DIR_HELP = "Cluster directory (database, logs, tokens, TLS files, sim fabric)."


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)


def _url(host: str, port: int, scheme: str = "https") -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


@dataclass(frozen=True)
class UpTls:
    """The TLS set-up of a cluster: its CA and server certificate, and with
    ``--client-certs`` a client certificate for each agent and one for the CLI."""

    local: LocalTls
    client_certs: bool

    @property
    def ca(self) -> str:
        return str(self.local.ca.cert)

    def server_args(self) -> list[str]:
        args = ["--tls-cert", str(self.local.server.cert), "--tls-key", str(self.local.server.key)]
        return [*args, "--tls-client-ca", self.ca] if self.client_certs else args

    def client(self, name: str) -> TlsFiles:
        if not self.client_certs:
            return TlsFiles(ca_file=self.ca)
        from bollard.cli.certs import CertError, ensure_client_cert

        try:
            files = ensure_client_cert(self.local, name)
        except CertError as exc:
            raise CliError(str(exc)) from None
        return TlsFiles(self.ca, str(files.cert), str(files.key))

    def agent_args(self, name: str) -> list[str]:
        files = self.client(name)
        args = ["--ca-file", self.ca]
        if files.client_cert and files.client_key:
            args += ["--client-cert", files.client_cert, "--client-key", files.client_key]
        return args


def _make_tls(root: Path, host: str, client_certs: bool) -> UpTls:
    from bollard.cli.certs import CertError, ensure_local_tls

    try:
        return UpTls(ensure_local_tls(root, host), client_certs)
    except CertError as exc:
        raise CliError(str(exc)) from None


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"port {port} on {host} is already in use; choose another with --port"
                ) from exc
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class _Launcher:
    """Starts the cluster's processes and records each in cluster.json at once."""

    def __init__(self, data_dir: Path, url: str) -> None:
        self.data_dir = data_dir
        self.record = ClusterRecord(url=url, data_dir=str(data_dir))
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.data_dir / "logs" / f"{name}.log"
        child = spawn(argv, log)
        self.children[child.pid] = child
        self.record.put(ProcessRecord(name=name, pid=child.pid, argv=argv, log=str(log)))
        write_cluster(self.data_dir, self.record)
        return child

    def stop_all(self) -> None:
        current = read_cluster(self.data_dir) or self.record
        up_cells.stop_in_order(current, timeout=STOP_TIMEOUT, children=self.children)
        remove_cluster(self.data_dir)
        forget_context(self.data_dir)  # the CLI must not point at a stopped cluster


def sriov_spec(value: str) -> str:
    """A `--sriov-pf` spec checked as `bollard agent` checks it (a usage error here, not an
    agent that fails to start), passed on to every sim agent as it is."""
    from bollard.cli.agent_cmd import sriov_pf

    sriov_pf(value)
    return value


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def up(
    nodes: int = typer.Option(
        3, "--nodes", min=1, max=64, help="Number of sim nodes (with --cells: in each cell)."
    ),
    cells: int = typer.Option(
        0,
        "--cells",
        min=0,
        max=up_cells.MAX_CELLS,
        help="Start cells: an API server (`bollard api`) on --port in front of N cell servers"
        " on the next N ports, each with its own database and --nodes sim agents (cellK-nodeJ)"
        " in DATA_DIR/cells/cellK. 0 (default): one server, no cells.",
    ),
    servers: int = typer.Option(
        1,
        "--servers",
        min=1,
        max=up_servers.MAX_SERVERS,
        help="Start N servers sharing the --db PostgreSQL database, on --port and the next"
        " ports, each with its data dir in DATA_DIR/servers/serverK; every agent is given"
        " every server's address.",
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        metavar="URL",
        help="The servers' database, postgresql://USER@HOST:PORT/DB (needed by --servers N;"
        " no password in it: use PGPASSWORD or ~/.pgpass) [default: SQLite in DATA_DIR].",
    ),
    server_dbs: list[str] | None = typer.Option(
        None,
        "--server-db",
        metavar="URL",
        help="Give one server its own URL of the --db database (the same database reached"
        " another way, e.g. through a proxy): once per server, the first for server1 and so"
        " on (no password in it either).",
    ),
    lease_ttl: float | None = typer.Option(
        None,
        "--lease-ttl",
        min=1.0,
        max=600.0,
        metavar="SECONDS",
        help="How long each server's membership (and the leader's lease) lives without a"
        " renewal (`bollard server --lease-ttl`) [default: the server's, 15].",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help=DATA_DIR_HELP + " [default: $XDG_DATA_HOME/bollard/up]"
    ),
    port: int = typer.Option(8700, "--port", min=1, max=65535, help="Server port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Server address."),
    sim_latency: float = typer.Option(
        0.2, "--sim-latency", min=0.0, help="Seconds each sim hypervisor operation takes."
    ),
    sim_migration_rate: float = typer.Option(
        2048.0,
        "--sim-migration-rate",
        min=1.0,
        help="MB of VM memory a sim live migration moves per second.",
    ),
    sim_copy_rate: float = typer.Option(
        2048.0,
        "--sim-copy-rate",
        min=0.001,
        help="MiB of a volume a sim volume copy (or volume migration) moves per second.",
    ),
    agent_reconnect_max: float = typer.Option(
        5.0,
        "--agent-reconnect-max",
        min=0.2,
        help="Longest wait of an agent between two attempts to reach the server again "
        "(`bollard agent --reconnect-max`).",
    ),
    heartbeat: float = typer.Option(
        5.0, "--heartbeat", min=0.1, help="Agent heartbeat interval in seconds."
    ),
    node_vcpus: int = typer.Option(16, "--node-vcpus", min=1, help="vCPUs of each sim node."),
    node_memory: int = typer.Option(
        32768, "--node-memory", min=1, help="Memory (MB) of each sim node."
    ),
    sriov_pfs: list[str] | None = typer.Option(
        None,
        "--sriov-pf",
        metavar="SPEC",
        parser=sriov_spec,
        help="Give every sim node a simulated SR-IOV PF, DEVICE:VFS:PHYSNET[:MTU] (repeatable;"
        " as `bollard agent --sriov-pf`), e.g. ens1f0:8:physnet1 for VMs with --nic"
        " sriov=physnet1.",
    ),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Return once the cluster is up; stop it with `bollard down`."
    ),
    startup_timeout: float = typer.Option(
        60.0, "--startup-timeout", min=1.0, help="Seconds allowed for each start-up phase."
    ),
    restart: str | None = typer.Option(
        None,
        "--restart-process",
        metavar="NAME",
        help="Only restart one process (server, node1, ...) of a running cluster exactly as"
        " cluster.json records it.",
    ),
    insecure_http: bool = typer.Option(
        False,
        "--insecure-http",
        help="Serve plain HTTP/WS instead of HTTPS/WSS (tokens cross the network unencrypted).",
    ),
    client_certs: bool = typer.Option(
        False,
        "--client-certs",
        help="Also require client certificates: the server accepts only clients with a"
        " certificate from the cluster's CA; each agent and the CLI context get one.",
    ),
) -> None:
    """Start a local cluster: a server and N sim agents, ready for `bollard vm create`.

    With --servers N --db postgresql://...: N servers sharing that database (one leads the
    cluster-wide duties); every agent knows every server's address.

    With --cells N: an API server (`bollard api`) in front of N cells, each a server with
    its own database and --nodes sim agents; the CLI context points at the API server.

    Runs in the foreground until Ctrl-C (which stops everything), or with --detach returns
    once all nodes are connected. The server speaks HTTPS/WSS with a certificate from a CA
    of the cluster's own (DATA_DIR/tls, made at the first run and reused), which the agents
    and the CLI context trust.
    """
    root = (data_dir or default_data_dir()).expanduser().resolve()
    if restart is not None:
        proc = restart_process(root, restart)
        console.print(
            f"restarted {proc.name}: pid {proc.pid}, log {proc.log}",
            highlight=False,
            soft_wrap=True,
        )
        return
    existing = read_cluster(root)
    if existing is not None:
        alive = running_processes(existing)
        if alive:
            raise CliError(
                f"a cluster is already running in {root} ({existing.url}, pids"
                f" {', '.join(str(p.pid) for p in alive)}); stop it with"
                f" `bollard down --data-dir {root}`"
            )
        remove_cluster(root)  # left over from a run that did not stop cleanly
    if insecure_http and client_certs:
        raise CliError("--client-certs needs TLS: drop --insecure-http")
    if cells and client_certs:  # (the API server has no client certificate for its cells)
        raise CliError("--client-certs does not go with --cells yet: drop one of them")
    if cells and (servers > 1 or db is not None or server_dbs or lease_ttl is not None):
        raise CliError(
            "--servers, --db, --server-db and --lease-ttl do not go with --cells yet: drop them"
            " or --cells"
        )
    up_servers.check_db(db, servers, server_dbs or ())
    last = port + (cells or servers - 1)
    if last > 65535:
        what = f"--cells {cells}" if cells else f"--servers {servers}"
        raise CliError(f"{what} needs ports {port} to {last}: lower --port")
    for each in range(port, last + 1):
        check_port_free(host, each)
    # The cluster's data dir holds tokens, keys, the database and logs: only its owner's.
    os.umask(0o077)
    private_dir(root)
    for sub in ("logs", "agents"):
        (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    tls = None if insecure_http else _make_tls(root, host, client_certs)
    url = _url(host, port, "http" if tls is None else "https")
    cli_tls = TlsFiles() if tls is None else tls.client("cli")
    launcher = _Launcher(root, url)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        agent_extra = ["--sim-migration-rate", f"{sim_migration_rate:g}",
                       "--sim-copy-rate", f"{sim_copy_rate:g}",
                       "--reconnect-max", f"{agent_reconnect_max:g}"]  # fmt: skip
        for spec in sriov_pfs or ():
            agent_extra += ["--sriov-pf", spec]
        plan = up_cells.CellsPlan(root, host, port, cells, nodes, heartbeat, sim_latency,
                                  node_vcpus, node_memory, agent_extra,
                                  "http" if tls is None else "https")  # fmt: skip
        servers_plan = up_servers.ServersPlan(plan, servers, db, tuple(server_dbs or ()), lease_ttl)
        if cells:
            names = up_cells.start_cells(launcher, plan, tls, startup_timeout)
        else:
            names = up_servers.start_servers(launcher, servers_plan, tls, startup_timeout)
        save_context(Context(url=url, data_dir=str(root), token_file=str(root / "admin.token"),
                             ca_file=cli_tls.ca_file, client_cert=cli_tls.client_cert,
                             client_key=cli_tls.client_key))  # fmt: skip
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "start-up failed"
        err_console.print(f"{why}: stopping what was started", highlight=False, soft_wrap=True)
        launcher.stop_all()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        if cells:
            console.print("\n".join(up_cells.cells_lines(plan)), highlight=False, markup=False)
        elif servers > 1:
            lines = up_servers.servers_lines(servers_plan)
            console.print("\n".join(lines), highlight=False, markup=False)
        urls = servers_plan.urls if servers > 1 else [url]
        _print_usage(url, root, names, detach, cli_tls, urls)
        if not detach:
            _foreground(launcher)
    except KeyboardInterrupt:
        launcher.stop_all()


def bollard_command() -> str:
    """How to run this very `bollard` from any shell: ``bollard`` if that is what PATH finds,
    else the full path of the venv's script (or ``PYTHON -m bollard``)."""
    script = Path(sys.executable).parent / "bollard"
    if not script.is_file():
        return f"{sys.executable} -m bollard"
    found = shutil.which("bollard")
    if found is not None and Path(found).resolve() == script.resolve():
        return "bollard"
    return str(script)


def _print_usage(
    url: str,
    root: Path,
    names: list[str],
    detach: bool,
    tls: TlsFiles | None = None,
    servers: list[str] | None = None,
) -> None:
    token_file = root / "admin.token"
    tls = tls or TlsFiles()
    bollard = bollard_command()
    several = servers is not None and len(servers) > 1
    where = f"servers {', '.join(servers or [])}" if several else f"server {url}"
    lines = [
        f"Bollard is up: {where}, nodes {', '.join(names)} connected.",
        f"  data dir: {root}   logs: {root / 'logs'}",
    ]
    if tls.ca_file:
        lines.append(f"  TLS: HTTPS/WSS, server certificate from the cluster's CA {tls.ca_file}")
    else:
        lines.append("  plain HTTP: traffic and tokens are not encrypted (--insecure-http)")
    lines.append(f"Web console: {url}/ui/ (sign in with the token in {token_file})")
    if tls.ca_file:
        lines.append(
            f"  the browser warns about the cluster's own CA until you import {tls.ca_file} "
            "as a trusted authority"
        )
    lines += [
        "The CLI is set up (context file); from other shells or tools:",
        f"  export BOLLARD_URL={url}",
        f'  export BOLLARD_TOKEN="$(cat {token_file})"',
    ]
    if tls.ca_file:
        lines.append(f"  export BOLLARD_CA_FILE={tls.ca_file}")
    if tls.client_cert and tls.client_key:
        lines.append(f"  export BOLLARD_CLIENT_CERT={tls.client_cert}")
        lines.append(f"  export BOLLARD_CLIENT_KEY={tls.client_key}")
    lines.append("Try:")
    if bollard != "bollard" and (Path(sys.executable).parent / "activate").is_file():
        lines.append(f"  source {Path(sys.executable).parent / 'activate'}   # or use full paths:")
    lines += [
        f"  {bollard} status",
        f"  {bollard} vm create web1 --vcpus 2 --memory 2048 --start --wait",
        f"  {bollard} vm list",
        f"  {bollard} sim list",
        f"Stop it with `{bollard} down`" + ("." if detach else " or Ctrl-C here."),
    ]
    console.print("\n".join(lines), highlight=False, soft_wrap=True, markup=False)


def _foreground(launcher: _Launcher) -> None:
    """Watch the processes until Ctrl-C or SIGTERM, then stop everything and return (exit 0)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    root = launcher.data_dir
    console.print("cluster running; Ctrl-C stops it", highlight=False, soft_wrap=True)
    known = {p.name: (p.pid, True) for p in launcher.record.processes}
    try:
        while not stop.wait(1.0):  # a periodic status check
            record = read_cluster(root)
            if record is None:
                console.print(
                    "cluster.json is gone (`bollard down`?): leaving",
                    highlight=False,
                    soft_wrap=True,
                )
                return
            for proc in record.processes:
                child = launcher.children.get(proc.pid)
                if child is not None and child.poll() is not None:
                    del launcher.children[proc.pid]  # reaped; its pid may be reused
                alive = is_running(proc.pid, proc.argv)
                if known.get(proc.name) != (proc.pid, alive):
                    what = "running" if alive else "exited"
                    console.print(
                        f"{proc.name} (pid {proc.pid}) {what}; log {proc.log}",
                        highlight=False,
                        soft_wrap=True,
                    )
                known[proc.name] = (proc.pid, alive)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if cluster_file(root).exists():
            console.print("stopping the cluster...", highlight=False, soft_wrap=True)
            launcher.stop_all()
            console.print("stopped", highlight=False, soft_wrap=True)


def down(
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help=DATA_DIR_HELP + " [default: the context's, else the default]"
    ),
    timeout: float = typer.Option(
        15.0, "--timeout", min=0.0, help="Seconds to wait after SIGTERM before SIGKILL."
    ),
) -> None:
    """Stop the local cluster that `bollard up` started (safe to run when none runs)."""
    if data_dir is None:
        ctx = load_context()
        data_dir = Path(ctx.data_dir) if ctx else default_data_dir()
    root = data_dir.expanduser().resolve()
    record = read_cluster(root)
    if record is None:
        console.print(
            f"no cluster is running in {root} (no {cluster_file(root).name})",
            highlight=False,
            soft_wrap=True,
        )
        _forget(root)
        return
    ran, killed = up_cells.stop_in_order(record, timeout=timeout)
    remove_cluster(root)
    if not ran:
        console.print(
            f"nothing was running in {root}; removed its stale cluster.json",
            highlight=False,
            soft_wrap=True,
        )
        _forget(root)
        return
    note = f" ({', '.join(killed)} needed SIGKILL)" if killed else ""
    console.print(f"stopped {', '.join(ran)} in {root}{note}", highlight=False, soft_wrap=True)
    _forget(root)


def _forget(root: Path) -> None:
    """Remove the CLI context if it points at the (stopped) cluster in ``root``, and say so."""
    removed = forget_context(root)
    if removed is not None:
        console.print(
            f"removed the CLI context {removed} (it pointed at this cluster); `bollard up`"
            " writes a new one",
            highlight=False,
            soft_wrap=True,
        )
