"""A cluster of two releases: `bollard up --servers 2` of the previous release (its source taken
from this repository's history), whose processes are then replaced one at a time by this
release's, as an operator upgrades: stop one, start it again from the same record
(`bollard up --restart-process`) with the new code. Which code a process runs is which source
its Python imports: the previous release's through PYTHONPATH, this one's (installed) without."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from bollard.cli.cluster import stop_processes
from bollard.sim.fabric import Fabric
from tests.chaos.cluster import UP_TIMEOUT, Api, ChaosError, LocalCluster, poll_until
from tests.chaos.servers_cluster import consecutive_free_ports

REPO = Path(__file__).resolve().parents[2]
RELEASE_FILE = Path(__file__).parent / "previous_release"
TASK_TIMEOUT = 60.0
Code = Literal["previous", "this"]


def previous_release() -> str:
    return RELEASE_FILE.read_text().split()[0]


def unavailable_history() -> str | None:
    """Why the previous release's source cannot be had here (None: it can)."""
    if not (REPO / ".git").exists():
        return f"{REPO} is not a git checkout: the previous release comes from its history"
    shallow = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if shallow.stdout.strip() == "true":
        return f"{REPO} is a shallow clone: the previous release's commit may be missing"
    return None


def extract_previous(into: Path) -> Path:
    """The previous release's ``src`` (git archive of its commit), under ``into``."""
    commit = previous_release()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src"],
        capture_output=True, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        raise AssertionError(
            f"the previous release {commit} (tests/upgrade/previous_release) is not in this "
            f"repository's history: {archive.stderr.decode().strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    src = into / "src"
    assert (src / "bollard" / "__init__.py").is_file(), f"no bollard package in {commit}"
    return src


@dataclass
class MixedCluster(LocalCluster):
    """Servers server1, server2 on ``db_url``; agents node1, node2 (each knows both servers,
    server1 first). ``code`` says which release each process runs."""

    db_url: str = ""
    previous_src: Path = Path()
    ports: dict[str, int] = field(default_factory=dict)
    code: dict[str, Code] = field(default_factory=dict)

    def use(self, code: Code) -> None:
        """The code the next `bollard` command (and the processes it starts) runs."""
        self.env.pop("PYTHONPATH", None)
        if code == "previous":
            self.env["PYTHONPATH"] = str(self.previous_src)

    def url_of(self, server: str) -> str:
        return f"http://127.0.0.1:{self.ports[server]}"

    def start_previous(self, nodes: int) -> None:
        port = consecutive_free_ports(2)
        self.use("previous")
        started = self.cli(
            "up", "--detach", "--servers", "2", "--db", self.db_url, "--nodes", str(nodes),
            "--sim-latency", "0.05", "--heartbeat", "0.5", "--data-dir", str(self.data_dir),
            "--port", str(port), "--insecure-http", "--agent-reconnect-max", "2",
            timeout=UP_TIMEOUT,
        )  # fmt: skip
        if started.returncode != 0:
            raise ChaosError(f"previous release's bollard up failed:\n{started.stderr}")
        self.ports = {"server1": port, "server2": port + 1}
        self.url = self.url_of("server1")
        self.token = (self.data_dir / "admin.token").read_text().strip()
        self.code = {name: "previous" for name in self.names()}

    def replace(self, name: str, code: Code = "this") -> None:
        """Stop process ``name`` (SIGTERM: a clean stop) and start it again running ``code``."""
        stop_processes([self.find(name)])
        self.use(code)
        self.restart(name)
        self.code[name] = code
        if name in self.ports:
            poll_until(f"{name} answers", lambda: self._healthy(name), UP_TIMEOUT)

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(self.url_of(name) + "/healthz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def api_of(self, server: str) -> Api:
        return Api(self.url_of(server), self.token, timeout=30.0)

    def servers_view(self, server: str) -> dict[str, Any]:
        with self.api_of(server) as api:
            view: dict[str, Any] = api.get("/servers")
        return view

    def wait_settled(self, nodes: int) -> dict[str, Any]:
        """Both servers up with a leader and every agent connected, as each server sees it."""

        def settled() -> dict[str, Any] | None:
            views = [self.servers_view(s) for s in self.ports]
            for view in views:
                up = [s for s in view["items"] if s["state"] == "up"]
                if len(up) != 2 or view["leader"] not in {s["id"] for s in up}:
                    return None
                if sum(s["agents"] for s in up) != nodes:
                    return None
            return views[0]

        return poll_until("both servers up, a leader, every agent connected", settled, 60.0)

    def act(self, server: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an operation to ``server`` and wait for its task; returns the ended task."""
        with self.api_of(server) as api:
            answer = api.http.post(path, json=body)
            assert answer.status_code == 202, f"{path} through {server}: {answer.text}"
            task_id = answer.json()["task"]["id"]
            deadline = time.monotonic() + TASK_TIMEOUT
            while time.monotonic() < deadline:
                task: dict[str, Any] = api.get(f"/tasks/{task_id}/wait", timeout=5)
                if task["finished_at"] is not None:
                    assert task["state"] == "succeeded", f"{path} through {server}: {task}"
                    return task
        raise AssertionError(f"{path} through {server}: task {task_id} did not end")

    def replace_agent(self, node: str, code: Code = "this") -> None:
        """An agent's upgrade as the README says to do it: under cluster maintenance (no
        fence of a host whose agent is away for longer than the dead wait), then its node up
        again before maintenance ends."""
        self.maintenance(True)
        self.replace(node, code)
        poll_until(f"{node} up again", lambda: self._node_up(node), 60.0)
        self.maintenance(False)

    def maintenance(self, on: bool) -> None:
        with self.api_of("server1" if self._healthy("server1") else "server2") as api:
            answer = api.http.put("/cluster/maintenance", json={"maintenance": on})
            assert answer.status_code == 200, answer.text

    def _node_up(self, node: str) -> bool:
        with self.api_of("server2") as api:
            found = api.get(f"/nodes/{node}")
        return bool(found["connected"]) and found["health"] == "up"

    def running_on(self, uuid: str) -> list[str]:
        snapshot = Fabric(self.fabric_dir).snapshot()
        return sorted(n for n, found in snapshot.items() for v in found
                      if v.uuid == uuid and v.power.value == "running")  # fmt: skip

    def log_of(self, name: str) -> str:
        return Path(self.find(name).log).read_text(errors="replace")
