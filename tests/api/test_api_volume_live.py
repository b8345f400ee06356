"""Live volume migration through the real server and sim agents, on SQLite and PostgreSQL: a
running VM's attached volume moves from pool `local` to a shared pool while the guest runs
(block copy, mirror, pivot: `volume_move_live` on the sim driver), and a move cut short (its
agent stopped mid-copy and started again, or its task cancelled) leaves everything where it
was.

The hosts' ground truth is read from the sim fabric throughout: the VM's power (watched
during the whole task: it must never stop), the file its device uses, the volumes' content
checksums (a write behind Bollard's back during the copy, as the guest's, must be in the new
file: the mirror).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.agent.volume_locks import DirLocks
from bollard.sim.storage import PoolKey
from bollard.sim.storage_models import SimVolume
from tests.api.test_api_vms import Cluster, _wait
from tests.api.test_api_volumes import (
    done,
    make_pool,
    make_vm,
    make_volume,
    on_host,
    sim_path,
    sim_vm,
    storage,
    write,
)
from tests.support.cluster import AgentThread, ServerThread, wait_until

RATE = 10.0  # MiB/s: a 40 MiB volume moves in 4 s
SIZE_MB = 40
NFS = PoolKey("nfs", "shared")


@pytest.fixture
def slow(server: ServerThread, tmp_path: Path) -> Iterator[Cluster]:
    """A server with two sim nodes whose copies and live moves go at RATE MiB/s (the list of
    agents is the fixture's: a test that replaces an agent puts the new one in it)."""
    agents = [
        AgentThread(server, node, tmp_path, vcpus=8, memory_mb=8192, sim_copy_rate=RATE)
        for node in ("node1", "node2")
    ]
    for node in ("node1", "node2"):
        wait_until(functools.partial(connected, server, node), f"{node} to connect")
    yield server, agents
    for agent in agents:
        if agent.thread.is_alive():
            agent.stop()


def connected(server: ServerThread, node: str) -> bool:
    return bool(server.client.get(f"/nodes/{node}").json()["connected"])


def running_vm_with_data(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """VM `web` running on node1 with volume `data` (pool local) attached at vdb, and a
    shared pool `nfs` to move it to; the VM and the volume as shown."""
    c = cluster[0].client
    make_pool(c, "nfs")
    vm = make_vm(c, "web", node="node1", start=True, disks=[{"size_mb": 10}])
    make_volume(c, "data", SIZE_MB, node="node1")
    done(c, c.post("/volumes/data/attach", json={"vm": "web"}))
    data: dict[str, Any] = c.get("/volumes/data").json()
    assert (data["state"], data["vm"], data["device"]) == ("attached", "web", "vdb")
    return vm, data


def targets(cluster: Cluster) -> list[SimVolume]:
    """The files of the shared pool `nfs` (partial ones included)."""
    return storage(cluster).volumes("", NFS, time.time())


def lock_holder(cluster: Cluster, volume: dict[str, Any]) -> tuple[str, str] | None:
    """Who holds the lock of a volume of `nfs` (its lock file, as the agents keep it): the
    node and the VM's uuid; None when it is not locked."""
    holder = DirLocks(storage(cluster).pool_dir("", NFS)).read(volume["file"])
    return None if holder is None else (holder.node, holder.vm_uuid)


class Watch:
    """Waits (for a task's end, for a file to appear...) while watching the VM on node1 in
    the fabric: every observation of its power is kept, to check it never stopped."""

    def __init__(self, cluster: Cluster, vm: dict[str, Any]) -> None:
        self.cluster = cluster
        self.uuid = vm["uuid"]
        self.powers: list[str | None] = []

    def look(self) -> None:
        found = sim_vm(self.cluster, "node1", self.uuid)
        self.powers.append(None if found is None else str(found.power))

    def until(self, what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        def check() -> Any:
            self.look()
            return predicate()

        return wait_until(check, what, timeout)

    def task(self, c: httpx.Client, task_id: str) -> dict[str, Any]:
        """Wait for the task's end (watching); the task as it ended."""
        self.until(f"task {task_id} to end",
                   lambda: c.get(f"/tasks/{task_id}").json()["finished_at"])  # fmt: skip
        task: dict[str, Any] = c.get(f"/tasks/{task_id}").json()
        return task

    def always_running(self) -> None:
        assert self.powers, "the VM was never looked at"
        stopped = [p for p in self.powers if p != "running"]
        assert not stopped, f"the VM was not running at {len(stopped)} of {len(self.powers)} looks"


def test_a_running_vms_volume_moves_live_to_a_shared_pool(slow: Cluster) -> None:
    c = slow[0].client
    vm, data = running_vm_with_data(slow)
    write(slow, data, b"before the move")

    answer = c.post("/volumes/data/migrate", json={"pool": "nfs"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert (accepted["volume"]["state"], accepted["task"]["type"]) == (
        "migrating", "volume_migrate",
    )  # fmt: skip
    watch = Watch(slow, vm)
    # The copy runs: the target is there, partial; the guest keeps writing to the source.
    [partial] = watch.until("the move's target to appear", lambda: targets(slow))
    assert partial.partial is not None and partial.file != data["file"]
    latest = write(slow, data, b"written by the guest during the move")
    shown = c.get("/volumes/data").json()
    assert (shown["state"], shown["pool"], shown["file"]) == ("migrating", "local", data["file"])
    task = watch.task(c, accepted["task"]["id"])
    assert task["state"] == "succeeded", task
    watch.always_running()

    moved = c.get("/volumes/data").json()
    assert (moved["id"], moved["pool"], moved["pool_type"], moved["node"]) == (
        data["id"], "nfs", "shared", None,
    )  # fmt: skip
    assert (moved["state"], moved["vm"], moved["device"], moved["task_id"]) == (
        "attached", "web", "vdb", None,
    )  # fmt: skip
    assert moved["file"] == partial.file and moved["size_mb"] == SIZE_MB
    # The new file is whole and has every write; the old one is gone.
    rec = on_host(slow, moved)
    assert rec is not None and rec.partial is None
    assert rec.checksum == latest
    assert on_host(slow, data) is None, "the old file is still on node1"
    # The guest runs on, from the new file.
    running = sim_vm(slow, "node1", vm["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [(d.device, d.path) for d in running.drives] == [
        ("vda", sim_path(c.get("/volumes/web-vda").json())), ("vdb", sim_path(moved)),
    ]  # fmt: skip
    shown_vm = c.get("/vms/web").json()
    assert shown_vm["status"] == "ACTIVE"
    vdb = next(d for d in shown_vm["disks"] if d.get("volume") == "data")
    assert (vdb["pool"], vdb["state"]) == ("nfs", "attached")
    # One writer per disk: now in a shared pool, it is locked by the VM's host (its lock
    # file, where every host of the pool sees it), as a start would have locked it.
    assert moved["lock"] == {"node": "node1", "epoch": vm["epoch"]}
    assert lock_holder(slow, moved) == ("node1", vm["uuid"])


def _cut_short(
    slow: Cluster, cut: Callable[[Watch, dict[str, Any]], None]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Start moving `data` live, let `cut` interrupt it once its target is there, and wait
    for the task's end (the VM running all along); the task, the volume as it was before,
    its checksum."""
    c = slow[0].client
    vm, data = running_vm_with_data(slow)
    checksum = write(slow, data, b"the guest's data")
    answer = c.post("/volumes/data/migrate", json={"pool": "nfs"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    watch = Watch(slow, vm)
    watch.until("the move's target to appear", lambda: targets(slow))
    cut(watch, accepted["task"])
    task = watch.task(c, accepted["task"]["id"])
    watch.always_running()
    return task, data, checksum


def _left_where_it_was(slow: Cluster, data: dict[str, Any], checksum: str) -> dict[str, Any]:
    """The volume is where it was, whole, its content as it was; the VM runs on it; the
    target is gone. The volume as shown."""
    c = slow[0].client
    shown: dict[str, Any] = c.get("/volumes/data").json()
    assert (shown["pool"], shown["node"], shown["file"], shown["task_id"]) == (
        "local", "node1", data["file"], None,
    )  # fmt: skip
    assert (shown["vm"], shown["device"]) == ("web", "vdb")
    rec = on_host(slow, data)
    assert rec is not None and rec.partial is None and rec.checksum == checksum
    wait_until(lambda: targets(slow) == [], "the partial target to be removed")
    running = sim_vm(slow, "node1", c.get("/vms/web").json()["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [d.path for d in running.drives if d.device == "vdb"] == [sim_path(data)]
    return shown


def _restart_node1(slow: Cluster) -> Callable[[Watch, dict[str, Any]], None]:
    def cut(watch: Watch, task: dict[str, Any]) -> None:
        server, agents = slow
        old = agents[0]
        old.stop()  # mid-copy: its job is aborted (by the agent, or by its next cancel hook)
        watch.look()
        agents[0] = AgentThread(server, "node1", old.config.state_dir.parent, config=old.config)
        watch.until("node1 to be back", lambda: connected(server, "node1"))

    return cut


def _cancel(slow: Cluster) -> Callable[[Watch, dict[str, Any]], None]:
    def cut(watch: Watch, task: dict[str, Any]) -> None:
        answer = slow[0].client.post(f"/tasks/{task['id']}/cancel")
        assert answer.status_code == 200, answer.text

    return cut


@pytest.mark.parametrize("how", ["agent-restarted", "cancelled"])
def test_a_live_move_cut_short_leaves_the_volume_where_it_was(slow: Cluster, how: str) -> None:
    cut = _restart_node1(slow) if how == "agent-restarted" else _cancel(slow)
    task, data, checksum = _cut_short(slow, cut)
    assert task["state"] == "rolled_back", task
    shown = _left_where_it_was(slow, data, checksum)
    # At rest again (still the VM's disk), with what stopped the move as its fault.
    assert shown["state"] == "attached", shown
    assert "volume_move_live" in shown["fault"] and shown["fault"] in task["error"], shown


def test_a_vm_is_not_stopped_while_its_disk_moves(slow: Cluster) -> None:
    """A VM operation is refused while a task holds one of its disks; the move ends well."""
    c = slow[0].client
    vm, _data = running_vm_with_data(slow)
    answer = c.post("/volumes/data/migrate", json={"pool": "nfs"})
    watch = Watch(slow, vm)
    watch.until("the move's target to appear", lambda: targets(slow))
    refused = c.post("/vms/web/stop")
    assert refused.status_code == 409, refused.text
    assert "volume data" in refused.json()["error"]["message"]
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    watch.look()
    watch.always_running()


def test_after_a_live_move_the_vm_lives_on_with_its_disk_in_the_shared_pool(
    slow: Cluster,
) -> None:
    """The pivot is in the VM's definition: it stops, starts (the sim starts a VM only with
    each of its volumes whole on its host) and migrates with its disk in the shared pool."""
    c = slow[0].client
    vm, _data = running_vm_with_data(slow)
    done(c, c.post("/volumes/data/migrate", json={"pool": "nfs"}))
    moved = c.get("/volumes/data").json()
    done(c, c.post("/vms/web/stop"))
    done(c, c.post("/vms/web/start"))
    assert lock_holder(slow, moved) == ("node1", vm["uuid"])  # a start takes the lock
    assert done(c, c.post("/vms/web/migrate", json={"node": "node2"}))["type"] == "migrate"
    assert lock_holder(slow, moved) == ("node2", vm["uuid"])  # handed over
    running = sim_vm(slow, "node2", vm["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [d.path for d in running.drives if d.device == "vdb"] == [sim_path(moved)]
    assert sim_vm(slow, "node1", vm["uuid"]) is None
    # The record names the lock's holder once the server knows the VM runs on node2: from
    # node2's report of it, which may come just after the task's end (the VM's power is
    # what its host last reported; a new owner's report can follow its commit).
    shown = wait_until(
        lambda: (v := c.get("/volumes/data").json())["lock"] and v,
        "the volume's record to name its lock's holder",
    )
    assert (shown["pool"], shown["state"], shown["lock"]) == (
        "nfs", "attached", {"node": "node2", "epoch": shown["lock"]["epoch"]},
    )  # fmt: skip
