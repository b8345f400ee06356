"""A VM's disks between two cells through their image spools, with the real servers and sim
agents (each cell its own fabric: its hosts share nothing with the other's): `vm_export` of
a stopped VM on one cell, its disks downloaded by an admin and uploaded to the other cell's
spool, and `vm_spawn` there of a VM whose volumes are reserved (made here with the store, as
the cell's VM import makes them), which then runs with the same data (the sim's content
checksum). And what fails: a running VM, an export or an import that fails (rolled back).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.domain.ids import new_id, new_uuid
from bollard.domain.states import DesiredPower, VmState
from bollard.domain.storage import VolumeState, vm_disk_file
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from bollard.sim.storage import PoolKey, SimStorage
from bollard.store import vms, volumes
from tests.api.test_api_image_spool import SHA, sha, spooled_files
from tests.api.test_api_vms import Cluster, _wait
from tests.api.test_api_volumes import done, write
from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import SchemaTemplates

LOCAL = PoolKey("local", "local")
OTHER = "c2-node1"  # the other cell's host
Cell = tuple[ServerThread, AgentThread]


@pytest.fixture
def cell2(tmp_path: Path, schema_templates: SchemaTemplates) -> Iterator[Cell]:
    """A second cell: its own server, database and fabric, one host."""
    (tmp_path / "db2").mkdir()
    server = ServerThread(tmp_path / "server2", schema_templates.sqlite(tmp_path / "db2"))
    (tmp_path / "cell2").mkdir()
    agent = AgentThread(server, OTHER, tmp_path / "cell2", vcpus=8, memory_mb=16384)
    wait_until(lambda: server.client.get(f"/nodes/{OTHER}").json()["connected"], "c2 to connect")
    yield server, agent
    agent.stop()
    server.stop()


def storage(fabric_dir: Path | None) -> SimStorage:
    return SimStorage(Fabric(fabric_dir or ""))


def on_host(fabric_dir: Path | None, node: str, file: str) -> Any:
    return storage(fabric_dir).get(node, LOCAL, file, time.time())


def disks_of(c: httpx.Client, vm: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = c.get("/volumes", params={"vm": vm}).json()["items"]
    return sorted(found, key=lambda v: v["device"])


def stopped_vm_with_data(cluster: Cluster, name: str) -> dict[str, str]:
    """A stopped VM on node1 with two disks holding data: device -> content checksum."""
    c = cluster[0].client
    body = {"name": name, "vcpus": 1, "memory_mb": 256, "node": "node1",
            "disks": [{"size_mb": 10}, {"size_mb": 20}]}  # fmt: skip
    done(c, c.post("/vms", json=body))
    return {
        v["device"]: write(cluster, v, f"{name}:{v['device']}".encode()) for v in disks_of(c, name)
    }


def export(c: httpx.Client, vm: str, image: str) -> dict[str, Any]:
    return _wait(c, c.post(f"/vms/{vm}/export", json={"image": image}))


def carry(source: ServerThread, target: ServerThread, image: str) -> None:
    """An admin (the API server) takes the image from one spool to the other."""
    for disk in source.client.get(f"/images/{image}").json()["disks"]:
        got = source.client.get(f"/images/{image}/{disk['disk']}")
        assert got.headers[SHA] == disk["sha256"]
        sent = target.client.put(
            f"/images/{image}/{disk['disk']}", content=got.content, headers={SHA: disk["sha256"]}
        )
        assert sent.status_code == 200, sent.text


def reserved_vm(server: ServerThread, name: str, node: str, disks: list[dict[str, Any]]) -> str:
    """The records of a VM to be made from an image: stopped on `node`, no task, a volume
    `reserved` at each disk's device (as a cell's VM import leaves them)."""
    clock, uuid, held = server.runtime.clock, new_uuid(), new_id()
    with server.runtime.db.write() as conn:
        now = clock.now()
        vms.create(conn, uuid=uuid, name=name, node=node, vcpus=1, memory_mb=256,
                   desired_power=DesiredPower.STOPPED, task_id=held, now=now)  # fmt: skip
        assert vms.transition(
            conn, uuid, now, held_by=held, task_state=None, vm_state=VmState.STOPPED
        )
        for d in disks:
            volumes.create(
                conn, id=new_uuid(), name=f"{name}-{d['device']}", pool="local", node=node,
                file=vm_disk_file(uuid, d["device"]), format=d["format"], size_mb=d["size_mb"],
                now=now, state=VolumeState.RESERVED, vm_uuid=uuid, device=d["device"],
                delete_with_vm=True,
            )  # fmt: skip
    return uuid


def test_a_vm_moves_between_cells_through_their_spools(cluster: Cluster, cell2: Cell) -> None:
    source, target = cluster[0], cell2[0]
    c = source.client
    content = stopped_vm_with_data(cluster, "web")

    answer = c.post("/vms/web/export", json={"image": "mv-1"})
    assert answer.status_code == 202 and answer.json()["task"]["type"] == "vm_export"
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    result = task["result"]
    assert result["image"] == "mv-1" and "progress" not in result
    disks = result["disks"]
    names = [v["name"] for v in disks_of(c, "web")]
    assert [(d["device"], d["volume"], d["pool"], d["format"], d["size_mb"]) for d in disks] == [
        ("vda", names[0], "local", "qcow2", 10), ("vdb", names[1], "local", "qcow2", 20),
    ]  # fmt: skip
    assert [d["checksum"] for d in disks] == [content["vda"], content["vdb"]]
    spooled = c.get("/images/mv-1").json()["disks"]
    assert spooled == [
        {"disk": d["device"], "bytes": d["bytes"], "sha256": d["sha256"]} for d in disks
    ]
    # The VM is as it was: stopped, its disks attached; it starts.
    vm = c.get("/vms/web").json()
    assert (vm["status"], vm["task_state"]) == ("SHUTOFF", None)
    assert {(v["state"], v["task_id"]) for v in disks_of(c, "web")} == {("attached", None)}
    assert done(c, c.post("/vms/web/start"))["state"] == "succeeded"
    refused = c.post("/vms/web/export", json={"image": "mv-2"})
    assert refused.status_code == 409, refused.text  # it runs
    assert c.get("/images/mv-2").status_code == 404
    done(c, c.post("/vms/web/stop"))
    again = export(c, "web", "mv-1")  # an export run again: the same bytes
    assert [d["sha256"] for d in again["result"]["disks"]] == [d["sha256"] for d in disks]

    carry(source, target, "mv-1")
    uuid = reserved_vm(target, "web", OTHER, disks)
    t = target.client
    answer = t.post("/vms/web/spawn", json={"image": "mv-1"})
    assert answer.status_code == 202 and answer.json()["task"]["type"] == "vm_spawn"
    task = _wait(t, answer)
    assert task["state"] == "succeeded", task
    assert [s["name"] for s in task["steps"]] == ["import-vda", "import-vdb", "define", "start"]
    vm = t.get("/vms/web").json()
    assert (vm["status"], vm["node"], vm["task_state"]) == ("ACTIVE", OTHER, None)
    made = disks_of(t, "web")
    assert [(v["device"], v["state"], v["task_id"]) for v in made] == [
        ("vda", "attached", None), ("vdb", "attached", None),
    ]  # fmt: skip
    fabric2 = cell2[1].config.fabric_dir
    for v in made:
        rec = on_host(fabric2, OTHER, v["file"])
        assert rec is not None and rec.checksum == content[v["device"]], v
    guest = Fabric(fabric2 or "").host(OTHER).get_vm(uuid)
    assert guest is not None and str(guest.power) == "running"
    assert [d.device for d in guest.drives] == ["vda", "vdb"]


def test_a_failed_export_removes_the_image_and_leaves_the_vm(cluster: Cluster) -> None:
    c = cluster[0].client
    stopped_vm_with_data(cluster, "db")
    stale = c.put("/images/mv-3/vdc", content=b"left over", headers={SHA: sha(b"left over")})
    assert stale.status_code == 200
    storage(cluster[1][0].config.fabric_dir).fabric.host("node1").faults.set(
        "volume_export", FaultMode.FAIL
    )
    task = export(c, "db", "mv-3")
    assert task["state"] == "rolled_back", task
    assert "injected fault" in (task["error"] or "")
    assert c.get("/images/mv-3").status_code == 404
    assert spooled_files(cluster[0]) == []
    vm = c.get("/vms/db").json()
    assert (vm["status"], vm["task_state"], vm["fault"]) == ("SHUTOFF", None, None)
    assert {(v["state"], v["task_id"]) for v in disks_of(c, "db")} == {("attached", None)}
    assert export(c, "db", "mv-3")["state"] == "succeeded"  # (the fault fired once)


def _exported(cluster: Cluster, cell2: Cell, vm: str, image: str) -> tuple[dict[str, str], Any]:
    content = stopped_vm_with_data(cluster, vm)
    task = export(cluster[0].client, vm, image)
    assert task["state"] == "succeeded", task
    carry(cluster[0], cell2[0], image)
    return content, task["result"]["disks"]


def _rolled_back(t: httpx.Client, fabric: Path | None, name: str, uuid: str) -> None:
    """Nothing of the spawn is left: no guest, no file; the volumes reserved again."""
    assert Fabric(fabric or "").host(OTHER).get_vm(uuid) is None
    shown = disks_of(t, name)
    assert [(v["state"], v["task_id"]) for v in shown] == [("reserved", None)] * len(shown)
    for v in shown:
        assert on_host(fabric, OTHER, v["file"]) is None, v
    vm = t.get(f"/vms/{name}").json()
    assert (vm["status"], vm["task_state"], vm["desired_power"]) == ("SHUTOFF", None, "stopped")
    assert vm["fault"]


def test_a_spawn_whose_import_fails_rolls_back(cluster: Cluster, cell2: Cell) -> None:
    content, disks = _exported(cluster, cell2, "app", "mv-4")
    t, fabric2 = cell2[0].client, cell2[1].config.fabric_dir
    # vdb's volume is not what the image holds (another size): its import is refused, once
    # vda's was made.
    wrong = [disks[0], dict(disks[1], size_mb=disks[1]["size_mb"] + 10)]
    uuid = reserved_vm(cell2[0], "app", OTHER, wrong)
    task = _wait(t, t.post("/vms/app/spawn", json={"image": "mv-4"}))
    assert task["state"] == "rolled_back", task
    steps = {s["name"]: s["state"] for s in task["steps"]}
    assert steps == {"import-vda": "undone", "import-vdb": "undone", "define": "pending",
                     "start": "pending"}  # fmt: skip
    _rolled_back(t, fabric2, "app", uuid)
    # Put right, the same VM is made from the same image.
    vdb = next(v for v in disks_of(t, "app") if v["device"] == "vdb")
    with cell2[0].runtime.db.write() as conn:
        volumes.set_fields(
            conn, vdb["id"], cell2[0].runtime.clock.now(), size_mb=disks[1]["size_mb"]
        )
    task = _wait(t, t.post("/vms/app/spawn", json={"image": "mv-4", "start": False}))
    assert task["state"] == "succeeded", task
    assert t.get("/vms/app").json()["status"] == "SHUTOFF"
    for v in disks_of(t, "app"):
        assert on_host(fabric2, OTHER, v["file"]).checksum == content[v["device"]]


def test_a_spawn_whose_define_fails_removes_what_it_imported(cluster: Cluster, cell2: Cell) -> None:
    _, disks = _exported(cluster, cell2, "api", "mv-5")
    t, fabric2 = cell2[0].client, cell2[1].config.fabric_dir
    uuid = reserved_vm(cell2[0], "api", OTHER, disks)
    storage(fabric2).fabric.host(OTHER).faults.set("define", FaultMode.FAIL)
    task = _wait(t, t.post("/vms/api/spawn", json={"image": "mv-5"}))
    assert task["state"] == "rolled_back", task
    assert "injected fault" in (task["error"] or "")
    assert [s["state"] for s in task["steps"]] == ["undone", "undone", "undone", "pending"]
    _rolled_back(t, fabric2, "api", uuid)


def test_spawn_and_export_refusals(cluster: Cluster, cell2: Cell) -> None:
    _, disks = _exported(cluster, cell2, "one", "mv-6")
    t = cell2[0].client
    reserved_vm(cell2[0], "one", OTHER, disks)
    missing = t.post("/vms/one/spawn", json={"image": "mv-none"})
    assert missing.status_code == 404 and "no disk vda" in missing.json()["error"]["message"]
    assert t.post("/vms/nobody/spawn", json={"image": "mv-6"}).status_code == 404
    bad = t.post("/vms/one/spawn", json={"image": "../etc"})
    assert bad.status_code == 422, bad.text
    # A VM whose disks are not reserved is not made from an image; its disks are not
    # exported while they are reserved.
    c = cluster[0].client
    refused = c.post("/vms/one/spawn", json={"image": "mv-6"})
    assert refused.status_code == 409 and "reserved" in refused.json()["error"]["message"]
    refused = t.post("/vms/one/export", json={"image": "mv-7"})
    assert refused.status_code == 409 and "attached" in refused.json()["error"]["message"]
    assert t.get("/tasks").json()["total"] == 0
