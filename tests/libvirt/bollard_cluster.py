"""A Bollard cluster on real libvirt hosts: a `bollard server` process and one
`bollard agent --driver libvirt` process per host, on free loopback ports."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import free_port, wait_until
from tests.support.libvirt_env import Guest, LibvirtHost
from tests.support.libvirt_storage import tool_prefix

GUEST_CMDLINE = "console=ttyS0 quiet panic=-1"
_COUNTER = re.compile(rb"bollard-guest counter (\d+)\r?\n")


def last_counter(log: str) -> int | None:
    found = _COUNTER.findall(log.encode(errors="replace"))
    return int(found[-1]) if found else None


@dataclass
class LibvirtCluster:
    root: Path
    hosts: list[LibvirtHost]
    guest: Guest
    heartbeat: float
    url: str = ""
    client: httpx.Client | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bollard", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def start_server(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn("server", ["server", "--data-dir", str(self.root / "server"),
                               "--listen", f"127.0.0.1:{port}",
                               "--heartbeat-interval", f"{self.heartbeat:g}"])  # fmt: skip
        token_file = self.root / "server" / "admin.token"
        wait_until("the server's admin token", token_file.exists)
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
            timeout=30,
        )
        wait_until("the server to answer", self._answers)

    def _answers(self) -> bool:
        try:
            return self.api.get("/status").status_code == 200
        except httpx.TransportError:
            return False

    def enroll_and_start_agents(self) -> None:
        for host in self.hosts:
            answer = self.api.post("/nodes", json={"name": host.name})
            answer.raise_for_status()
            token = self.root / host.name / "token"
            token.parent.mkdir(parents=True, exist_ok=True)
            token.write_text(answer.json()["token"])
            token.chmod(0o600)
            self.start_agent(host)
        for host in self.hosts:
            wait_until(f"{host.name} to connect", lambda h=host: self.node(h.name)["connected"])  # type: ignore[misc]

    def agent_argv(self, host: LibvirtHost, *extra: str) -> list[str]:
        home = self.root / host.name
        return ["agent", "--server", self.url, "--node", host.name,
                "--token-file", str(home / "token"), "--state-dir", str(home / "state"),
                "--driver", "libvirt", "--libvirt-uri", host.uri,
                "--libvirt-domain-type", "qemu",
                # The same path on every host, as a real deployment has it: a domain's
                # console log path travels with it when it migrates.
                "--libvirt-console-dir", str(self.root / "consoles"),
                "--libvirt-boot-kernel", str(self.guest.kernel),
                "--libvirt-boot-initrd", str(self.guest.initrd),
                "--libvirt-boot-cmdline", GUEST_CMDLINE,
                "--libvirt-migration-uri", host.uri,
                "--libvirt-migration-address", "127.0.0.1",
                # The daemon sees its pools' files in its own mount namespace: qemu-img
                # (snapshots, checksums, copies within the host) runs there.
                "--libvirt-tool-prefix", shlex.join(tool_prefix(host)), *extra]  # fmt: skip

    def start_agent(self, host: LibvirtHost, *extra: str) -> None:
        self._spawn(host.name, self.agent_argv(host, *extra))

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.client is not None:
            self.client.close()

    def node(self, name: str) -> dict[str, Any]:
        node: dict[str, Any] = self.api.get(f"/nodes/{name}").json()
        return node

    def vm(self, name: str) -> dict[str, Any]:
        vm: dict[str, Any] = self.api.get(f"/vms/{name}").json()
        return vm

    def wait_task(self, answer: httpx.Response, timeout: float = 120.0) -> dict[str, Any]:
        assert answer.status_code == 202, answer.text
        return self.wait_task_id(answer.json()["task"]["id"], timeout)

    def wait_task_id(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task: dict[str, Any] = self.api.get(
                f"/tasks/{task_id}/wait", params={"timeout": 10}
            ).json()
            if task["finished_at"] is not None:
                return task
            if time.monotonic() >= deadline:
                raise AssertionError(f"task {task_id} did not end: {task}")

    def console(self, vm: str, lines: int = 20) -> dict[str, Any]:
        answer = self.api.get(f"/vms/{vm}/console", params={"lines": lines})
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def counter(self, vm: str) -> int | None:
        return last_counter(self.console(vm)["log"])

    def logs(self) -> str:
        out = []
        for log in sorted((self.root / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-30:]
            out.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(out)


@contextmanager
def libvirt_cluster(
    root: Path, hosts: list[LibvirtHost], guest: Guest, heartbeat: float = 5.0
) -> Iterator[LibvirtCluster]:
    (root / "logs").mkdir(parents=True, exist_ok=True)
    cluster = LibvirtCluster(root, hosts, guest, heartbeat)
    try:
        cluster.start_server()
        cluster.enroll_and_start_agents()
        yield cluster
    finally:
        cluster.stop()
