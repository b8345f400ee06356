"""The storage classes of the state reconciler, end to end on a sim cluster (SQLite and
PostgreSQL): each difference is made out of band (a volume's file deleted, a stray file added,
a file's size changed in the sim fabric; a volume left busy by writing the store), seen in
GET /reconcile with its volume and pool, fixed (by POST /reconcile/fix or by the automatic
policy), and then gone, on the fabric as in the records."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from bollard.domain.storage import VolumeState, volume_file
from bollard.sim.fabric import Fabric
from bollard.sim.storage import EMPTY_CHECKSUM, PoolKey, SimStorage
from bollard.sim.storage_models import SimPartial, SimVolume
from bollard.store import volumes as volumes_store
from bollard.store.tables import tasks as tasks_table
from bollard.store.tables import volumes as volumes_table
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import wait_until

LOCAL = PoolKey("local", "local")
STORAGE_CLASSES = ("volume-missing", "volume-orphan", "volume-stuck", "volume-size")


def _storage(cluster: Cluster) -> SimStorage:
    """The sim fabric's storage: what the hosts really have."""
    return SimStorage(Fabric(cluster[1][0].config.fabric_dir or ""))


def _volume(c: httpx.Client, name: str, size_mb: int = 64, node: str = "node1") -> dict[str, Any]:
    task = _wait(c, c.post("/volumes", json={"name": name, "size_mb": size_mb, "node": node}))
    assert task["state"] == "succeeded", task
    shown: dict[str, Any] = c.get(f"/volumes/{name}").json()
    return shown


def _scan(c: httpx.Client) -> dict[str, Any]:
    answer = c.get("/reconcile")
    assert answer.status_code == 200, answer.text
    scan: dict[str, Any] = answer.json()
    return scan


def _storage_diffs(scan: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in scan["differences"] if d["class"] in STORAGE_CLASSES]


def _about(scan: dict[str, Any], cls: str, subject: str) -> list[dict[str, Any]]:
    """The differences of `cls` about a volume (by name) or a file."""
    return [
        d for d in scan["differences"] if d["class"] == cls and subject in (d["volume"], d["file"])
    ]


def _fixed_events(c: httpx.Client, cls: str) -> list[dict[str, Any]]:
    items = c.get("/events", params={"limit": 1000}).json()["items"]
    return [e for e in items if e["kind"] == "reconcile.fixed" and e["data"]["class"] == cls]


def _set(c: httpx.Client, key: str, value: object) -> None:
    assert c.put(f"/settings/{key}", json={"value": value}).status_code == 200


def _look_often(c: httpx.Client) -> None:
    """Passes every half second, each looking at the pools' files."""
    _set(c, "reconcile.storage.interval", 1)
    _set(c, "reconcile.state.interval", 0.5)


def _report_only(c: httpx.Client, *classes: str) -> None:
    """Hold the automatic fixes of `classes` until the test has seen the differences."""
    for cls in classes:
        _set(c, f"reconcile.auto.{cls}", "report")


def test_a_volume_whose_file_is_gone_is_missing_until_fixed(cluster: Cluster) -> None:
    c = cluster[0].client
    v = _volume(c, "gone")
    _volume(c, "kept")
    assert _storage(cluster).remove("node1", LOCAL, v["file"])

    scan = _scan(c)  # an operator's scan looks at the files now
    [d] = _storage_diffs(scan)
    assert (d["class"], d["volume"], d["pool"], d["node"], d["file"]) == (
        "volume-missing", "gone", "local", "node1", v["file"],
    )  # fmt: skip
    assert (d["record"], d["host"], d["auto"]) == (
        "ready, 64 MiB",
        f"file {v['file']} absent",
        "report",
    )
    assert scan["checked_volumes"] == 2 and scan["silent_hosts"] == []
    defaults = {"volume-missing": "report", "volume-orphan": "partial"}
    defaults |= {"volume-stuck": "fix", "volume-size": "fix"}
    assert {cls: scan["policies"][cls] for cls in STORAGE_CLASSES} == defaults
    assert c.get("/volumes/gone").json()["state"] == "ready"  # reported only

    fix = c.post("/reconcile/fix", json={"classes": ["volume-missing"]})
    assert fix.status_code == 200, fix.text
    assert [(f["volume"], f["ok"]) for f in fix.json()["fixed"]] == [("gone", True)]
    assert _storage_diffs(fix.json()["remaining"]) == []
    shown = c.get("/volumes/gone").json()
    assert (shown["state"], shown["task_id"]) == ("error", None)
    assert shown["fault"] == f"file {v['file']} missing from pool local on node1"
    assert c.get("/volumes/kept").json()["state"] == "ready"
    [event] = _fixed_events(c, "volume-missing")
    assert (event["data"]["volume"], event["data"]["pool"]) == ("gone", "local")
    assert _storage_diffs(_scan(c)) == []
    # In error, the volume can be deleted (its host has nothing to remove).
    assert _wait(c, c.delete("/volumes/gone"))["state"] == "succeeded"


