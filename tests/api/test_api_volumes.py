"""Volumes through the real server and sim agents, on SQLite and PostgreSQL: create (local
pool, on a chosen or given node; shared pool), list, show, grow, attach, detach, delete, a
busy volume's refusals, and what a failed host action leaves. Every outcome is checked
through the API and on the sim fabric (the hosts' ground truth: a volume's record, its size
and content checksum, a VM's drives).

The helpers at the top are shared with test_api_volume_copies.py, test_api_pools.py and
test_api_disks.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode, SimVm
from bollard.sim.storage import EMPTY_CHECKSUM, PoolKey, SimStorage, volume_path
from bollard.sim.storage_models import SimVolume
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until

# -- helpers ------------------------------------------------------------------------------


def done(c: httpx.Client, answer: httpx.Response) -> dict[str, Any]:
    """Wait for the task of an accepted change (202); fail unless it succeeded."""
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    return task


def storage(cluster: Cluster) -> SimStorage:
    """The sim fabric's storage: what the hosts really have."""
    return SimStorage(Fabric(cluster[1][0].config.fabric_dir or ""))


def sim_vm(cluster: Cluster, node: str, uuid: str) -> SimVm | None:
    return storage(cluster).fabric.host(node).get_vm(uuid)


def key_of(volume: dict[str, Any]) -> PoolKey:
    return PoolKey(volume["pool"], volume["pool_type"])


def on_host(cluster: Cluster, volume: dict[str, Any], node: str | None = None) -> SimVolume | None:
    """The volume (a VolumeOut) as the fabric has it: on its node (or `node`) for a local
    pool, in the shared directory for a shared pool; None when it is not there."""
    where = node or volume["node"] or ""
    return storage(cluster).get(where, key_of(volume), volume["file"], time.time())


def sim_path(volume: dict[str, Any]) -> str:
    """The path a sim VM's drive has for the volume."""
    return volume_path(key_of(volume), volume["file"])


def write(cluster: Cluster, volume: dict[str, Any], data: bytes) -> str:
    """Write `data` into the volume behind Bollard's back (as a guest would); its new
    checksum."""
    node, now = volume["node"] or "", time.time()
    return storage(cluster).write(node, key_of(volume), volume["file"], [data], now).checksum


def make_volume(c: httpx.Client, name: str, size_mb: int = 10, **body: Any) -> dict[str, Any]:
    """Create a volume (pool `local` unless given), wait for it, and return it as shown."""
    done(c, c.post("/volumes", json={"name": name, "size_mb": size_mb} | body))
    shown: dict[str, Any] = c.get(f"/volumes/{name}").json()
    assert shown["state"] == "ready", shown
    return shown


