"""Storage pools through the real server and sim agents, on SQLite and PostgreSQL: create,
list, show, update, delete, the refusals (each with a clear message and nothing changed), and
the storage monitor, whose per-host reports of room are checked against what the sim fabric
says each pool has."""

from __future__ import annotations

from typing import Any

import httpx

from bollard.sim.storage import PoolKey
from tests.api.test_api_vms import Cluster
from tests.api.test_api_volumes import (
    done,
    make_pool,
    make_vm,
    make_volume,
    names,
    refused,
    storage,
)
from tests.support.cluster import wait_until

TIB = 1024 * 1024  # a sim pool's capacity unless set, in MiB
REPORT = 15.0  # seconds the monitor may take to report a change (it is kicked at once)


def pools(c: httpx.Client) -> dict[str, dict[str, Any]]:
    page = c.get("/pools").json()
    assert page["total"] == len(page["items"]) and page["next_cursor"] is None, page
    return {p["name"]: p for p in page["items"]}


def reports(c: httpx.Client, pool: str) -> dict[str, tuple[int | None, int | None]]:
    """What each host of the pool last reported: {node: (capacity_mb, free_mb)}."""
    hosts = c.get(f"/pools/{pool}").json()["hosts"]
    return {h["node"]: (h["capacity_mb"], h["free_mb"]) for h in hosts}


def _settings(pool: dict[str, Any]) -> dict[str, Any]:
    """What a pool is (not what its hosts last reported)."""
    fields = ("name", "type", "path", "nodes", "description", "created_at", "volumes")
    return {k: pool[k] for k in fields}


def reported(c: httpx.Client, pool: str, expected: dict[str, tuple[int, int]]) -> None:
    wait_until(lambda: reports(c, pool) == expected, f"{pool}'s hosts to report {expected}",
               timeout=REPORT)  # fmt: skip


def test_the_pool_local_is_there_from_the_start(cluster: Cluster) -> None:
    c = cluster[0].client
    local = c.get("/pools/local").json()
    assert (local["type"], local["path"], local["nodes"]) == ("local", None, None)
    assert (local["volumes"], local["provisioned_mb"]) == (0, 0)
    assert list(pools(c)) == ["local"]
    # Both hosts report their default directory as it is on the fabric (1 TiB each).
    reported(c, "local", {"node1": (TIB, TIB), "node2": (TIB, TIB)})
    local = c.get("/pools/local").json()
    assert (local["capacity_mb"], local["free_mb"]) == (2 * TIB, 2 * TIB)  # summed
    for h in local["hosts"]:
        assert h["error"] is None and h["reported_at"]


