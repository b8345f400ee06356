"""Volume operations that carry data, through the real server and sim agents, on SQLite and
PostgreSQL: snapshots (take, list, revert, delete), volumes made from a snapshot, copies to
another host's local pool and to a shared pool, and migrations between pools and hosts.

The data is checked on the sim fabric: a sim volume's checksum stands for its content, a
write behind Bollard's back (as a guest's) changes it, and a copy, a snapshot or a migration
must carry it exactly.
"""

from __future__ import annotations

from bollard.sim.models import FaultMode
from tests.api.test_api_vms import Cluster, _wait
from tests.api.test_api_volumes import (
    done,
    key_of,
    make_pool,
    make_vm,
    make_volume,
    on_host,
    refused,
    sim_path,
    sim_vm,
    storage,
    totals,
    write,
)

# -- snapshots ----------------------------------------------------------------------------


def test_snapshots_are_taken_listed_reverted_to_and_deleted(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "db", 100, node="node1")
    first = write(cluster, v, b"version 1")
    task = done(c, c.post("/volumes/db/snapshots", json={"name": "s1"}))
    assert task["type"] == "snapshot_create"
    second = write(cluster, v, b"version 2")
    done(c, c.post("/volumes/db/snapshots", json={"name": "s2"}))
    assert first != second

    listed = c.get("/volumes/db/snapshots").json()["items"]
    assert [(s["name"], s["size_mb"]) for s in listed] == [("s1", 100), ("s2", 100)]
    assert c.get("/volumes/db").json()["snapshots"] == 2
    rec = on_host(cluster, v)
    assert rec is not None
    assert {name: s.checksum for name, s in rec.snapshots.items()} == {"s1": first, "s2": second}

    write(cluster, v, b"version 3, a mistake")
    task = done(c, c.post("/volumes/db/snapshots/s1/revert"))
    assert task["type"] == "snapshot_revert"
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == first
    done(c, c.post("/volumes/db/snapshots/s2/revert"))
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == second
    assert c.get("/volumes/db").json()["state"] == "ready"

    task = done(c, c.delete("/volumes/db/snapshots/s1"))
    assert task["type"] == "snapshot_delete"
    assert [s["name"] for s in c.get("/volumes/db/snapshots").json()["items"]] == ["s2"]
    assert c.get("/volumes/db").json()["snapshots"] == 1
    rec = on_host(cluster, v)
    assert rec is not None and list(rec.snapshots) == ["s2"] and rec.checksum == second


def test_snapshot_refusals_change_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "db", 10)
    make_volume(c, "plain", 10, format="raw")
    done(c, c.post("/volumes/db/snapshots", json={"name": "s1"}))
    before = totals(c)
    refused(c.post("/volumes/db/snapshots", json={"name": "s1"}), 409, "snapshot named 's1'")
    refused(c.post("/volumes/db/snapshots", json={"name": ".hidden"}), 422, "name")
    refused(c.post("/volumes/db/snapshots", json={"name": "x" * 64}), 422, "name")
    refused(c.post("/volumes/plain/snapshots", json={"name": "s1"}), 422, "qcow2")
    refused(c.post("/volumes/nope/snapshots", json={"name": "s1"}), 404, "nope")
    refused(c.post("/volumes/db/snapshots/s9/revert"), 422, "no snapshot 's9'")
    refused(c.delete("/volumes/db/snapshots/s9"), 422, "no snapshot 's9'")
    refused(c.get("/volumes/nope/snapshots"), 404, "nope")
    assert totals(c) == before
    assert [s["name"] for s in c.get("/volumes/db/snapshots").json()["items"]] == ["s1"]
    rec = on_host(cluster, v)
    assert rec is not None and list(rec.snapshots) == ["s1"]


def test_a_revert_gives_back_the_size_the_snapshot_had(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "db", 10, node="node1")
    done(c, c.post("/volumes/db/snapshots", json={"name": "small"}))
    done(c, c.post("/volumes/db/grow", json={"size_mb": 20}))
    done(c, c.post("/volumes/db/snapshots/small/revert"))
    rec = on_host(cluster, v)
    assert rec is not None
    # What the host has and what the API says agree (qcow2 puts the size back too).
    assert c.get("/volumes/db").json()["size_mb"] == rec.size_mb


