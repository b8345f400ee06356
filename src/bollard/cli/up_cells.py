"""`bollard up --cells N --nodes M`: a local cluster with cells (issue 20), and the start-up
steps it shares with the plain `bollard up` (up_cmd.py): wait until a server is healthy,
enrol a node, wait until agents are connected.

The layout under the cluster's data dir ROOT::

    ROOT/admin.token, bollard-api.db   the API server (`bollard api`), on --port
    ROOT/cells/cellK/                  cell K's server (`bollard server`), on --port + K:
        admin.token, bollard.db          its admin token and database
        fabric/                          its sim fabric (its agents' hosts)
        agents/cellK-nodeJ/              token and state of its agent J
    ROOT/logs/NAME.log                 every process's output: api, cellK, cellK-nodeJ
    ROOT/tls/                          one CA for all (agents and the CLI trust it)

Each cell is registered with the API server (POST /cells, with the cell's admin token read
from its data dir and the CA's PEM); the CLI context points at the API server. `bollard
down` stops the agents first, then the cell servers, then the API server.

A leaf of the cli package as far as the `up` commands go: up_cmd imports it, never the
other way round.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from bollard.cli.client import (
    ApiError,
    Client,
    CliError,
    TlsFiles,
    ssl_context,
    transport_problem,
)
from bollard.cli.cluster import ClusterRecord, ProcessRecord, log_tail, stop_processes
from bollard.cli.context import fabric_dir_of
from bollard.cli.output import console, err_console
from bollard.cli.secret_file import write_secret
from bollard.durable import private_dir

CELLS_DIR = "cells"
API_PROCESS = "api"
MAX_CELLS = 16
_CELL_NAME = re.compile(r"cell\d+")
_SERVER_NAME = re.compile(r"server\d*")  # server, or serverK of `bollard up --servers N`


# -- layout and names ---------------------------------------------------------------------


def cell_name(k: int) -> str:
    return f"cell{k}"


def node_name(cell: str, j: int) -> str:
    return f"{cell}-node{j}"


def cell_dir_of(root: Path, cell: str) -> Path:
    """The data dir of cell ``cell`` of the cluster in ``root``."""
    return root / CELLS_DIR / cell


def cell_fabrics(root: Path) -> dict[str, Path]:
    """The sim fabric of each cell of the cluster in ``root`` (cell -> fabric dir), by name;
    empty for a cluster without cells."""
    try:
        dirs = sorted((root / CELLS_DIR).iterdir())
    except OSError:
        return {}
    fabrics = {d.name: fabric_dir_of(d) for d in dirs if _CELL_NAME.fullmatch(d.name)}
    return {cell: path for cell, path in fabrics.items() if path.is_dir()}


def listen_arg(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the start-up steps both kinds of `bollard up` share ----------------------------------


def _died(name: str, child: subprocess.Popen[bytes], log: Path) -> CliError:
    err_console.print(f"--- last lines of {log} ---", highlight=False, soft_wrap=True, markup=False)
    err_console.print(log_tail(log), highlight=False, soft_wrap=True, markup=False)
    return CliError(f"{name} exited with code {child.returncode} during start-up; see {log}")


def wait_healthy(
    url: str,
    server: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    tls: TlsFiles | None = None,
    what: str = "the server",
) -> None:
    deadline = time.monotonic() + timeout
    tls = tls or TlsFiles()
    last = "no answer"
    with httpx.Client(base_url=url, timeout=2.0, verify=ssl_context(url, tls) or True) as http:
        while True:
            if server.poll() is not None:
                raise _died(what, server, log)
            try:
                if http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError as exc:  # not listening yet, or TLS refused
                last = transport_problem(exc, url, tls)
            if time.monotonic() >= deadline:
                err_console.print(log_tail(log), highlight=False, soft_wrap=True, markup=False)
                raise CliError(
                    f"{what} at {url} was not healthy after {timeout:g}s ({last}); see {log}"
                )
            time.sleep(0.1)  # backoff between probes


def enroll(client: Client, node: str, token_file: Path) -> bool:
    """Enrol ``node``, writing its token to ``token_file``; reuse an enrolment of a past run.

    Returns True if the node was new."""
    try:
        # Sim nodes are fenced through the sim fabric (`bollard sim power ...`). The sim host
        # appears when its agent starts: stored untested now, set (tested) once it connects.
        power = {"driver": "sim", "address": node, "store_untested": True}
        answer = client.post("/nodes", {"name": node, "power": power})
    except ApiError as exc:
        if exc.status != 409:
            raise
        if not token_file.exists():
            raise CliError(
                f"node {node} is already enrolled but its token file {token_file} is gone;"
                " use a fresh --data-dir"
            ) from exc
        return False
    write_secret(token_file, str(answer["token"]))
    return True


def wait_connected(
    client: Client,
    agents: dict[str, tuple[subprocess.Popen[bytes], Path]],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, (child, log) in agents.items():
            if child.poll() is not None:
                raise _died(f"the agent of {name}", child, log)
        nodes = {n["name"]: n for n in client.list_all("/nodes")}
        waiting = sorted(a for a in agents if not (nodes.get(a) or {}).get("connected"))
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise CliError(
                f"nodes not connected after {timeout:g}s: {', '.join(waiting)};"
                f" see their logs in {next(iter(agents.values()))[1].parent}"
            )
        time.sleep(0.1)  # backoff between polls


# -- a cluster with cells -----------------------------------------------------------------


class Launcher(Protocol):
    """Starts a process of the cluster and records it in cluster.json (up_cmd._Launcher)."""

    @property
    def data_dir(self) -> Path: ...

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]: ...


class ServerTls(Protocol):
    """The cluster's TLS files (up_cmd.UpTls)."""

    @property
    def ca(self) -> str: ...

    def server_args(self) -> list[str]: ...

    def client(self, name: str) -> TlsFiles: ...

    def agent_args(self, name: str) -> list[str]: ...