def test_pools_are_created_listed_shown_updated_and_deleted(cluster: Cluster) -> None:
    c = cluster[0].client
    answer = c.post("/pools", json={"name": "scratch", "type": "local", "description": "tmp"})
    assert answer.status_code == 201, answer.text
    scratch = answer.json()
    assert (scratch["type"], scratch["path"], scratch["nodes"]) == ("local", None, None)
    assert (scratch["description"], scratch["volumes"], scratch["provisioned_mb"]) == (
        "tmp", 0, 0,
    )  # fmt: skip
    nfs = make_pool(c, "nfs", path="/srv//nfs/")
    assert (nfs["type"], nfs["path"], nfs["nodes"]) == ("shared", "/srv/nfs", None)
    san = make_pool(c, "san", path="/mnt/san", nodes=["node2"])
    assert san["nodes"] == ["node2"]
    fast = make_pool(c, "fast", type="local", path="/var/fast", nodes=["node1"])
    assert (fast["type"], fast["path"], fast["nodes"]) == ("local", "/var/fast", ["node1"])

    listed = pools(c)
    assert list(listed) == ["fast", "local", "nfs", "san", "scratch"]
    for name, created in (("scratch", scratch), ("nfs", nfs), ("san", san), ("fast", fast)):
        shown = c.get(f"/pools/{name}").json()
        for field in ("name", "type", "path", "nodes", "description", "created_at"):
            assert shown[field] == created[field] == listed[name][field], (name, field)

    # The hosts of each pool report it (and made its directory); the others do not.
    reported(c, "san", {"node2": (TIB, TIB)})
    reported(c, "fast", {"node1": (TIB, TIB)})
    reported(c, "scratch", {"node1": (TIB, TIB), "node2": (TIB, TIB)})
    fabric = storage(cluster)
    assert PoolKey("fast", "local") in fabric.pools("node1")
    assert PoolKey("fast", "local") not in fabric.pools("node2")
    assert {PoolKey("nfs", "shared"), PoolKey("san", "shared")} <= set(fabric.pools(None))

    # Update: the nodes (a subset, every node again) and the description.
    updated = c.patch("/pools/san", json={"nodes": ["node2", "node1"], "description": "SAN"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["nodes"], updated.json()["description"]) == (
        ["node1", "node2"], "SAN",
    )  # fmt: skip
    reported(c, "san", {"node1": (TIB, TIB), "node2": (TIB, TIB)})
    assert c.patch("/pools/fast", json={"nodes": None}).json()["nodes"] is None
    reported(c, "fast", {"node1": (TIB, TIB), "node2": (TIB, TIB)})
    only = c.patch("/pools/san", json={"description": None}).json()
    assert (only["nodes"], only["description"]) == (["node1", "node2"], None)
    assert c.get("/pools/san").json()["description"] is None
    refused(c.patch("/pools/nope", json={"description": "x"}), 404, "nope")

    # Delete.
    for name in ("scratch", "fast"):
        assert c.delete(f"/pools/{name}").status_code == 204
        refused(c.get(f"/pools/{name}"), 404, name)
    refused(c.delete("/pools/scratch"), 404, "scratch")
    assert list(pools(c)) == ["local", "nfs", "san"]
    kinds = [e["kind"] for e in c.get("/events").json()["items"]]
    assert {"pool.created", "pool.updated", "pool.deleted"} <= set(kinds)


def test_the_monitor_reports_room_and_what_volumes_take(cluster: Cluster) -> None:
    c = cluster[0].client
    fabric = storage(cluster)
    # The shared directory is smaller than the default: every host reports the same room.
    fabric.set_pool_capacity("node1", PoolKey("nfs", "shared"), 5000)
    make_pool(c, "nfs")
    reported(c, "nfs", {"node1": (5000, 5000), "node2": (5000, 5000)})
    nfs = c.get("/pools/nfs").json()
    assert (nfs["capacity_mb"], nfs["free_mb"]) == (5000, 5000)  # not summed: one directory

    make_volume(c, "r1", 1000, pool="nfs", format="raw")  # raw: takes its whole size
    make_volume(c, "q1", 3000, pool="nfs")  # qcow2: takes what is written (nothing yet)
    nfs = c.get("/pools/nfs").json()
    assert (nfs["volumes"], nfs["provisioned_mb"]) == (2, 4000)
    # A pool change makes the monitor look again at once.
    assert c.patch("/pools/nfs", json={"description": "filled"}).status_code == 200
    reported(c, "nfs", {"node1": (5000, 4000), "node2": (5000, 4000)})
    assert c.get("/pools/nfs").json()["free_mb"] == 4000

    # Asking for more than the pool has free is refused; nothing is made.
    before = c.get("/tasks").json()["total"]
    refused(c.post("/volumes", json={"name": "huge", "size_mb": 4001, "pool": "nfs"}),
            409, "pool nfs has 4000 MiB free")  # fmt: skip
    assert c.get("/tasks").json()["total"] == before
    assert names(c.get("/volumes").json()["items"]) == ["q1", "r1"]

    # A host dropped from a pool: its report goes with it.
    make_pool(c, "fast", type="local", path="/var/fast")
    reported(c, "fast", {"node1": (TIB, TIB), "node2": (TIB, TIB)})
    assert c.patch("/pools/fast", json={"nodes": ["node1"]}).status_code == 200
    assert reports(c, "fast") == {"node1": (TIB, TIB)}
    fast = c.get("/pools/fast").json()
    assert (fast["capacity_mb"], fast["free_mb"]) == (TIB, TIB)


def test_pool_refusals_are_clear_and_change_nothing(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "nfs", path="/srv/nfs")
    before = {name: _settings(p) for name, p in pools(c).items()}
    mark = c.get("/events").json()["last_id"]
    for body, status, says in [
        ({"name": "nfs", "type": "shared", "path": "/srv/other"}, 409, "a pool named 'nfs'"),
        ({"name": "local", "type": "local"}, 409, "a pool named 'local'"),
        ({"name": "Big", "type": "local"}, 422, "name"),
        ({"name": "-x", "type": "local"}, 422, "name"),
        ({"name": "a b", "type": "local"}, 422, "name"),
        ({"name": "x" * 64, "type": "local"}, 422, "name"),
        ({"name": "x", "type": "nfs", "path": "/srv/x"}, 422, "type"),
        ({"name": "x", "type": "shared"}, 422, "a shared pool needs the directory"),
        ({"name": "x", "type": "shared", "path": ""}, 422, "a shared pool needs the directory"),
        ({"name": "x", "type": "shared", "path": "srv/x"}, 422, "not an absolute directory"),
        ({"name": "x", "type": "local", "path": "../x"}, 422, "not an absolute directory"),
        ({"name": "x", "type": "local", "path": "/"}, 422, "root directory"),
        ({"name": "x", "type": "shared", "path": "/srv/nfs"}, 409, "pool nfs is at /srv/nfs"),
        ({"name": "x", "type": "shared", "path": "/srv/nfs/"}, 409, "pool nfs is at /srv/nfs"),
        ({"name": "x", "type": "local", "path": "/srv/nfs/x"}, 409, "pools do not overlap"),
        ({"name": "x", "type": "shared", "path": "/srv"}, 409, "pools do not overlap"),
        ({"name": "x", "type": "shared", "path": "/mnt/x", "nodes": ["node1", "node9"]},
         422, "no node named node9"),
        ({"name": "x", "type": "shared", "path": "/mnt/x", "nodes": []}, 422, "at least one"),
    ]:  # fmt: skip
        refused(c.post("/pools", json=body), status, says)
    # /srv/nfsx is not inside /srv/nfs: it is a pool of its own.
    make_pool(c, "nfsx", path="/srv/nfsx")
    assert c.delete("/pools/nfsx").status_code == 204
    for body, says in [
        ({"nodes": ["node9"]}, "no node named node9"),
        ({"nodes": []}, "at least one"),
    ]:
        refused(c.patch("/pools/nfs", json=body), 422, says)
    assert {name: _settings(p) for name, p in pools(c).items()} == before
    since = c.get("/events", params={"after": mark}).json()["items"]
    assert [e["kind"] for e in since if e["kind"].startswith("pool.")] == [
        "pool.created",  # nfsx
        "pool.deleted",
    ]


def test_a_pool_holding_volumes_and_the_pool_local_cannot_be_deleted(cluster: Cluster) -> None:
    c = cluster[0].client
    refused(c.delete("/pools/local"), 409, "pool local is where VM disks go by default")
    make_pool(c, "nfs")
    make_volume(c, "v1", pool="nfs")
    make_volume(c, "v2", pool="nfs")
    refused(c.delete("/pools/nfs"), 409, "holds 2 volume(s)", "v1", "v2")
    assert "nfs" in pools(c)
    for v in ("v1", "v2"):
        done(c, c.delete(f"/volumes/{v}"))
    assert c.delete("/pools/nfs").status_code == 204
    assert list(pools(c)) == ["local"]


def test_a_host_a_volume_needs_cannot_be_dropped(cluster: Cluster) -> None:
    c = cluster[0].client
    make_pool(c, "fast", type="local", path="/var/fast")
    make_volume(c, "on2", pool="fast", node="node2")
    refused(c.patch("/pools/fast", json={"nodes": ["node1"]}), 409, "on2 (on node2)")
    assert c.get("/pools/fast").json()["nodes"] is None
    # Keeping node2 is fine.
    assert c.patch("/pools/fast", json={"nodes": ["node2"]}).json()["nodes"] == ["node2"]

    # A shared pool cannot lose the host that runs a VM using one of its volumes.
    make_pool(c, "nfs")
    make_vm(c, "web", node="node1")
    make_volume(c, "data", pool="nfs")
    done(c, c.post("/volumes/data/attach", json={"vm": "web"}))
    refused(c.patch("/pools/nfs", json={"nodes": ["node2"]}), 409, "data (used by web on node1)")
    assert c.get("/pools/nfs").json()["nodes"] is None
    done(c, c.post("/volumes/data/detach"))
    assert c.patch("/pools/nfs", json={"nodes": ["node2"]}).json()["nodes"] == ["node2"]
