"""A VM with SR-IOV NICs does not move between cells yet: the API server refuses the move
(409 naming the VM) before anything starts, and the VM stays as it was in its cell."""

from __future__ import annotations

from datetime import UTC, datetime

from bollard.domain.sriov import SriovPf, SriovVf
from bollard.store import sriov
from tests.api.test_cells_move import _wait_vm, cells
from tests.support.cells import Cells

__all__ = ["cells"]  # (the fixture, used by name)

REFUSED = "VM s has SR-IOV NICs: moving it to another node is not supported yet"


def test_a_vm_with_sriov_nics_is_not_moved_between_cells(cells: Cells) -> None:
    pf = SriovPf(
        device="ens1", physnet="fast", vfs_total=4,
        vfs=[SriovVf(index=0, pci="0000:03:10.0", netdev="ens1v0")],
    )  # fmt: skip
    with cells.cells["cell2"].runtime.db.write() as conn:
        sriov.sync_node(conn, "cell2-node1", [pf], now=datetime.now(UTC))
    api = cells.client
    made = api.post(
        "/vms", json={"name": "s", "flavor": "small", "cell": "cell2", "start": True,
                      "nics": [{"sriov": "fast", "mode": "hostdev"}]},
    )  # fmt: skip
    assert made.status_code == 202, made.text
    _wait_vm(cells, "s", "ACTIVE")

    for path, body in (
        ("/vms/s/migrate", {"to": "cell1-node1", "method": "shutdown"}),
        ("/vms/s/resize", {"flavor": "big", "to": "cell1-node1"}),
    ):
        refused = api.post(path, json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["message"] == REFUSED
    vm = api.get("/vms/s").json()
    assert (vm["cell"], vm["node"], vm["status"]) == ("cell2", "cell2-node1", "ACTIVE")
    assert api.get("/migrations").json()["total"] == 0