@dataclass(frozen=True)
class CellsPlan:
    """What `bollard up --cells N --nodes M` starts: the API server on ``port``, cell K on
    ``port + K``, ``nodes`` sim agents per cell."""

    root: Path
    host: str
    port: int
    cells: int
    nodes: int
    heartbeat: float = 5.0
    sim_latency: float = 0.2
    vcpus: int = 16
    memory: int = 32768
    agent_extra: list[str] = field(default_factory=list)
    scheme: str = "https"

    def url(self, port: int) -> str:
        shown = (
            "127.0.0.1"
            if self.host in ("0.0.0.0", "")
            else "::1"
            if self.host == "::"
            else self.host
        )
        if ":" in shown:
            shown = f"[{shown}]"
        return f"{self.scheme}://{shown}:{port}"

    @property
    def api_url(self) -> str:
        return self.url(self.port)

    @property
    def cell_names(self) -> list[str]:
        return [cell_name(k) for k in range(1, self.cells + 1)]

    def cell_port(self, cell: str) -> int:
        return self.port + int(cell.removeprefix("cell"))

    def cell_url(self, cell: str) -> str:
        return self.url(self.cell_port(cell))

    def node_names(self, cell: str) -> list[str]:
        return [node_name(cell, j) for j in range(1, self.nodes + 1)]

    @property
    def ports(self) -> list[int]:
        """Every port the cluster listens on: the API server's, then each cell's."""
        return [self.port, *(self.cell_port(c) for c in self.cell_names)]


def _bollard() -> list[str]:
    return [sys.executable, "-m", "bollard"]


def api_argv(plan: CellsPlan, tls: ServerTls | None) -> list[str]:
    return [
        *_bollard(), "api", "--data-dir", str(plan.root),
        "--listen", listen_arg(plan.host, plan.port),
        *(tls.server_args() if tls else []),
    ]  # fmt: skip