def test_a_disk_of_a_running_vm_is_neither_snapshotted_nor_copied(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    vm = make_vm(c, "web", node="node1", start=True, disks=[{"size_mb": 10}])
    extra = make_volume(c, "extra", node="node1")
    done(c, c.post("/volumes/extra/attach", json={"vm": "web"}))
    before = totals(c)
    for name in ("web-vda", "extra"):
        refused(c.post(f"/volumes/{name}/snapshots", json={"name": "s"}), 409, "running VM web")
        refused(c.post(f"/volumes/{name}/copy", json={"name": f"{name}-c", "pool": "nfs"}),
                409, "running VM web")  # fmt: skip
        # Nor moved off its VM's host (a disk in a local pool stays with its VM).
        refused(c.post(f"/volumes/{name}/migrate", json={"pool": "local", "node": "node2"}),
                409, "it stays on node1")  # fmt: skip
    assert totals(c) == before
    assert [v["state"] for v in c.get("/volumes").json()["items"]] == ["attached", "attached"]
    rec = on_host(cluster, extra)
    assert rec is not None and rec.snapshots == {}
    running = sim_vm(cluster, "node1", vm["uuid"])
    assert running is not None and str(running.power) == "running"

    # Stopped, its disk can have a snapshot.
    done(c, c.post("/vms/web/stop"))
    done(c, c.post("/volumes/extra/snapshots", json={"name": "s"}))
    rec = on_host(cluster, extra)
    assert rec is not None and list(rec.snapshots) == ["s"]


def test_a_running_vms_disk_moves_live_to_a_shared_pool(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    vm = make_vm(c, "web", node="node1", start=True, disks=[{"size_mb": 10}])
    [disk] = c.get("/volumes", params={"vm": "web"}).json()["items"]
    checksum = write(cluster, disk, b"the guest keeps writing")
    done(c, c.post(f"/volumes/{disk['name']}/migrate", json={"pool": "nfs"}))
    moved = c.get(f"/volumes/{disk['name']}").json()
    assert (moved["pool"], moved["node"], moved["state"], moved["device"]) == (
        "nfs", None, "attached", "vda",
    )  # fmt: skip
    rec = on_host(cluster, moved)
    assert rec is not None and rec.checksum == checksum
    assert on_host(cluster, disk) is None, "the old file is still on node1"
    running = sim_vm(cluster, "node1", vm["uuid"])
    assert running is not None and str(running.power) == "running"
    assert [(d.device, d.path) for d in running.drives] == [("vda", sim_path(moved))]


# -- volumes made from a snapshot ---------------------------------------------------------


def test_a_volume_made_from_a_snapshot_has_the_snapshots_content(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    v = make_volume(c, "db", 30, node="node1")
    taken = write(cluster, v, b"before the upgrade")
    done(c, c.post("/volumes/db/snapshots", json={"name": "before"}))
    now = write(cluster, v, b"after the upgrade")

    ref = {"volume": "db", "snapshot": "before"}
    answer = c.post("/volumes", json={"name": "db-old", "from_snapshot": ref, "node": "node2"})
    assert answer.json()["volume"]["state"] == "creating"
    done(c, answer)
    old = c.get("/volumes/db-old").json()
    assert (old["node"], old["size_mb"], old["state"]) == ("node2", 30, "ready")
    made = on_host(cluster, old)
    assert made is not None and made.checksum == taken and made.snapshots == {}
    # The source is as it was, and free again.
    source = c.get("/volumes/db").json()
    assert (source["state"], source["task_id"]) == ("ready", None)
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == now

    done(c, c.post("/volumes", json={"name": "db-old2", "from_snapshot": ref, "pool": "nfs"}))
    old2 = c.get("/volumes/db-old2").json()
    assert (old2["pool"], old2["node"]) == ("nfs", None)
    made = on_host(cluster, old2)
    assert made is not None and made.checksum == taken

    before = totals(c)
    refused(c.post("/volumes", json={"name": "x", "from_snapshot": {"volume": "db",
                                                                     "snapshot": "nope"}}),
            422, "no snapshot 'nope'")  # fmt: skip
    assert totals(c) == before


def test_a_volume_made_bigger_than_its_snapshot_has_the_size_asked(cluster: Cluster) -> None:
    c = cluster[0].client
    make_volume(c, "db", 10, node="node1")
    done(c, c.post("/volumes/db/snapshots", json={"name": "s"}))
    ref = {"volume": "db", "snapshot": "s"}
    done(c, c.post("/volumes", json={"name": "bigger", "size_mb": 50, "from_snapshot": ref}))
    bigger = c.get("/volumes/bigger").json()
    rec = on_host(cluster, bigger)
    assert rec is not None
    assert (bigger["size_mb"], rec.size_mb) == (50, 50)


# -- copies -------------------------------------------------------------------------------


def test_copies_to_another_nodes_local_pool_and_to_a_shared_pool(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    v = make_volume(c, "src", 40, node="node1")
    checksum = write(cluster, v, b"precious data")

    answer = c.post("/volumes/src/copy", json={"name": "on2", "pool": "local", "node": "node2"})
    assert answer.status_code == 202, answer.text
    new = answer.json()["volume"]
    assert (new["name"], new["state"], new["node"]) == ("on2", "creating", "node2")
    assert c.get("/volumes/src").json()["state"] == "copying"
    assert done(c, answer)["type"] == "volume_copy"
    on2 = c.get("/volumes/on2").json()
    assert (on2["pool"], on2["node"], on2["size_mb"], on2["state"]) == (
        "local", "node2", 40, "ready",
    )  # fmt: skip
    assert on2["id"] != v["id"] and on2["file"] == f"vol-{on2['id']}.qcow2"
    copied = on_host(cluster, on2)
    assert copied is not None and copied.checksum == checksum and copied.partial is None

    done(c, c.post("/volumes/src/copy", json={"name": "shared", "pool": "nfs"}))
    shared = c.get("/volumes/shared").json()
    assert (shared["pool"], shared["node"], shared["state"]) == ("nfs", None, "ready")
    copied = on_host(cluster, shared)
    assert copied is not None and copied.checksum == checksum

    # The source is untouched and free; the copies are volumes of their own.
    source = c.get("/volumes/src").json()
    assert (source["state"], source["node"], source["task_id"]) == ("ready", "node1", None)
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == checksum
    write(cluster, on2, b"changed in the copy")
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == checksum


def test_copy_refusals_change_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "only1", nodes=["node1"])
    make_volume(c, "src", 10, node="node2")
    make_volume(c, "taken", 10)
    before = totals(c)
    for body, status, says in [
        ({"name": "taken", "pool": "local"}, 409, "'taken' exists"),
        ({"name": "c", "pool": "nope"}, 404, "nope"),
        ({"name": "c", "pool": "local", "node": "node9"}, 422, "node9"),
        ({"name": "c", "pool": "only1", "node": "node1"}, 422, "shared pool only1"),
        ({"name": "-c", "pool": "local"}, 422, "name"),
    ]:
        refused(c.post("/volumes/src/copy", json=body), status, says)
    refused(c.post("/volumes/nope/copy", json={"name": "c", "pool": "local"}), 404, "nope")
    assert totals(c) == before
    assert c.get("/volumes/src").json()["state"] == "ready"


# -- migrations ---------------------------------------------------------------------------


def test_migrate_local_to_shared_to_another_nodes_local_pool(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    v = make_volume(c, "mover", 20, node="node1")
    checksum = write(cluster, v, b"moving house")
    done(c, c.post("/volumes/mover/snapshots", json={"name": "s"}))

    answer = c.post("/volumes/mover/migrate", json={"pool": "nfs"})
    assert answer.json()["volume"]["state"] == "migrating"
    assert done(c, answer)["type"] == "volume_migrate"
    shared = c.get("/volumes/mover").json()
    assert (shared["id"], shared["pool"], shared["pool_type"], shared["node"]) == (
        v["id"], "nfs", "shared", None,
    )  # fmt: skip
    assert (shared["state"], shared["task_id"], shared["size_mb"]) == ("ready", None, 20)
    assert on_host(cluster, v) is None, "the source file is still on node1"
    rec = on_host(cluster, shared)
    assert rec is not None and rec.checksum == checksum

    done(c, c.post("/volumes/mover/migrate", json={"pool": "local", "node": "node2"}))
    back = c.get("/volumes/mover").json()
    assert (back["id"], back["pool"], back["node"], back["state"]) == (
        v["id"], "local", "node2", "ready",
    )  # fmt: skip
    assert on_host(cluster, shared) is None, "the source file is still in the shared pool"
    assert on_host(cluster, back, node="node1") is None
    rec = on_host(cluster, back)
    assert rec is not None and rec.checksum == checksum
    assert c.get("/volumes").json()["total"] == 1

    before = totals(c)
    refused(c.post("/volumes/mover/migrate", json={"pool": "local", "node": "node2"}),
            422, "already")  # fmt: skip
    refused(c.post("/volumes/mover/migrate", json={"pool": "nope"}), 404, "nope")
    refused(c.post("/volumes/nope/migrate", json={"pool": "nfs"}), 404, "nope")
    assert totals(c) == before


def test_a_stopped_vms_disk_migrated_to_a_shared_pool_is_used_from_there(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    vm = make_vm(c, "web", node="node1", disks=[{"size_mb": 10}])
    [disk] = c.get("/volumes", params={"vm": "web"}).json()["items"]
    checksum = write(cluster, disk, b"the guest's files")
    done(c, c.post(f"/volumes/{disk['name']}/migrate", json={"pool": "nfs"}))
    moved = c.get(f"/volumes/{disk['name']}").json()
    assert (moved["pool"], moved["state"], moved["vm"], moved["device"]) == (
        "nfs", "attached", "web", "vda",
    )  # fmt: skip
    rec = on_host(cluster, moved)
    assert rec is not None and rec.checksum == checksum
    assert on_host(cluster, disk) is None
    # The VM starts, with its disk where the volume now is.
    done(c, c.post("/vms/web/start"))
    started = sim_vm(cluster, "node1", vm["uuid"])
    assert started is not None and str(started.power) == "running"
    assert [(d.device, d.path) for d in started.drives] == [("vda", sim_path(moved))]
    assert storage(cluster).running_users("node1", key_of(moved), moved["file"])


def test_a_copy_that_fails_leaves_no_target(cluster: Cluster) -> None:
    c = cluster[0].client
    v = make_volume(c, "src", 10, node="node1")
    checksum = write(cluster, v, b"data")
    storage(cluster).fabric.host("node1").faults.set("volume_copy", FaultMode.FAIL)
    answer = c.post("/volumes/src/copy", json={"name": "dst", "pool": "local", "node": "node2"})
    target = answer.json()["volume"]
    task = _wait(c, answer)
    assert task["state"] == "rolled_back", task
    assert on_host(cluster, target) is None
    source = c.get("/volumes/src").json()
    assert (source["state"], source["task_id"]) == ("ready", None)
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == checksum
    assert c.get("/volumes/dst").status_code == 404  # nothing of the copy is left


def test_a_migration_that_fails_leaves_the_volume_where_it_was(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs")
    v = make_volume(c, "stay", 10, node="node1")
    checksum = write(cluster, v, b"data")
    storage(cluster).fabric.host("node1").faults.set("volume_copy", FaultMode.FAIL)
    task = _wait(c, c.post("/volumes/stay/migrate", json={"pool": "nfs"}))
    assert task["state"] == "rolled_back", task
    shown = c.get("/volumes/stay").json()
    assert (shown["pool"], shown["node"], shown["file"], shown["task_id"]) == (
        "local", "node1", v["file"], None,
    )  # fmt: skip
    assert shown["state"] == "ready" and "injected fault" in shown["fault"], shown
    rec = on_host(cluster, v)
    assert rec is not None and rec.checksum == checksum
    moved = dict(v, pool="nfs", pool_type="shared", node=None)
    assert on_host(cluster, moved) is None