def test_stray_files_are_orphans_deleted_on_request_if_bollard_named_them(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    store = _storage(cluster)
    v = _volume(c, "mine", node="node2")
    stray = volume_file(str(uuid.uuid4()), "qcow2")
    for name in (stray, "notes.qcow2"):
        rec = SimVolume(file=name, format="qcow2", size_mb=32, checksum=EMPTY_CHECKSUM)
        store.put("node2", LOCAL, rec)

    scan = _scan(c)
    orphans = {d["file"]: d for d in _storage_diffs(scan)}
    assert sorted(orphans) == sorted([stray, "notes.qcow2"])
    for d in orphans.values():
        assert (d["class"], d["node"], d["pool"], d["volume"]) == (
            "volume-orphan",
            "node2",
            "local",
            None,
        )
        assert (d["record"], d["host"], d["auto"]) == ("no volume record", "32 MiB", "report")
    assert orphans[stray]["data"]["bollard_name"] is True
    assert "a fix leaves it alone" in orphans["notes.qcow2"]["detail"]
    assert scan["policies"]["volume-orphan"] == "partial"

    fix = c.post("/reconcile/fix", json={"classes": ["volume-orphan"], "node": "node2"}).json()
    assert [(f["file"], f["ok"]) for f in fix["fixed"]] == [(stray, True)]
    assert fix["fixed"][0]["action"] == f"deleted {stray} from pool local on node2"
    assert [(f["file"], f["ok"]) for f in fix["failed"]] == [("notes.qcow2", False)]
    assert "not named as Bollard names volume files" in fix["failed"][0]["action"]
    now = time.time()
    assert store.get("node2", LOCAL, stray, now) is None
    assert store.get("node2", LOCAL, "notes.qcow2", now) is not None  # left alone
    assert store.get("node2", LOCAL, v["file"], now) is not None  # owned: untouched
    assert [d["file"] for d in _storage_diffs(fix["remaining"])] == ["notes.qcow2"]
    deleted = [
        cmd
        for cmd in c.get("/commands", params={"node": "node2", "limit": 500}).json()["items"]
        if cmd["type"] == "volume_delete"
    ]
    assert [(cmd["args"]["file"], cmd["state"]) for cmd in deleted] == [(stray, "COMPLETED")]


def test_volumes_left_busy_by_no_task_are_put_back_or_removed_by_themselves(
    cluster: Cluster,
) -> None:
    server, _ = cluster
    c = server.client
    held = _volume(c, "held")
    _report_only(c, "volume-stuck")
    ghost_id = str(uuid.uuid4())
    rt = server.runtime
    with rt.db.write() as conn:
        # Left copying with no task, its file there; and a record being created by a task
        # that does not exist, with no file anywhere.
        conn.execute(
            volumes_table.update()
            .where(volumes_table.c.id == held["id"])
            .values(state=VolumeState.COPYING.value, task_id=None)
        )
        volumes_store.create(
            conn, id=ghost_id, name="ghost", pool="local", node="node1",
            file=volume_file(ghost_id, "qcow2"), format="qcow2", size_mb=16,
            now=rt.clock.now(), state=VolumeState.CREATING, task_id="no-such-task",
        )  # fmt: skip
    stuck = {d["volume"]: d for d in _storage_diffs(_scan(c))}
    assert stuck["held"]["record"] == "copying, held by no task"
    assert stuck["ghost"]["host"] == "task does not exist"
    assert {d["class"] for d in stuck.values()} == {"volume-stuck"}
    assert {d["auto"] for d in stuck.values()} == {"report"}

    _set(c, "reconcile.auto.volume-stuck", "fix")  # the default
    _look_often(c)
    wait_until(lambda: c.get("/volumes/held").json()["state"] == "ready", "held back at rest")
    shown = c.get("/volumes/held").json()
    assert (shown["task_id"], shown["fault"]) == (None, "left copying by no task")
    wait_until(lambda: c.get("/volumes/ghost").status_code == 404, "ghost's record removed")
    events = wait_until(
        lambda: len(_fixed_events(c, "volume-stuck")) == 2 and _fixed_events(c, "volume-stuck"),
        "events",
    )
    actions = sorted(e["data"]["action"] for e in events)
    assert actions[0].startswith("volume ghost removed: left creating by task no-such-task")
    assert actions[1].startswith("volume held back ready")
    assert _storage_diffs(_scan(c)) == []


def test_the_record_takes_the_hosts_size_by_itself(cluster: Cluster) -> None:
    c = cluster[0].client
    store = _storage(cluster)
    v = _volume(c, "sized", size_mb=100)
    _report_only(c, "volume-size")
    rec = store.get("node1", LOCAL, v["file"], time.time())
    assert rec is not None
    store.put("node1", LOCAL, rec.model_copy(update={"size_mb": 300}))
    [d] = _about(_scan(c), "volume-size", "sized")
    assert (d["record"], d["host"], d["auto"]) == ("100 MiB", "300 MiB on node1", "report")
    assert c.get("/volumes/sized").json()["size_mb"] == 100

    _set(c, "reconcile.auto.volume-size", "fix")  # the default
    _look_often(c)
    wait_until(lambda: c.get("/volumes/sized").json()["size_mb"] == 300, "the record to follow")
    [event] = wait_until(lambda: _fixed_events(c, "volume-size"), "the event")
    assert event["data"]["action"] == "record now 300 MiB, as on node1 (was 100 MiB)"
    assert _storage_diffs(_scan(c)) == []


def test_a_running_copys_target_is_no_orphan_and_its_leftover_is_cleaned_by_itself(
    cluster: Cluster,
) -> None:
    """The leftover of a copy the server lost track of (its task ended in the database while
    the copy went on on its host): its command is cancelled, and the aborted copy removes its
    target. (The task's runner, which still drove it, then fails to roll back a task that had
    already ended: it logs that the task crashed; expected here.)"""
    server, _ = cluster
    c = server.client
    store = _storage(cluster)
    # 200 GiB: the sim copies 2 GiB/s, so the copy runs for 100 s (none of it is written).
    _volume(c, "big", size_mb=200 * 1024)
    answer = c.post(
        "/volumes/big/copy", json={"name": "big-copy", "pool": "local", "node": "node2"}
    )
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    target = answer.json()["volume"]["file"]

    def partial() -> bool:
        rec = store.raw("node2", LOCAL, target)
        return rec is not None and rec.partial is not None

    wait_until(partial, "the copy's partial target on node2")
    assert _storage_diffs(_scan(c)) == []  # its task runs: the task's business

    # The server loses track of the copy: its task ended, the new volume's record gone,
    # while the copy goes on.
    _report_only(c, "volume-orphan", "volume-stuck")
    rt = server.runtime
    with rt.db.write() as conn:
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.id == task_id)
            .values(state="failed", finished_at=rt.clock.now(), error="lost track (test)")
        )
        copy_id = answer.json()["volume"]["id"]
        conn.execute(volumes_table.delete().where(volumes_table.c.id == copy_id))
    scan = _scan(c)
    [orphan] = _about(scan, "volume-orphan", target)
    assert (orphan["node"], orphan["data"]["partial"], orphan["auto"]) == ("node2", True, "report")
    assert orphan["host"] == f"{200 * 1024} MiB, partial"
    [stuck] = _about(scan, "volume-stuck", "big")
    assert stuck["host"] == "task ended failed"

    _set(c, "reconcile.auto.volume-orphan", "partial")  # the default: cleans it by itself
    _set(c, "reconcile.auto.volume-stuck", "fix")
    _look_often(c)
    wait_until(lambda: store.raw("node2", LOCAL, target) is None, "the leftover removed")
    [event] = wait_until(lambda: _fixed_events(c, "volume-orphan"), "the event")
    assert event["data"]["action"].startswith("cancelled copy command ")
    assert event["data"]["file"] == target
    wait_until(lambda: c.get("/volumes/big").json()["state"] == "ready", "big at rest")
    wait_until(lambda: _storage_diffs(_scan(c)) == [], "no storage difference left")