def cell_server_argv(plan: CellsPlan, cell: str, tls: ServerTls | None) -> list[str]:
    home = cell_dir_of(plan.root, cell)
    return [
        *_bollard(), "server", "--data-dir", str(home),
        "--listen", listen_arg(plan.host, plan.cell_port(cell)),
        "--heartbeat-interval", f"{plan.heartbeat:g}",
        "--sim-fabric-dir", str(fabric_dir_of(home)),
        *(tls.server_args() if tls else []),
    ]  # fmt: skip


def agent_home(plan: CellsPlan, cell: str, node: str) -> Path:
    return cell_dir_of(plan.root, cell) / "agents" / node


def agent_argv(plan: CellsPlan, cell: str, node: str, tls: ServerTls | None) -> list[str]:
    home = agent_home(plan, cell, node)
    return [
        *_bollard(), "agent", "--server", plan.cell_url(cell), "--node", node,
        "--token-file", str(home / "token"), "--driver", "sim",
        "--state-dir", str(home / "state"),
        "--fabric-dir", str(fabric_dir_of(cell_dir_of(plan.root, cell))),
        "--sim-latency", f"{plan.sim_latency:g}", "--vcpus", str(plan.vcpus),
        "--memory-mb", str(plan.memory), *plan.agent_extra,
        *(tls.agent_args(node) if tls else []),
    ]  # fmt: skip


def read_admin_token(data_dir: Path, what: str) -> str:
    path = data_dir / "admin.token"
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the admin token of {what} ({path}): {exc.strerror}") from None
    if not token:
        raise CliError(f"the admin token file of {what} is empty: {path}")
    return token


def start_cells(
    launcher: Launcher, plan: CellsPlan, tls: ServerTls | None, timeout: float
) -> list[str]:
    """Start the API server, the cell servers and their agents; register the cells with the
    API server; return once every cell is up and every node is connected and listed through
    the API server. Returns the node names."""
    root = plan.root
    cli_tls = tls.client("cli") if tls else TlsFiles()
    for cell in plan.cell_names:
        private_dir(cell_dir_of(root, cell))
    servers = {API_PROCESS: (launcher.start(API_PROCESS, api_argv(plan, tls)), plan.api_url)}
    for cell in plan.cell_names:
        servers[cell] = (
            launcher.start(cell, cell_server_argv(plan, cell, tls)),
            plan.cell_url(cell),
        )
    _say(
        f"API server starting at {plan.api_url} (pid {servers[API_PROCESS][0].pid}); cells "
        + ", ".join(f"{c} at {plan.cell_url(c)}" for c in plan.cell_names)
    )
    for name, (child, url) in servers.items():
        what = "the API server" if name == API_PROCESS else f"the server of {name}"
        wait_healthy(url, child, root / "logs" / f"{name}.log", timeout, cli_tls, what)
    agents: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    cell_tokens: dict[str, str] = {}
    for cell in plan.cell_names:
        cell_tokens[cell] = read_admin_token(cell_dir_of(root, cell), f"cell {cell}")
        with Client(plan.cell_url(cell), cell_tokens[cell], tls=cli_tls) as client:
            for node in plan.node_names(cell):
                enroll(client, node, agent_home(plan, cell, node) / "token")
                agents[node] = (
                    launcher.start(node, agent_argv(plan, cell, node, tls)),
                    root / "logs" / f"{node}.log",
                )
    _say(f"agents starting: {', '.join(agents)}")
    for cell in plan.cell_names:
        with Client(plan.cell_url(cell), cell_tokens[cell], tls=cli_tls) as client:
            mine = {n: agents[n] for n in plan.node_names(cell)}
            wait_connected(client, mine, timeout)
            for node in mine:  # sim nodes are fenced through their cell's sim fabric
                client.request(
                    "PUT", f"/nodes/{node}/power", json={"driver": "sim", "address": node}
                )
    ca_pem = Path(tls.ca).read_text() if tls else None
    api_token = read_admin_token(root, "the API server")
    with Client(plan.api_url, api_token, tls=cli_tls) as client:
        for cell in plan.cell_names:
            register_cell(client, cell, plan.cell_url(cell), cell_tokens[cell], ca_pem)
        expected = {c: plan.node_names(c) for c in plan.cell_names}
        wait_cells_ready(client, expected, timeout, root / "logs")
    return list(agents)


