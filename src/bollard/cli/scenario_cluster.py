"""The local cluster a scenario runs on: a server and one sim agent per node of the scenario,
each node with its own size, in a data dir of its own on a free port.

Built from `bollard up`'s parts (cluster.py, up_cells.py): the processes are recorded in
``DATA_DIR/cluster.json`` as `bollard up` records them, so `bollard up --restart-process NODE
--data-dir DATA_DIR`, `bollard sim ... --data-dir DATA_DIR` and `bollard down --data-dir
DATA_DIR` work on it too. It speaks plain HTTP on the loopback (no TLS: a throwaway cluster
that nothing outside this machine talks to).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bollard.cli.client import Client, CliError
from bollard.cli.cluster import (
    ClusterRecord,
    ProcessRecord,
    is_running,
    log_tail,
    read_cluster,
    restart_process,
    spawn,
    stop_processes,
    write_cluster,
)
from bollard.cli.context import fabric_dir_of
from bollard.cli.up_cells import enroll, wait_connected
from bollard.durable import private_dir
from bollard.sim.scenario.model import ClusterSpec, NodeSpec

__all__ = ["ScenarioCluster", "free_port", "start_cluster"]

STOP_TIMEOUT = 10.0
RECONNECT_MAX = 0.5  # agents try a restarted server again within half a second
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bollard() -> list[str]:
    return [sys.executable, "-m", "bollard"]


@dataclass
class ScenarioCluster:
    root: Path
    url: str
    client: Client
    children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def fabric_dir(self) -> Path:
        return fabric_dir_of(self.root)

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def record(self) -> ClusterRecord:
        record = read_cluster(self.root)
        if record is None:
            raise CliError(f"the cluster's record {self.root / 'cluster.json'} is gone")
        return record

    def process(self, name: str) -> ProcessRecord:
        proc = self.record().find(name)
        if proc is None:
            raise CliError(f"no process {name!r} in the scenario's cluster")
        return proc

    def restart(self, name: str) -> ProcessRecord:
        """Start process ``name`` again exactly as recorded (stopping it first if it runs)."""
        return restart_process(self.root, name, timeout=STOP_TIMEOUT)

    def wait_healthy(self, timeout: float) -> None:
        """Until the (restarted) server answers /healthz; CliError at the deadline."""
        proc = self.process("server")
        if not _healthy(self.url, timeout, lambda: is_running(proc.pid, proc.argv)):
            raise CliError(
                f"the server at {self.url} was not healthy after {timeout:g} s; see "
                f"{self.log('server')}:\n{log_tail(self.log('server'))}"
            )

    def stop(self) -> None:
        """Stop every process at once (SIGTERM, SIGKILL past the deadline) and close the
        client: the scenario is over, nothing of the cluster is kept but its files."""
        self.client.close()
        record = read_cluster(self.root)
        if record is not None:
            stop_processes(record.processes, timeout=STOP_TIMEOUT, children=self.children)
        for child in self.children.values():
            child.poll()  # reap


class _Launcher:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.record = ClusterRecord(url=url, data_dir=str(root))
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.root / "logs" / f"{name}.log"
        child = spawn(argv, log)
        self.children[child.pid] = child
        self.record.put(ProcessRecord(name=name, pid=child.pid, argv=argv, log=str(log)))
        write_cluster(self.root, self.record)
        return child


def _agent_argv(root: Path, url: str, node: NodeSpec, spec: ClusterSpec) -> list[str]:
    home = root / "agents" / node.name
    return [
        *_bollard(),
        "agent",
        "--server",
        url,
        "--node",
        node.name,
        "--token-file",
        str(home / "token"),
        "--driver",
        "sim",
        "--state-dir",
        str(home / "state"),
        "--fabric-dir",
        str(fabric_dir_of(root)),
        "--sim-latency",
        f"{spec.sim_latency:g}",
        "--vcpus",
        str(node.vcpus),
        "--memory-mb",
        str(node.memory_mb),
        "--reconnect-max",
        f"{RECONNECT_MAX:g}",
    ]


def _healthy(url: str, timeout: float, running: Callable[[], bool]) -> bool:
    """Whether the server at ``url`` answers /healthz within ``timeout`` seconds (False at
    once when ``running`` says its process is gone)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=2.0) as http:
        while running():
            try:
                if http.get("/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)  # backoff between probes
    return False


def _alive(child: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: child.poll() is None


def _server_argv(root: Path, port: int, spec: ClusterSpec) -> list[str]:
    return [
        *_bollard(),
        "server",
        "--data-dir",
        str(root),
        "--listen",
        f"127.0.0.1:{port}",
        "--heartbeat-interval",
        f"{spec.heartbeat:g}",
        "--sim-fabric-dir",
        str(fabric_dir_of(root)),
    ]


def _start_server(launcher: _Launcher, spec: ClusterSpec, timeout: float) -> str:
    """Start the server on a free port and wait until it is healthy; its URL. A port taken
    by someone else between the look and the server's bind (another scenario starting at
    the same time) is tried again with another one."""
    log = launcher.root / "logs" / "server.log"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        launcher.record.url = url
        server = launcher.start("server", _server_argv(launcher.root, port, spec))
        if _healthy(url, timeout, _alive(server)):
            return url
        if server.poll() is None:
            raise CliError(f"the server at {url} was not healthy after {timeout:g} s; see {log}")
        if "address already in use" not in log_tail(log, 40).lower() or attempt == PORT_ATTEMPTS:
            raise CliError(
                f"the server exited with code {server.returncode} during start-up; "
                f"see {log}:\n{log_tail(log)}"
            )
    raise CliError("the server could not start")  # (not reached)


def start_cluster(
    spec: ClusterSpec, root: Path, *, timeout: float, say: Callable[[str], object]
) -> ScenarioCluster:
    """Start the server and the agents of ``spec`` in ``root``; return once every node is
    connected and has its sim power driver. Stops what it started if anything fails."""
    private_dir(root)
    for sub in ("logs", "agents"):
        (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    launcher = _Launcher(root, "")
    try:
        url = _start_server(launcher, spec, timeout)
        token = (root / "admin.token").read_text().strip()
        client = Client(url, token)
        cluster = ScenarioCluster(root, url, client, launcher.children)
        agents: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for node in spec.nodes:
            enroll(client, node.name, root / "agents" / node.name / "token")
            child = launcher.start(node.name, _agent_argv(root, url, node, spec))
            agents[node.name] = (child, root / "logs" / f"{node.name}.log")
        wait_connected(client, agents, timeout)
        for node in spec.nodes:  # sim nodes are fenced through the sim fabric
            client.request(
                "PUT", f"/nodes/{node.name}/power", json={"driver": "sim", "address": node.name}
            )
    except BaseException:
        stop_processes(launcher.record.processes, timeout=STOP_TIMEOUT, children=launcher.children)
        raise
    say(f"cluster up at {url}: server and {len(spec.nodes)} agents in {root}")
    return cluster
