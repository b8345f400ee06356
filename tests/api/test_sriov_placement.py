"""SR-IOV NICs in placement, through the real server, sim agents and store (SQLite, and
PostgreSQL when one is reachable): a VM with an SR-IOV NIC goes only to a node with a free VF
on the NIC's physical network, claims that VF with its creation (the host's DEFINE names it),
frees it when deleted; a physical network no node has is refused before anything is made;
two creates racing for the last VF never share it; a move that does not claim the target's
VFs is refused for such a VM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bollard.domain.errors import Conflict
from bollard.domain.sriov import SriovPf, SriovVf
from bollard.server import scheduling
from bollard.store import sriov, vms
from bollard.store.db import Database
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import ServerThread

NOW = datetime(2025, 1, 1, tzinfo=UTC)
MOVE_REFUSED = "has SR-IOV NICs: moving it to another node is not supported yet"


def _pf(node_no: int, device: str, physnet: str, count: int, *, bus: int = 3) -> SriovPf:
    vfs = [
        SriovVf(index=i, pci=f"0000:{bus:02x}:{node_no:02x}.{i}", netdev=f"{device}v{i}")
        for i in range(count)
    ]
    return SriovPf(device=device, physnet=physnet, vfs_total=8, vfs=vfs)


def _report(db: Database, node: str, *pfs: SriovPf) -> None:
    with db.write() as conn:
        sriov.sync_node(conn, node, list(pfs), now=NOW)


@pytest.fixture
def db(cluster: Cluster) -> Database:
    """The server's database, with node1's PF ens1 on physnet fast (2 VFs) and node2's on
    fast (1 VF): as if their agents had reported them."""
    database = cluster[0].runtime.db
    _report(database, "node1", _pf(1, "ens1", "fast", 2))
    _report(database, "node2", _pf(2, "ens1", "fast", 1))
    return database


def _vm(name: str, *nics: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": name, "vcpus": 1, "memory_mb": 256, "nics": list(nics)} | more


def _holders(db: Database, uuid: str) -> list[sriov.VfRow]:
    with db.read() as conn:
        return sriov.holders(conn, uuid)


def _free(db: Database, physnet: str = "fast") -> dict[str, int]:
    with db.read() as conn:
        return sriov.free_counts(conn, physnet)


def _define_nics(c: httpx.Client, vm: str) -> list[dict[str, Any]]:
    listed = c.get("/commands", params={"vm": vm}).json()["items"]
    [define] = [x for x in listed if x["type"] == "define"]
    nics: list[dict[str, Any]] = define["args"]["nics"]
    return nics


def _nothing_created(c: httpx.Client, name: str) -> None:
    assert c.get(f"/vms/{name}").status_code == 404
    assert c.get("/vms").json()["total"] == 0
    assert c.get("/tasks").json()["total"] == 0


def test_create_claims_a_vf_the_define_names_and_delete_frees_it(
    cluster: Cluster, db: Database
) -> None:
    c = cluster[0].client
    nics = ({"sriov": "fast", "mode": "macvtap"}, {"bridge": "br0"})
    answer = c.post("/vms", json=_vm("s1", *nics, node="node1", start=True))
    vm = answer.json()["vm"]
    task = _wait(c, answer)
    assert task["state"] == "succeeded", task
    mac = vm["nics"][0]["mac"]
    assert vm["nics"][0] | {"mac": ""} == {
        "mac": "", "network": None, "bridge": None, "model": "virtio", "sriov": "fast",
        "mode": "macvtap",
    }  # fmt: skip

    [held] = _holders(db, vm["uuid"])
    assert (held.node, held.pf, held.idx, held.mac, held.task_id) == (
        "node1", "ens1", 0, mac, None
    )  # fmt: skip
    # The task's params keep the NIC as the VM has it; the host is given the VF held.
    assert task["params"]["nics"][0] == {
        "mac": mac, "sriov": "fast", "mode": "macvtap", "model": "virtio"
    }  # fmt: skip
    assert _define_nics(c, "s1")[0] == {
        "mac": mac, "sriov": "fast", "mode": "macvtap", "model": "virtio",
        "vf_pci": "0000:03:01.0", "vf_netdev": "ens1v0",
    }  # fmt: skip
    assert _define_nics(c, "s1")[1]["bridge"] == "br0"
    assert _free(db) == {"node1": 1, "node2": 1}

    assert _wait(c, c.delete("/vms/s1"))["state"] == "succeeded"
    assert _holders(db, vm["uuid"]) == []
    assert _free(db) == {"node1": 2, "node2": 1}


def test_the_scheduler_places_by_free_vfs_and_a_full_cluster_is_refused_with_the_reasons(
    cluster: Cluster, db: Database
) -> None:
    c = cluster[0].client
    two = ({"sriov": "fast", "mode": "hostdev"}, {"sriov": "fast"})
    # node1 has the most memory and both VFs it takes; node2 has one only.
    first = c.post("/vms", json=_vm("two", *two))
    assert first.json()["task"]["result"]["placement"]["rejected"] == [
        {"node": "node2", "reason": "no free SR-IOV VF on physnet fast (1 free, 2 needed)"}
    ]
    assert _wait(c, first)["state"] == "succeeded"
    assert {(v.node, v.idx) for v in _holders(db, first.json()["vm"]["uuid"])} == {
        ("node1", 0),
        ("node1", 1),
    }
    # node2's only VF goes next, whatever the selector prefers.
    one = c.post("/vms", json=_vm("one", {"sriov": "fast"}))
    assert one.json()["vm"]["node"] == "node2"
    assert _wait(c, one)["state"] == "succeeded"

    full = c.post("/vms", json=_vm("none", {"sriov": "fast"}))
    assert full.status_code == 409, full.text
    assert full.json()["error"]["message"] == (
        "no node can take the VM: node1: no free SR-IOV VF on physnet fast (0 free, 1 needed); "
        "node2: no free SR-IOV VF on physnet fast (0 free, 1 needed)"
    )
    assert c.get("/vms/none").status_code == 404
    # A VM without SR-IOV NICs still fits.
    assert c.post("/vms", json=_vm("plain", {"bridge": "br0"})).status_code == 202


def test_a_physnet_no_node_has_is_refused_before_anything_is_made(
    cluster: Cluster, db: Database
) -> None:
    c = cluster[0].client
    answer = c.post("/vms", json=_vm("x", {"bridge": "br0"}, {"sriov": "nope"}))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"] == "nics[1]: no node has SR-IOV physical network nope"
    _nothing_created(c, "x")
    assert _free(db) == {"node1": 2, "node2": 1}


def test_a_move_that_does_not_claim_vfs_is_refused_for_an_sriov_vm(
    cluster: Cluster, db: Database
) -> None:
    """Every move claims the target's VFs with its task (`request_for_vm(..., vfs=True)`;
    migrations: tests/api/test_sriov_migration.py); a caller that does not ask so is refused
    for a VM with SR-IOV NICs, never given a node whose VFs nobody claims."""
    c = cluster[0].client
    answer = c.post("/vms", json=_vm("f", {"sriov": "fast"}, node="node1", start=True))
    assert _wait(c, answer)["state"] == "succeeded"
    plain = c.post("/vms", json=_vm("p", {"bridge": "br0"}, node="node1"))
    assert _wait(c, plain)["state"] == "succeeded"
    with db.read() as conn:
        found, other = vms.get(conn, "f"), vms.get(conn, "p")
        with pytest.raises(Conflict, match=f"^VM f {MOVE_REFUSED}$"):
            scheduling.request_for_vm(conn, found, leaving="node1", lock=False)
        request = scheduling.request_for_vm(conn, found, leaving="node1", lock=False, vfs=True)
        assert dict(request.vfs) == {"fast": 1}
        assert scheduling.request_for_vm(conn, other, leaving="node1", lock=False).vfs == {}


@pytest.fixture
def pg_only(db_url: str) -> Iterator[None]:
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks (FOR UPDATE SKIP LOCKED) are PostgreSQL's")
    yield


def test_racing_creates_for_the_last_vf_never_share_it(
    pg_only: None, cluster: Cluster, db: Database
) -> None:
    """Eight creates at once for three VFs: three are made, each with a VF of its own, and
    the others are refused with the scheduler's reasons (never "too busy")."""
    server: ServerThread = cluster[0]
    barrier = threading.Barrier(8)
    answers: dict[str, httpx.Response] = {}

    def create(i: int) -> None:
        with httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
        ) as client:
            barrier.wait(timeout=10)
            answers[f"r{i}"] = client.post("/vms", json=_vm(f"r{i}", {"sriov": "fast"}))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()

    made = {name: a.json()["vm"] for name, a in answers.items() if a.status_code == 202}
    refused = {name: a for name, a in answers.items() if a.status_code != 202}
    assert len(made) == 3, {n: a.text for n, a in answers.items()}
    for answer in refused.values():
        assert answer.status_code == 409, answer.text
        assert (
            "no free SR-IOV VF on physnet fast (0 free, 1 needed)"
            in (answer.json()["error"]["message"])
        )
    held = [v for vm in made.values() for v in _holders(db, vm["uuid"])]
    assert len(held) == 3
    assert len({(v.node, v.pf, v.idx) for v in held}) == 3  # never one VF twice
    assert {v.node for v in held} == {"node1", "node2"}
    assert _free(db) == {"node1": 0, "node2": 0}