def register_cell(client: Client, cell: str, url: str, token: str, ca_pem: str | None) -> None:
    """Add cell ``cell`` to the API server; one of a past run (same data dir) is updated to
    this run's URL, token and CA instead."""
    body = {"url": url, "token": token, "ca_pem": ca_pem}
    try:
        client.post("/cells", {"name": cell, **body})
    except ApiError as exc:
        if exc.status != 409:
            raise
        client.request("PATCH", f"/cells/{cell}", json=body)


def wait_cells_ready(
    client: Client, cells: dict[str, list[str]], timeout: float, logs: Path
) -> None:
    """Until the API server says every cell is up and lists every node as connected."""
    deadline = time.monotonic() + timeout
    while True:
        listed = {c.get("name"): c for c in (client.get("/cells").get("items") or [])}
        down = [c for c in cells if (listed.get(c) or {}).get("state") != "up"]
        waiting = down
        if not down:
            nodes = {n.get("name"): n for n in client.list_all("/nodes")}
            every = [n for names in cells.values() for n in names]
            waiting = [n for n in every if not (nodes.get(n) or {}).get("connected")]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            why = "; ".join(
                f"{c}: {(listed.get(c) or {}).get('error') or (listed.get(c) or {}).get('state')}"
                for c in down
            )
            raise CliError(
                f"the API server at {client.base_url} did not see {', '.join(waiting)} ready"
                f" after {timeout:g}s{f' ({why})' if why else ''}; see the logs in {logs}"
            )
        time.sleep(0.2)  # backoff between polls


def cells_lines(plan: CellsPlan) -> list[str]:
    """What `bollard up --cells` prints about the cells, before the usual usage lines."""
    lines = [f"Cells behind the API server {plan.api_url}:"]
    for cell in plan.cell_names:
        home = cell_dir_of(plan.root, cell)
        lines.append(
            f"  {cell}: server {plan.cell_url(cell)}, nodes {', '.join(plan.node_names(cell))};"
            f" data dir {home}"
        )
    first = cell_dir_of(plan.root, plan.cell_names[0])
    lines += [
        "  `bollard cell list` shows them; `bollard vm create NAME ... --cell cell1` picks one;",
        f"  `bollard sim list --data-dir {first}` shows a cell's sim hosts",
    ]
    return lines


# -- stopping -----------------------------------------------------------------------------


def stop_in_order(
    record: ClusterRecord,
    *,
    timeout: float,
    children: dict[int, subprocess.Popen[bytes]] | None = None,
) -> tuple[list[str], list[str]]:
    """Stop the agents first (so they do not churn reconnecting), then the cell servers,
    then the API server (or the servers of a cluster without cells). Returns (names that were
    running, names that needed SIGKILL)."""

    def server(name: str) -> bool:
        return name == API_PROCESS or _SERVER_NAME.fullmatch(name) is not None

    waves: list[Iterable[ProcessRecord]] = [
        [p for p in record.processes if not server(p.name) and not _CELL_NAME.fullmatch(p.name)],
        [p for p in record.processes if _CELL_NAME.fullmatch(p.name)],
        [p for p in record.processes if server(p.name)],
    ]
    ran: list[str] = []
    killed: list[str] = []
    for wave in waves:
        stopped, forced = stop_processes(wave, timeout=timeout, children=children)
        ran += stopped
        killed += forced
    return ran, killed


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)
