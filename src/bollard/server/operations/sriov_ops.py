"""An operator's change of an SR-IOV VF's settings (`bollard node vf set`, `PATCH
/nodes/{name}/sriov/{pf}/vfs/{vf}`): checked here, then applied on the host by a `vf_set`
task (tasks/flows/vf_set.py) whose end records it.

Everything that can be refused is refused here, before the task exists, each with one line
naming the value: settings out of range (InvalidInput), a node, PF or VF the store does not
have (NotFound), a node whose agent is not connected (NodeUnavailable: the change would wait
on a host that may never come back; ask again once it is), a MAC change on a VF a VM holds
(Conflict: the VF's MAC is the VM NIC's own), and a second change of a VF whose first is
still running (Conflict: two merges in flight would record whichever ended last).
"""

from __future__ import annotations

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput, NodeUnavailable, NotFound
from bollard.domain.ids import new_id
from bollard.domain.models import Task, normalise_mac
from bollard.domain.sriov import DEVICE, VfSettings
from bollard.server.ports import TaskLauncher, Touch, UnitOfWork
from bollard.server.tasks.flows.vf_set import TYPE, VfSetParams
from bollard.store import nodes, sriov, tasks, vms


class SriovOperations:
    def __init__(self, *, work: UnitOfWork, launcher: TaskLauncher, touch: Touch) -> None:
        self._work = work
        self._launcher = launcher
        self._touch = touch

    async def set_vf(self, node: str, pf: str, index: int, change: VfSettings) -> Task:
        """Start the task that applies `change` (only its set fields) to VF `index` of PF
        `pf` on `node`; the task, pending."""
        task = await self._work.run(self._tx, node, pf, index, change)
        self._launcher.launch(task.id)
        self._touch()
        return task

    def _tx(self, node: str, pf: str, index: int, change: VfSettings) -> Task:
        change.check()
        if not change.given():
            raise InvalidInput("nothing to change: give at least one VF setting")
        if change.mac is not None:  # as the host reports it back: lower case
            change = change.model_copy(update={"mac": normalise_mac(change.mac)})
        with self._work.write() as conn:
            record = nodes.get(conn, node)
            vf = _existing_vf(conn, node, pf, index)
            if not record.connected:
                raise NodeUnavailable(
                    f"node {node} is not connected: its VF settings cannot be applied now"
                )
            if change.mac is not None:
                _keep_holders_mac(conn, vf, change.mac)
            for other in tasks.unfinished(conn, include_rolling_back=True):
                same = other.params.get("pf") == pf and other.params.get("vf") == index
                if other.type == TYPE and other.node == node and same:
                    raise Conflict(
                        f"node {node}: PF {pf} VF {index} is being changed by task {other.id}; "
                        "try again once it has ended"
                    )
            params = VfSetParams(pf=pf, vf=index, settings=change.given())
            return self._launcher.create_in(
                conn, id=new_id(), type=TYPE, vm_uuid=None, vm_name=None, node=node,
                params=params,
            )  # fmt: skip


def _existing_vf(conn: Connection, node: str, pf: str, index: int) -> sriov.VfRow:
    """The VF's row; NotFound naming the PF or the VF the node does not have."""
    found = sriov.vf(conn, node, pf, index) if DEVICE.fullmatch(pf) else None
    if found is not None:
        return found
    if pf not in {p.device for p in sriov.pfs_of(conn, node)}:
        raise NotFound(f"node {node} has no SR-IOV PF {pf!r} (not in its agent's configuration)")
    raise NotFound(f"node {node}: PF {pf} has no VF {index}")


def _keep_holders_mac(conn: Connection, vf: sriov.VfRow, mac: str) -> None:
    """Conflict unless `mac` is already the MAC of the VM NIC holding the VF."""
    if vf.used_by is None or mac == vf.mac:
        return
    holder = vms.find_by_uuid(conn, vf.used_by)
    raise Conflict(
        f"node {vf.node}: PF {vf.pf} VF {vf.idx} is held by VM "
        f"{holder.name if holder else vf.used_by}: its MAC is the VM NIC's ({vf.mac}), not {mac}"
    )