def test_a_dead_copys_leftover_is_deleted_by_itself(cluster: Cluster) -> None:
    c = cluster[0].client
    store = _storage(cluster)
    leftover = volume_file(str(uuid.uuid4()), "qcow2")
    dead = SimPartial(node="node1", command_id="01a24900-0000-0000-0000-000000000000")
    rec = SimVolume(
        file=leftover, format="qcow2", size_mb=48, checksum=EMPTY_CHECKSUM, partial=dead
    )
    _report_only(c, "volume-orphan")
    store.put("node2", LOCAL, rec)
    assert any(v.file == leftover for v in store.volumes("node2", LOCAL, time.time()))
    [d] = _about(_scan(c), "volume-orphan", leftover)
    assert d["data"]["partial"] is True
    assert d["detail"] == "the unfinished target of a copy no running task drives"
    _set(c, "reconcile.auto.volume-orphan", "partial")  # the default: cleans it by itself
    _look_often(c)
    wait_until(lambda: store.raw("node2", LOCAL, leftover) is None, "the leftover deleted")
    [event] = wait_until(lambda: _fixed_events(c, "volume-orphan"), "the event")
    assert event["data"]["action"].startswith(f"deleted {leftover} from pool local on node2")


def test_a_vms_disks_through_create_migration_and_delete_are_no_differences(
    cluster: Cluster,
) -> None:
    c = cluster[0].client
    store = _storage(cluster)
    body = {"name": "carrier", "vcpus": 1, "memory_mb": 8192, "node": "node1", "start": True}
    body["disks"] = [{"size_mb": 256}, {"size_mb": 128}]
    assert _wait(c, c.post("/vms", json=body))["state"] == "succeeded"
    disks = c.get("/volumes", params={"vm": "carrier"}).json()["items"]
    assert [(d["node"], d["state"]) for d in disks] == [("node1", "attached")] * 2
    scan = _scan(c)
    assert _storage_diffs(scan) == [] and scan["checked_volumes"] == 2

    # A live migration (8 GiB at the sim's 2 GiB/s: 4 s) carries the local disks to node2
    # before the records follow: scans meanwhile see no difference.
    answer = c.post("/vms/carrier/migrate", json={"to": "node2"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    scans = 0
    while c.get(f"/tasks/{task_id}").json()["finished_at"] is None:
        assert _storage_diffs(_scan(c)) == []
        scans += 1
    assert scans >= 2
    assert c.get(f"/tasks/{task_id}").json()["state"] == "succeeded"
    disks = c.get("/volumes", params={"vm": "carrier"}).json()["items"]
    assert [d["node"] for d in disks] == ["node2", "node2"]
    assert all(store.get("node2", LOCAL, d["file"], time.time()) for d in disks)
    assert _storage_diffs(_scan(c)) == []

    assert _wait(c, c.delete("/vms/carrier"))["state"] == "succeeded"
    assert c.get("/volumes").json()["total"] == 0
    assert _storage_diffs(_scan(c)) == []


def test_shared_pools_only_copies_and_files_gone_from_busy_volumes(cluster: Cluster) -> None:
    server, _ = cluster
    c = server.client
    store = _storage(cluster)
    nfs = PoolKey("nfs", "shared")
    made = c.post("/pools", json={"name": "nfs", "type": "shared", "path": "/srv/nfs"})
    assert made.status_code == 201, made.text
    task = _wait(c, c.post("/volumes", json={"name": "shared1", "size_mb": 8, "pool": "nfs"}))
    assert task["state"] == "succeeded", task
    shared1 = c.get("/volumes/shared1").json()
    assert store.remove("node1", nfs, shared1["file"])  # one directory for every host

    # The only copy of a volume, moved to another host behind Bollard's back: missing where
    # its record says, and an orphan where it is, which a fix does not delete.
    solo = _volume(c, "solo")
    rec = store.get("node1", LOCAL, solo["file"], time.time())
    assert rec is not None
    store.put("node2", LOCAL, rec)
    assert store.remove("node1", LOCAL, solo["file"])

    scan = _scan(c)
    [missing] = _about(scan, "volume-missing", "shared1")
    assert (missing["node"], missing["pool"]) == (None, "nfs")
    assert missing["data"]["hosts"] == ["node1", "node2"]
    [gone] = _about(scan, "volume-missing", "solo")
    assert gone["detail"] == "a file of that name is in pool local on node2"
    [copy] = _about(scan, "volume-orphan", solo["file"])
    assert (copy["node"], copy["data"]["copy_of"]) == ("node2", "solo")
    assert copy["detail"] == "a copy of volume solo (in pool local on node1)"

    fix = c.post("/reconcile/fix", json={"classes": ["volume-orphan"]}).json()
    [failed] = fix["failed"]
    assert failed["action"] == (
        "volume solo has no file in pool local on node1: this copy may be its only one, so "
        "it is left alone (migrate or delete the volume)"
    )
    assert store.get("node2", LOCAL, solo["file"], time.time()) is not None

    # Left copying by no task, and its file gone too: stuck, and fixed to error (here by
    # the operator: the server would do it by itself by default).
    assert (
        c.put("/settings/reconcile.auto.volume-stuck", json={"value": "report"}).status_code == 200
    )
    rt = server.runtime
    with rt.db.write() as conn:
        conn.execute(
            volumes_table.update()
            .where(volumes_table.c.id == shared1["id"])
            .values(state=VolumeState.COPYING.value)
        )
    scan = _scan(c)
    assert _about(scan, "volume-stuck", "shared1")
    assert not _about(scan, "volume-missing", "shared1")  # stuck comes first
    fixed = c.post("/reconcile/fix", json={"classes": ["volume-stuck"]}).json()["fixed"]
    assert [f["volume"] for f in fixed] == ["shared1"]
    shown = c.get("/volumes/shared1").json()
    assert shown["state"] == "error"
    assert shown["fault"].startswith(
        f"left copying by no task; file {shared1['file']} missing from pool nfs on node"
    )
