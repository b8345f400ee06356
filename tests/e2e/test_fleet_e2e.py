"""`bollard fleet` against a real server process: the fleet's hosts connect, its VMs are
created through the API and churned (start, stop, live migrate) with every operation
succeeding and the server's records following them (owners, epochs, allocations, power),
no reconcile difference at any time, nodes disconnected once the fleet stops; a second run
with the same prefix is refused in one line; `--adopt` plays the hosts of nodes the server
already has, with their VMs defined and running where they should; usage errors.

The server is `bollard server` started directly (no `bollard up`); the fleet gets its URL and
admin token from BOLLARD_URL / BOLLARD_TOKEN, never from its argv. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HEARTBEAT = 1.0
VM_MEMORY = 512  # the fleet's default --vm-memory
FLEET_TIMEOUT = 60.0  # a whole fleet run, start to exit


@dataclass
class Server:
    url: str
    token: str
    env: dict[str, str]  # for the fleet: a clean environment, no BOLLARD_* but these two
    http: httpx.Client
    root: Path

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code < 300, f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    def nodes(self, prefix: str) -> dict[str, dict[str, Any]]:
        items = self.get("/nodes", limit=1000)["items"]
        return {n["name"]: n for n in items if n["name"].startswith(prefix)}

    def vms(self, prefix: str) -> dict[str, dict[str, Any]]:
        items = self.get("/vms", limit=1000)["items"]
        return {v["name"]: v for v in items if v["name"].startswith(prefix)}

    def differences(self, prefix: str) -> list[dict[str, Any]]:
        diffs: list[dict[str, Any]] = self.get("/reconcile")["differences"]
        return [
            d
            for d in diffs
            if (d.get("vm") or "").startswith(prefix) or (d.get("node") or "").startswith(prefix)
        ]

    def events(self, prefix: str) -> list[dict[str, Any]]:
        """Every event about a VM or node named PREFIX..., oldest first."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get("/events", after=after, limit=1000)
            if not page["items"]:
                return found
            found.extend(
                e
                for e in page["items"]
                if (e["vm"] or "").startswith(prefix) or (e["node"] or "").startswith(prefix)
            )
            after = page["last_id"]

    def wait_task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self.get(f"/tasks/{task_id}/wait", timeout=30)
        return task