def make_pool(c: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    """Create a pool (shared at /srv/<name> unless told otherwise)."""
    answer = c.post("/pools", json={"name": name, "type": "shared", "path": f"/srv/{name}"} | body)
    assert answer.status_code == 201, answer.text
    pool: dict[str, Any] = answer.json()
    return pool


def make_vm(c: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    """Create a VM (and wait for it); return it as shown."""
    done(c, c.post("/vms", json={"name": name, "vcpus": 1, "memory_mb": 256} | body))
    vm: dict[str, Any] = c.get(f"/vms/{name}").json()
    return vm


def totals(c: httpx.Client) -> tuple[int, int]:
    """How many tasks and volumes there are (a refused request changes neither)."""
    return c.get("/tasks").json()["total"], c.get("/volumes").json()["total"]


def refused(answer: httpx.Response, status: int, *says: str) -> str:
    """Assert a refusal: its status, and that its one message says each of `says`."""
    assert answer.status_code == status, answer.text
    message: str = answer.json()["error"]["message"]
    for words in says:
        assert words in message, message
    return message


def names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["name"] for i in items)


# -- create, show, list -------------------------------------------------------------------


def test_a_volume_of_the_local_pool_is_made_on_the_node_given(cluster: Cluster) -> None:
    c = cluster[0].client
    answer = c.post("/volumes", json={"name": "data1", "size_mb": 100, "node": "node1"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["volume"]["state"] == "creating"
    assert accepted["volume"]["task_id"] == accepted["task"]["id"]
    assert accepted["task"]["type"] == "volume_create"
    done(c, answer)

    v = c.get("/volumes/data1").json()
    assert (v["pool"], v["pool_type"], v["node"]) == ("local", "local", "node1")
    assert (v["size_mb"], v["format"], v["state"]) == (100, "qcow2", "ready")
    assert (v["vm"], v["device"], v["task_id"], v["fault"]) == (None, None, None, None)
    assert v["file"] == f"vol-{v['id']}.qcow2"
    assert v["delete_with_vm"] is False and v["snapshots"] == 0
    rec = on_host(cluster, v)
    assert rec is not None, "the volume is not on node1"
    assert (rec.size_mb, rec.format, rec.checksum) == (100, "qcow2", EMPTY_CHECKSUM)
    assert on_host(cluster, v, node="node2") is None  # a local volume lives on one host


def test_without_a_node_the_host_with_the_most_free_room_gets_it(cluster: Cluster) -> None:
    c = cluster[0].client
    wait_until(lambda: len(c.get("/pools/local").json()["hosts"]) == 2, "both hosts to report")
    # node2's default directory shrinks to 1 GiB; a pool change makes the monitor look again.
    storage(cluster).set_pool_capacity("node2", PoolKey("local", "local"), 1024)
    assert c.patch("/pools/local", json={"description": "smaller on node2"}).status_code == 200
    wait_until(
        lambda: (
            {h["node"]: h["capacity_mb"] for h in c.get("/pools/local").json()["hosts"]}
            == {"node1": 1024 * 1024, "node2": 1024}
        ),
        "the monitor to report node2's smaller directory",
    )
    v = make_volume(c, "auto", 10)
    assert v["node"] == "node1"
    assert on_host(cluster, v) is not None and on_host(cluster, v, node="node2") is None

    # Asking for more than a given host reported free is refused, and nothing is made.
    before = totals(c)
    refused(
        c.post("/volumes", json={"name": "big", "size_mb": 2048, "node": "node2"}),
        409, "node2", "1024 MiB free",
    )  # fmt: skip
    assert totals(c) == before


def test_a_volume_of_a_shared_pool_is_on_no_node(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    v = make_volume(c, "shared1", 64, pool="nfs", format="raw")
    assert (v["pool"], v["pool_type"], v["node"], v["format"]) == ("nfs", "shared", None, "raw")
    assert v["file"] == f"vol-{v['id']}.raw"
    rec = on_host(cluster, v)
    assert rec is not None, "the volume is not in the shared directory"
    assert (rec.size_mb, rec.format, rec.allocated_mb) == (64, "raw", 64)
    local = storage(cluster).get("node1", PoolKey("nfs", "local"), v["file"], time.time())
    assert local is None
    # A volume of a shared pool names no node.
    before = totals(c)
    refused(
        c.post("/volumes", json={"name": "s2", "size_mb": 1, "pool": "nfs", "node": "node1"}),
        422, "shared pool nfs",
    )  # fmt: skip
    assert totals(c) == before


def test_list_filters_and_pages(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    make_volume(c, "a1", node="node1")
    make_volume(c, "a2", node="node1")
    make_volume(c, "b1", node="node2")
    make_volume(c, "s1", pool="nfs")
    vm = make_vm(c, "web", node="node1", disks=[{"size_mb": 5}])
    done(c, c.post("/volumes/a2/attach", json={"vm": "web"}))

    def listed(**params: Any) -> list[str]:
        page = c.get("/volumes", params=params).json()
        assert page["total"] == len(page["items"]), page
        return names(page["items"])

    assert listed() == ["a1", "a2", "b1", "s1", "web-vda"]
    assert listed(pool="nfs") == ["s1"]
    assert listed(pool="local") == ["a1", "a2", "b1", "web-vda"]
    assert listed(node="node1") == ["a1", "a2", "web-vda"]
    assert listed(node="node2") == ["b1"]
    assert listed(vm="web") == ["a2", "web-vda"]
    assert listed(state="attached") == ["a2", "web-vda"]
    assert listed(state="ready") == ["a1", "b1", "s1"]
    assert listed(pool="local", node="node1", state="ready") == ["a1"]
    assert listed(pool="nope") == []
    assert c.get("/volumes", params={"vm": "nope"}).status_code == 404
    assert c.get("/volumes", params={"state": "sleeping"}).status_code == 422

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = c.get("/volumes", params=params).json()
        assert len(page["items"]) <= 2 and page["total"] == 5
        seen += [v["name"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["a1", "a2", "b1", "s1", "web-vda"] and len(seen) == 5

    shown = c.get("/volumes/a2").json()
    assert (shown["vm"], shown["vm_uuid"], shown["device"]) == ("web", vm["uuid"], "vdb")
    refused(c.get("/volumes/nope"), 404, "nope")


# -- bad requests -------------------------------------------------------------------------


def test_bad_requests_are_refused_clearly_and_change_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "only2", nodes=["node2"])
    before = totals(c)
    too_big = 64 * 1024 * 1024 + 1
    for body, status, says in [
        ({"name": "v", "size_mb": 0}, 422, "size_mb"),
        ({"name": "v", "size_mb": -5}, 422, "size_mb"),
        ({"name": "v", "size_mb": too_big}, 422, "size_mb"),
        ({"name": "v"}, 422, "size_mb"),
        ({"name": "v", "size_mb": "ten"}, 422, "size_mb"),
        ({"name": "v", "size_mb": 10, "pool": "nope"}, 404, "no pool named 'nope'"),
        ({"name": "v", "size_mb": 10, "pool": "Bad Pool"}, 422, "pool"),
        ({"name": "v", "size_mb": 10, "node": "node9"}, 422, "no node named 'node9'"),
        ({"name": "v", "size_mb": 10, "pool": "only2", "node": "node1"}, 422, "shared pool"),
        ({"name": "-v", "size_mb": 10}, 422, "name"),
        ({"name": "v/x", "size_mb": 10}, 422, "name"),
        ({"name": "x" * 64, "size_mb": 10}, 422, "name"),
        ({"name": "v", "size_mb": 10, "format": "vmdk"}, 422, "format"),
        ({"name": "v", "size_mb": 10, "from_snapshot": {"volume": "nope", "snapshot": "s"}},
         404, "nope"),
    ]:  # fmt: skip
        answer = c.post("/volumes", json=body)
        refused(answer, status, says)
        assert answer.json()["error"]["code"], answer.text
    assert c.get("/volumes/v").status_code == 404
    assert totals(c) == before == (0, 0)


def test_a_local_pool_on_some_nodes_takes_volumes_only_there(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "fast", type="local", path="/srv/fast", nodes=["node2"])
    before = totals(c)
    refused(
        c.post("/volumes", json={"name": "f", "size_mb": 10, "pool": "fast", "node": "node1"}),
        422, "node1 is not a host of pool fast",
    )  # fmt: skip
    assert totals(c) == before
    v = make_volume(c, "f", pool="fast")
    assert v["node"] == "node2"
    assert on_host(cluster, v) is not None
    assert "fast" not in [p.name for p in storage(cluster).pools("node1")]


def test_a_duplicate_volume_name_is_refused(cluster: Cluster) -> None:
    c = cluster[0].client
    make_volume(c, "dup")
    before = totals(c)
    refused(c.post("/volumes", json={"name": "dup", "size_mb": 10}), 409, "dup")
    assert totals(c) == before


# -- grow ---------------------------------------------------------------------------------


def test_grow_makes_a_volume_bigger_and_never_smaller(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "g", 100, node="node1")
    checksum = write(cluster, v, b"some data")
    task = done(c, c.post("/volumes/g/grow", json={"size_mb": 300}))
    assert task["type"] == "volume_grow"
    assert c.get("/volumes/g").json()["size_mb"] == 300
    rec = on_host(cluster, v)
    assert rec is not None and (rec.size_mb, rec.checksum) == (300, checksum)

    before = totals(c)
    for size, status, says in [
        (300, 422, "can only grow"),
        (200, 422, "can only grow"),
        (0, 422, "size_mb"),
        (64 * 1024 * 1024 + 1, 422, "size_mb"),
    ]:
        refused(c.post("/volumes/g/grow", json={"size_mb": size}), status, says)
    refused(c.post("/volumes/nope/grow", json={"size_mb": 500}), 404, "nope")
    assert totals(c) == before
    assert c.get("/volumes/g").json()["size_mb"] == 300
    rec = on_host(cluster, v)
    assert rec is not None and rec.size_mb == 300


def test_a_disk_of_a_running_vm_grows_while_it_runs(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(c, "runner", start=True, disks=[{"size_mb": 50}])
    assert vm["status"] == "ACTIVE"
    [disk] = c.get("/volumes", params={"vm": "runner"}).json()["items"]
    task = done(c, c.post(f"/volumes/{disk['name']}/grow", json={"size_mb": 80}))
    [grow] = [x for x in c.get("/commands", params={"vm": "runner"}).json()["items"]
              if x["type"] == "volume_grow"]  # fmt: skip
    assert grow["task_id"] == task["id"] and grow["node"] == vm["node"]
    assert c.get(f"/volumes/{disk['name']}").json()["size_mb"] == 80
    assert c.get("/vms/runner").json()["disks"][0]["size_mb"] == 80
    # The hypervisor grew it under the running guest: the volume and the VM's drive.
    rec = on_host(cluster, disk)
    assert rec is not None and rec.size_mb == 80
    running = sim_vm(cluster, vm["node"], vm["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [(d.device, d.size_mb, d.path) for d in running.drives] == [("vda", 80, sim_path(disk))]


# -- attach, detach -----------------------------------------------------------------------


def test_attach_to_a_stopped_and_to_a_running_vm(cluster: Cluster) -> None:
    c = cluster[0].client
    stopped = make_vm(c, "cold", node="node1", disks=[{"size_mb": 10}])
    running = make_vm(c, "hot", node="node1", start=True)
    one = make_volume(c, "one", node="node1")
    two = make_volume(c, "two", node="node1")

    # Device chosen: the stopped VM's first free one (it has vda).
    answer = c.post("/volumes/one/attach", json={"vm": "cold"})
    assert answer.json()["volume"]["state"] == "attaching"
    assert answer.json()["volume"]["device"] == "vdb"  # taken at once
    done(c, answer)
    shown = c.get("/volumes/one").json()
    assert (shown["state"], shown["vm"], shown["device"]) == ("attached", "cold", "vdb")
    cold = sim_vm(cluster, "node1", stopped["uuid"])
    assert cold is not None
    assert [(d.device, d.path) for d in cold.drives][1] == ("vdb", sim_path(one))
    disks = c.get("/vms/cold").json()["disks"]
    assert [(d["device"], d["volume"], d["state"]) for d in disks] == [
        ("vda", "cold-vda", "attached"),
        ("vdb", "one", "attached"),
    ]

    # Device given, hot-plugged into the running VM.
    done(c, c.post("/volumes/two/attach", json={"vm": "hot", "device": "vdd"}))
    assert c.get("/volumes/two").json()["device"] == "vdd"
    hot = sim_vm(cluster, "node1", running["uuid"])
    assert hot is not None and str(hot.power) == "running"
    assert [(d.device, d.path, d.size_mb) for d in hot.drives] == [("vdd", sim_path(two), 10)]

    # ... and the stopped VM starts with its new disk there.
    done(c, c.post("/vms/cold/start"))
    cold = sim_vm(cluster, "node1", stopped["uuid"])
    assert cold is not None and str(cold.power) == "running"


def test_attach_refusals_change_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "only2", nodes=["node2"])
    vm = make_vm(c, "web", node="node1", disks=[{"size_mb": 10}])
    make_vm(c, "other", node="node1")
    free = make_volume(c, "free", node="node1")
    make_volume(c, "far", node="node2")
    make_volume(c, "unseen", pool="only2")
    make_volume(c, "busy", node="node1")
    done(c, c.post("/volumes/busy/attach", json={"vm": "other"}))
    before = totals(c)
    for volume, body, status, says in [
        ("free", {"vm": "web", "device": "vda"}, 409, "web has a disk at vda"),
        ("busy", {"vm": "web"}, 409, "attached to VM other as vda"),
        ("far", {"vm": "web"}, 409, "on node2"),
        ("unseen", {"vm": "web"}, 422, "not a host of pool only2"),
        ("free", {"vm": "nope"}, 404, "nope"),
        ("nope", {"vm": "web"}, 404, "nope"),
        ("free", {"vm": "web", "device": "sda"}, 422, "device"),
        ("free", {"vm": "web", "device": "vdq"}, 422, "device"),
    ]:
        refused(c.post(f"/volumes/{volume}/attach", json=body), status, says)
    assert totals(c) == before
    assert c.get("/volumes/free").json()["state"] == "ready"
    assert c.get("/volumes/busy").json()["vm"] == "other"
    web = sim_vm(cluster, "node1", vm["uuid"])
    assert web is not None and [d.device for d in web.drives] == ["vda"]
    assert sim_path(free) not in [d.path for d in web.drives]


def test_detach_from_a_running_vm_and_what_cannot_be_detached(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(c, "web", node="node2", start=True, disks=[{"size_mb": 10}])
    extra = make_volume(c, "extra", node="node2")
    done(c, c.post("/volumes/extra/attach", json={"vm": "web"}))
    checksum = write(cluster, extra, b"the guest wrote this")

    before = totals(c)
    refused(c.post("/volumes/web-vda/detach"), 409, "made with VM web")
    refused(c.post("/volumes/nope/detach"), 404, "nope")
    assert totals(c) == before

    task = done(c, c.post("/volumes/extra/detach"))
    assert task["type"] == "volume_detach"
    shown = c.get("/volumes/extra").json()
    assert (shown["state"], shown["vm"], shown["device"]) == ("ready", None, None)
    web = sim_vm(cluster, "node2", vm["uuid"])
    assert web is not None and str(web.power) == "running"
    assert [d.device for d in web.drives] == ["vda"]
    rec = on_host(cluster, extra)
    assert rec is not None and rec.checksum == checksum  # detaching keeps the data
    refused(c.post("/volumes/extra/detach"), 409, "not attached")
    assert [d["volume"] for d in c.get("/vms/web").json()["disks"]] == ["web-vda"]


# -- delete -------------------------------------------------------------------------------


def test_delete_removes_the_file_and_an_attached_volume_stays(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    make_vm(c, "web", node="node1")
    local = make_volume(c, "gone", node="node1")
    shared = make_volume(c, "gone2", pool="nfs")
    kept = make_volume(c, "kept", node="node1")
    done(c, c.post("/volumes/kept/attach", json={"vm": "web"}))

    before = totals(c)
    refused(c.delete("/volumes/kept"), 409, "attached to VM web as vda")
    refused(c.delete("/volumes/nope"), 404, "nope")
    assert totals(c) == before
    assert on_host(cluster, kept) is not None

    for name, v in (("gone", local), ("gone2", shared)):
        answer = c.delete(f"/volumes/{name}")
        assert answer.json()["volume"]["state"] == "deleting"
        assert done(c, answer)["type"] == "volume_delete"
        assert c.get(f"/volumes/{name}").status_code == 404
        assert on_host(cluster, v) is None, f"{name}'s file is still on the host"
    assert names(c.get("/volumes").json()["items"]) == ["kept"]


# -- busy volumes and failures ------------------------------------------------------------


def test_a_busy_volume_refuses_other_changes_naming_its_task(cluster: Cluster) -> None:
    c = cluster[0].client
    make_vm(c, "web", node="node1")
    faults = storage(cluster).fabric.host("node1").faults
    # Long enough for the five refusals below on a loaded 2-core machine (3 s was not: the
    # create ended before the last look, seen in CI); the test waits for it only once.
    faults.set("volume_create", FaultMode.DELAY, seconds=7.0)  # (commands time out at 10 s)
    answer = c.post("/volumes", json={"name": "slow", "size_mb": 10, "node": "node1"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    before = totals(c)
    for method, path, body in [
        ("DELETE", "/volumes/slow", None),
        ("POST", "/volumes/slow/grow", {"size_mb": 20}),
        ("POST", "/volumes/slow/attach", {"vm": "web"}),
        ("POST", "/volumes/slow/snapshots", {"name": "s"}),
        ("POST", "/volumes/slow/copy", {"name": "c", "pool": "local"}),
    ]:
        second = c.request(method, path, json=body)
        refused(second, 409, task_id)
    assert totals(c) == before
    assert c.get(f"/tasks/{task_id}").json()["finished_at"] is None  # it was busy all along
    done(c, answer)
    assert c.get("/volumes/slow").json()["state"] == "ready"
    done(c, c.post("/volumes/slow/grow", json={"size_mb": 20}))


def test_a_create_that_fails_leaves_no_volume(cluster: Cluster) -> None:
    c = cluster[0].client
    storage(cluster).fabric.host("node2").faults.set("volume_create", FaultMode.FAIL)
    answer = c.post("/volumes", json={"name": "doomed", "size_mb": 10, "node": "node2"})
    accepted = answer.json()["volume"]
    task = _wait(c, answer)
    assert (task["state"], task["steps"][0]["state"]) == ("rolled_back", "undone"), task
    assert "injected fault" in task["error"], task
    assert on_host(cluster, accepted) is None
    # Nothing of it is left anywhere: its record goes too (the name is free again).
    assert c.get("/volumes/doomed").status_code == 404
    assert "volume.create_failed" in [e["kind"] for e in c.get("/events").json()["items"]]
    make_volume(c, "doomed", node="node2")


def test_an_attach_that_fails_leaves_the_volume_ready(cluster: Cluster) -> None:
    c = cluster[0].client
    vm = make_vm(c, "web", node="node1")
    make_volume(c, "extra", node="node1")
    storage(cluster).fabric.host("node1").faults.set("volume_attach", FaultMode.FAIL)
    task = _wait(c, c.post("/volumes/extra/attach", json={"vm": "web"}))
    assert task["state"] == "rolled_back", task
    shown = c.get("/volumes/extra").json()
    assert (shown["state"], shown["vm"], shown["device"], shown["task_id"]) == (
        "ready", None, None, None,
    )  # fmt: skip
    assert "injected fault" in shown["fault"]
    web = sim_vm(cluster, "node1", vm["uuid"])
    assert web is not None and web.drives == []
    done(c, c.post("/volumes/extra/attach", json={"vm": "web"}))  # the device is free again


def test_a_delete_that_fails_keeps_the_volume(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "stays", node="node2")
    checksum = write(cluster, v, b"still here")
    storage(cluster).fabric.host("node2").faults.set("volume_delete", FaultMode.FAIL)
    task = _wait(c, c.delete("/volumes/stays"))
    assert task["state"] == "failed", task
    shown = c.get("/volumes/stays").json()
    assert (shown["state"], shown["task_id"]) == ("ready", None)
    assert "injected fault" in shown["fault"], shown
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == checksum
    # Once the host works again, it goes.
    done(c, c.delete("/volumes/stays"))
    assert on_host(cluster, v) is None
    assert c.get("/volumes/stays").status_code == 404
