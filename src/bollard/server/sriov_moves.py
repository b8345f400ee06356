"""The SR-IOV side of moving a VM to another node (a migration, an HA restart after a fence,
a resize to another node and its confirm or revert, a VM copied into another cell): the claim
of the target's VFs, with the reason when there is none, and the release of what a move
leaves behind (issue 22).

Every move follows one rule (see ``sriov_nics``): the step that claims the target's
capacity claims its VFs in the same transaction, under the move's task id, so its undo
releases exactly those (``sriov_nics.release_claims``) and never a VF the VM keeps where it
is; the move's commit makes them the VM's and frees the source's
(``sriov_nics.commit_move``). A resize keeps the source's until it is confirmed (then they
go) or reverted (then the destination's go), because the source keeps the VM's stopped
copy, which still names them, until then.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from bollard.domain.errors import InsufficientCapacity
from bollard.domain.models import Nic
from bollard.server import sriov_nics
from bollard.store import sriov


def no_free_vf(node: str, physnet: str) -> InsufficientCapacity:
    return InsufficientCapacity(
        f"target node {node} has no free SR-IOV VF on physical network {physnet}"
    )


def claim_on(
    conn: Connection,
    vm_uuid: str,
    node: str,
    nics: tuple[Nic, ...] | list[Nic],
    now: datetime,
    task_id: str | None,
) -> None:
    """Claim a VF of `node` for each of the VM's SR-IOV NICs, in the caller's transaction
    (`task_id`: the move whose undo releases them; None: the VM's at once).
    InsufficientCapacity naming the node and the physical network of the first NIC that
    finds none (the scheduler counted free VFs, so only a concurrent claim gets here); the
    caller's transaction then rolls back, with the claims made so far.

    The NICs are claimed one at a time, in ``claim_for``'s order (macvtap first: they need a
    VF with a network device, a hostdev NIC takes any), so the one that failed is known."""
    ordered = sorted(sriov_nics.sriov_nics(nics), key=lambda n: n.mode != sriov_nics.MACVTAP)
    for nic in ordered:
        assert nic.sriov is not None
        if not sriov_nics.claim_for(conn, vm_uuid, node, [nic], now, task_id=task_id):
            raise no_free_vf(node, nic.sriov)


def keep_only(conn: Connection, vm_uuid: str, node: str) -> int:
    """Free the VFs the VM holds on any node but `node` (where it now is, alone): what an HA
    restart leaves on the fenced node, and on the source of a resize it waited to confirm
    there. How many were freed."""
    others = {v.node for v in sriov.holders(conn, vm_uuid) if v.node != node}
    return sum(sriov.release(conn, vm=vm_uuid, node=other) for other in sorted(others))