def _clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_CONFIG_DIR=str(root / "config"), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fleet")
    data_dir = root / "data"
    data_dir.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    env = _clean_env(root)
    log_path = root / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "bollard", "server", "--data-dir", str(data_dir),
                "--listen", url.removeprefix("http://"), "--heartbeat-interval", str(HEARTBEAT),
                "--log-level", "warning",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"the server exited {proc.returncode}:\n{log_path.read_text()}")
                return (data_dir / "admin.token").exists() and _healthy(url)

            wait_until("the server to answer", up, timeout=30)
            token = (data_dir / "admin.token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=60) as http:
                yield Server(
                    url, token, {**env, "BOLLARD_URL": url, "BOLLARD_TOKEN": token}, http, root
                )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@dataclass
class FleetRun:
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def finish(self, timeout: float = FLEET_TIMEOUT) -> tuple[int, str, str]:
        """Wait (with a deadline) for the fleet to exit: its status, stdout and stderr."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the fleet did not exit within {timeout}s:\n{self.err()}")
        return code, self.stdout.read_text(), self.err()

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, as an operator's Ctrl-C would end it; then as ``finish``."""
        self.proc.send_signal(signal.SIGTERM)
        return self.finish()


@contextmanager
def fleet(server: Server, name: str, *args: str) -> Iterator[FleetRun]:
    """`bollard fleet ARGS` in the background (output in files, not pipes that could fill
    up); killed at the end if it is still running."""
    out, err = server.root / f"{name}.out", server.root / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bollard", "fleet", *args],
            env=server.env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    run = FleetRun(proc, out, err)
    try:
        yield run
    finally:
        if run.alive():
            proc.kill()
            proc.wait(timeout=15)


def _run_fleet(server: Server, name: str, *args: str) -> tuple[int, str, str]:
    with fleet(server, name, *args) as run:
        return run.finish()


def _status(path: Path) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # not written yet (it is replaced atomically, never seen half-written)
    return status


def _wait_connected(server: Server, prefix: str, count: int, connected: bool) -> None:
    what = "connected" if connected else "disconnected"
    wait_until(
        f"{count} {prefix} nodes {what}",
        lambda: (
            len(nodes := server.nodes(prefix)) == count
            and all(n["connected"] is connected for n in nodes.values())
        ),
        timeout=20,
    )


# -- a fleet with churn ------------------------------------------------------------------------


def test_fleet_creates_churns_and_leaves_consistent_records(server: Server, tmp_path: Path) -> None:
    prefix, nodes, per_node = "churn", 3, 4
    status_file = tmp_path / "status.json"
    # 8 s of steady state at 4 ops/s: ~30 operations on 12 VMs, about half of those on
    # running VMs migrations, so "no migration at all" is out of the question (< 2^-12);
    # and longer than the fleet's 5 s status period, so the status file says "running"
    # for at least 3 s.
    args = [
        "--prefix", prefix, "--nodes", str(nodes), "--vms-per-node", str(per_node),
        "--churn", "4", "--duration", "8", "-o", "json", "--status-file", str(status_file),
    ]  # fmt: skip
    node_names = [f"{prefix}-{i:04d}" for i in range(1, nodes + 1)]
    with fleet(server, "churn", *args) as run:

        def running() -> bool:
            if not run.alive():
                pytest.fail(f"the fleet exited {run.proc.returncode} early:\n{run.err()}")
            status = _status(status_file)
            return status is not None and status["phase"] == "running"

        wait_until("the fleet's status file to say running", running, timeout=40)
        # While it runs: every host connected, every VM known to the server.
        seen = server.nodes(prefix)
        assert sorted(seen) == node_names
        assert all(n["connected"] and n["health"] == "up" for n in seen.values()), seen
        assert len(server.vms(prefix)) == nodes * per_node
        assert run.alive(), "the fleet stopped while the server was being checked"
        # And, however the churn moves VMs around, the database and the hosts never
        # disagree: every scan until the fleet stops finds no difference.
        scans = 0
        deadline = time.monotonic() + FLEET_TIMEOUT
        while run.alive() and time.monotonic() < deadline:
            assert server.differences(prefix) == []
            scans += 1
            time.sleep(0.2)  # the scans' pace, not synchronisation
        assert scans >= 1
        code, out, err = run.finish()

    assert code == 0, err
    assert "Traceback" not in err, err
    status = json.loads(out)
    assert status["phase"] == "stopped"
    assert (status["nodes"], status["vms_created"], status["vms_failed"]) == (3, 12, 0)
    written = _status(status_file)
    assert written is not None and written["phase"] == "stopped"
    churn = status["churn"]
    succeeded = Counter(churn["succeeded"])
    assert churn["failed"] == {} and churn["errors"] == {}, churn
    assert churn["started"] == churn["succeeded"]  # every operation it began, it saw end
    assert succeeded.total() > 0
    assert succeeded["migrate"] >= 1, churn

    # Once stopped, the hosts are gone: their nodes go disconnected.
    _wait_connected(server, prefix, nodes, connected=False)

    # Every VM is settled, in the state its last operation left it.
    vms = server.vms(prefix)
    assert len(vms) == nodes * per_node
    for vm in vms.values():
        assert vm["task_state"] is None and vm["task_id"] is None, vm
        expected = "active" if vm["desired_power"] == "running" else "stopped"
        assert vm["vm_state"] == expected, vm
        assert vm["node"] in node_names, vm
    running_vms = sum(vm["desired_power"] == "running" for vm in vms.values())
    assert running_vms == len(vms) - succeeded["stop"] + succeeded["start"]

    # Migrations moved owners: each one is one epoch more on one VM, one vm.migrated event,
    # and the nodes' allocations follow the VMs to their new owners.
    assert sum(vm["epoch"] - 1 for vm in vms.values()) == succeeded["migrate"]
    events = server.events(prefix)
    kinds = Counter(e["kind"] for e in events)
    assert kinds["vm.migrated"] == succeeded["migrate"]
    owners = Counter(vm["node"] for vm in vms.values())
    for name, node in server.nodes(prefix).items():
        assert node["vm_count"] == owners[name], (name, node, owners)
        assert node["allocated"]["memory_mb"] == VM_MEMORY * owners[name], (name, node)
    # The server's own reconciler never found anything to report either.
    assert not [e for e in events if e["kind"].startswith("reconcile.")], [
        e for e in events if e["kind"].startswith("reconcile.")
    ]


# -- a second run with the same prefix --------------------------------------------------------


def test_second_run_with_same_prefix_is_refused_in_one_line(server: Server) -> None:
    prefix = "twice"
    code, out, err = _run_fleet(
        server, "twice-1", "--prefix", prefix, "--nodes", "2", "--vms-per-node", "1",
        "--duration", "0", "-o", "json", "-q",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["vms_created"] == 2
    _wait_connected(server, prefix, 2, connected=False)

    code, out, err = _run_fleet(
        server, "twice-2", "--prefix", prefix, "--nodes", "3", "--vms-per-node", "1", "-q"
    )
    assert code == 1, (out, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "already exist" in lines[0], lines[0]
    assert f"{prefix}-0001" in lines[0]
    # Refused before anything was enrolled or created.
    assert sorted(server.nodes(prefix)) == [f"{prefix}-0001", f"{prefix}-0002"]
    assert len(server.vms(prefix)) == 2


# -- --batch ---------------------------------------------------------------------------------


def test_batch_creates_each_nodes_vms_in_batches(server: Server) -> None:
    prefix = "batched"
    code, out, err = _run_fleet(
        server, "batched", "--prefix", prefix, "--nodes", "2", "--vms-per-node", "5",
        "--batch", "2", "--duration", "0", "-o", "json", "-q",
    )  # fmt: skip
    assert code == 0, err
    status = json.loads(out)
    assert (status["vms_created"], status["vms_failed"]) == (10, 0), status
    names = {f"{prefix}-{n:04d}-b{b:03d}-{i}" for n in (1, 2) for b, i in
             [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]}  # fmt: skip
    vms = server.vms(prefix)
    assert set(vms) == names, sorted(vms)
    assert all(vm["node"] == name.rsplit("-b", 1)[0] for name, vm in vms.items())


# -- --adopt --------------------------------------------------------------------------------


def _report_twice_more(server: Server, prefix: str, incarnations: dict[str, str | None]) -> None:
    """Wait until every node of ``prefix`` has an agent incarnation other than the one in
    ``incarnations``, with its inventory known, and has reported twice since."""
    fresh: dict[str, int] = {}

    def probe() -> bool:
        for name, node in server.nodes(prefix).items():
            if node["agent_incarnation"] == incarnations[name] or not node["inventory_known"]:
                return False
            fresh.setdefault(name, int(node["last_seq"]))
            if int(node["last_seq"]) < fresh[name] + 2:
                return False
        return True

    wait_until(f"the {prefix} nodes' new agents to report twice", probe, timeout=20)


def test_adopt_plays_existing_nodes_with_their_vms(server: Server, tmp_path: Path) -> None:
    prefix = "adopt"
    names = [f"{prefix}-0001", f"{prefix}-0002"]
    tokens = {n: server.post("/nodes", {"name": n})["token"] for n in names}
    tokens_file = tmp_path / "tokens.json"
    tokens_file.touch(mode=0o600)
    tokens_file.write_text(json.dumps(tokens))

    # A first adopting fleet hosts the (empty) nodes while VMs are created on them.
    with fleet(server, "adopt-1", "--adopt", str(tokens_file), "-o", "json", "-q") as first:
        _wait_connected(server, prefix, 2, connected=True)
        plan = [  # (name, node, start)
            (f"{prefix}-vm1", names[0], True),
            (f"{prefix}-vm2", names[1], True),
            (f"{prefix}-vm3", names[0], False),
        ]
        for name, node, start in plan:
            body = {"name": name, "node": node, "vcpus": 1, "memory_mb": 256, "start": start}
            task = server.post("/vms", body)["task"]
            assert server.wait_task(task["id"])["state"] == "succeeded", name
        code, out, err = first.stop()
    assert code == 0, err
    status = json.loads(out)
    assert (status["phase"], status["nodes"], status["vms_created"]) == ("stopped", 2, 0)
    _wait_connected(server, prefix, 2, connected=False)
    before = server.nodes(prefix)
    incarnations = {name: node["agent_incarnation"] for name, node in before.items()}

    # A second one, knowing nothing but the tokens, plays the same hosts with those VMs.
    with fleet(server, "adopt-2", "--adopt", str(tokens_file), "-o", "json", "-q") as second:
        _wait_connected(server, prefix, 2, connected=True)
        _report_twice_more(server, prefix, incarnations)
        vms = server.vms(prefix)
        assert sorted(vms) == [name for name, _node, _start in plan]
        for name, node, start in plan:
            vm = server.get(f"/vms/{name}")  # one VM: with what its owner host reports
            assert vm["node"] == node
            assert vm["desired_power"] == ("running" if start else "stopped"), vm
            assert vm["observed_power"] == vm["desired_power"], vm
            assert (vm["observed_vcpus"], vm["observed_memory_mb"]) == (1, 256), vm
            assert vm["status"] == ("ACTIVE" if start else "SHUTOFF"), vm
        assert server.differences(prefix) == []
        code, out, err = second.stop()
    assert code == 0, err
    status = json.loads(out)
    assert (status["phase"], status["nodes"], status["vms_created"]) == ("stopped", 2, 3)
    # No host ever disagreed with the records: nothing for the reconciler to report or fix.
    reconcile = [e for e in server.events(prefix) if e["kind"].startswith("reconcile.")]
    assert reconcile == []


# -- usage ------------------------------------------------------------------------------------


def _usage_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**_clean_env(tmp_path), **extra}


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bollard", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_fleet_without_a_size_or_adopt_is_a_usage_error(tmp_path: Path) -> None:
    # Nothing listens there: the usage is judged before any request.
    env = _usage_env(tmp_path, BOLLARD_URL=f"http://127.0.0.1:{free_port()}", BOLLARD_TOKEN="t")
    for args in ([], ["--nodes", "2"], ["--vms-per-node", "2"]):
        line = _one_line_error(_run_cli(env, "fleet", *args))
        assert "--nodes and --vms-per-node are needed" in line, (args, line)
        assert "--adopt" in line, line
    no_token = _usage_env(tmp_path, BOLLARD_URL=f"http://127.0.0.1:{free_port()}")
    line = _one_line_error(_run_cli(no_token, "fleet", "--nodes", "1", "--vms-per-node", "0"))
    assert "no admin token" in line, line


def test_fleet_help_mentions_churn_and_adopt(tmp_path: Path) -> None:
    result = _run_cli(_usage_env(tmp_path), "fleet", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--churn", "--adopt", "--nodes", "--vms-per-node", "--status-file"):
        assert option in result.stdout, option
