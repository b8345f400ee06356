"""A VM with SR-IOV NICs moves between cells (issue 22): the target cell's copy claims a VF of
its node with the copy (its NICs keep their physical network and mode), the source cell's copy
keeps its own until the move is confirmed (then it goes with that copy) or reverted (then the
target's goes with the target's copy); a target node without a free VF refuses the copy and
the move rolls back, nothing claimed. In each cell the store's holders agree with what its
hosts' drivers say their VMs use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bollard.store import sriov
from tests.api.sriov_moves_support import PHYSNET, host_users, pf, store_users
from tests.api.test_cells_move import _done, _in_cell, _wait_vm
from tests.support.cells import Cells, running_cells
from tests.support.cluster import wait_until
from tests.support.databases import SchemaTemplates


@pytest.fixture
def cells(schema_templates: SchemaTemplates, tmp_path: Path) -> Iterator[Cells]:
    """Two cells of two nodes: `<cell>-node1` without SR-IOV, `<cell>-node2` with PF ens1 on
    physnet fast (2 VFs)."""
    with running_cells(schema_templates, tmp_path, nodes=1) as deployment:
        api = deployment.client
        for key in ("policy.vm_resize_cross_cell", "policy.vm_migrate_cross_cell"):
            assert api.put(f"/settings/{key}", json={"value": "operator"}).status_code == 200
        for name, vcpus, memory in (("small", 1, 256), ("big", 2, 512)):
            body = {"name": name, "vcpus": vcpus, "memory_mb": memory, "disk_mb": 64}
            assert api.post("/flavors", json=body).status_code == 201
        for cell in ("cell1", "cell2"):
            node = f"{cell}-node2"
            deployment.add_agent(cell, node, tmp_path, sriov_pfs=(pf(2),))
            deployment.wait_mapped(node)
            db = deployment.cells[cell].runtime.db
            wait_until(lambda db=db, node=node: _vfs(db, node), f"{node}'s VFs stored")
        yield deployment


def _vfs(db: Any, node: str) -> list[sriov.VfRow]:
    with db.read() as conn:
        return sriov.vfs_of(conn, node)


def _held(cells: Cells, cell: str, uuid: str) -> list[tuple[str, str | None, str | None]]:
    """(node, MAC, pending task) of every VF the VM holds in `cell`."""
    with cells.cells[cell].runtime.db.read() as conn:
        return sorted((v.node, v.mac, v.task_id) for v in sriov.holders(conn, uuid))


def _agree(cells: Cells, base: Path) -> None:
    """In each cell, the VFs its SR-IOV host's VMs use are those the store gives them."""
    for cell in ("cell1", "cell2"):
        node = f"{cell}-node2"
        db = cells.cells[cell].runtime.db
        assert host_users(base / cell / "fabric", node) == store_users(db, node), node


def _sriov_vm(cells: Cells, name: str) -> dict[str, Any]:
    made = cells.client.post(
        "/vms", json={"name": name, "flavor": "small", "cell": "cell2", "start": True,
                      "nics": [{"sriov": PHYSNET, "mode": "hostdev"}, {"bridge": "br0"}]},
    )  # fmt: skip
    assert made.status_code == 202, made.text
    vm = _wait_vm(cells, name, "ACTIVE")
    assert vm["node"] == "cell2-node2"  # the only node of its cell with a VF
    return vm


def test_a_move_claims_a_vf_in_the_target_cell_and_the_confirm_frees_the_sources(
    cells: Cells, tmp_path: Path
) -> None:
    api = cells.client
    vm = _sriov_vm(cells, "s")
    mac = vm["nics"][0]["mac"]
    moved = _done(cells, api.post("/vms/s/resize", json={"flavor": "big", "to": "cell1-node2"}))
    assert moved["state"] == "succeeded", moved
    there = _wait_vm(cells, "s", "VERIFY_RESIZE")
    assert (there["cell"], there["node"]) == ("cell1", "cell1-node2")
    assert there["nics"] == vm["nics"]  # physical network and mode kept, MACs too
    assert _held(cells, "cell1", vm["uuid"]) == [("cell1-node2", mac, None)]
    assert _held(cells, "cell2", vm["uuid"]) == [("cell2-node2", mac, None)]  # its copy's
    _agree(cells, tmp_path)

    confirmed = _done(cells, api.post("/vms/s/resize/confirm"))
    assert confirmed["state"] == "succeeded", confirmed
    assert _in_cell(cells, "cell2", "s") is None
    assert _held(cells, "cell2", vm["uuid"]) == []
    assert _held(cells, "cell1", vm["uuid"]) == [("cell1-node2", mac, None)]
    _agree(cells, tmp_path)


def test_a_reverted_move_frees_the_target_cells_vf(cells: Cells, tmp_path: Path) -> None:
    api = cells.client
    vm = _sriov_vm(cells, "r")
    mac = vm["nics"][0]["mac"]
    body = {"to": "cell1-node2", "method": "shutdown"}
    assert _done(cells, api.post("/vms/r/migrate", json=body))["state"] == "succeeded"
    _wait_vm(cells, "r", "VERIFY_RESIZE")
    assert _held(cells, "cell1", vm["uuid"]) == [("cell1-node2", mac, None)]

    reverted = _done(cells, api.post("/vms/r/resize/revert"))
    assert reverted["state"] == "succeeded", reverted
    back = _wait_vm(cells, "r", "ACTIVE")
    assert (back["cell"], back["node"]) == ("cell2", "cell2-node2")
    assert _held(cells, "cell1", vm["uuid"]) == []
    assert _held(cells, "cell2", vm["uuid"]) == [("cell2-node2", mac, None)]
    _agree(cells, tmp_path)


def test_a_target_node_without_a_free_vf_refuses_the_copy_and_the_move_rolls_back(
    cells: Cells, tmp_path: Path
) -> None:
    api = cells.client
    vm = _sriov_vm(cells, "n")
    mac = vm["nics"][0]["mac"]
    task = _done(cells, api.post("/vms/n/resize", json={"flavor": "big", "to": "cell1-node1"}))
    assert task["state"] in ("failed", "rolled_back"), task
    assert f"no free SR-IOV VF on physnet {PHYSNET}" in (task["error"] or ""), task
    vm_now = _wait_vm(cells, "n", "ACTIVE")
    assert (vm_now["cell"], vm_now["node"]) == ("cell2", "cell2-node2")
    assert _in_cell(cells, "cell1", "n") is None
    assert _held(cells, "cell1", vm["uuid"]) == []
    assert _held(cells, "cell2", vm["uuid"]) == [("cell2-node2", mac, None)]
    _agree(cells, tmp_path)


def test_a_move_without_a_target_goes_to_a_node_of_the_other_cell_with_a_free_vf(
    cells: Cells, tmp_path: Path
) -> None:
    """The cross-cell weigher asks each cell for nodes with free VFs on the VM's physical
    networks: with its own cell drained, the VM goes to cell1-node2 (a VF), never to
    cell1-node1 (none), which would refuse the copy."""
    api = cells.client
    vm = _sriov_vm(cells, "w")
    assert api.patch("/cells/cell2", json={"weight_multiplier": -1000000}).status_code == 200
    moved = _done(cells, api.post("/vms/w/migrate", json={"method": "shutdown"}))
    assert moved["state"] == "succeeded", moved
    there = _wait_vm(cells, "w", "VERIFY_RESIZE")
    assert (there["cell"], there["node"]) == ("cell1", "cell1-node2")
    assert _held(cells, "cell1", vm["uuid"]) == [("cell1-node2", vm["nics"][0]["mac"], None)]
    _agree(cells, tmp_path)
