"""/api/v1/nodes/{name}/sriov: a node's SR-IOV PFs and VFs, and a change of one VF's settings
(issue 22). Reads for every role; a change (`node.sriov`, admin: a VF's trust, spoof check
and MAC decide what its guest may do on the physical network) is a `vf_set` task."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from bollard.domain.sriov import vf_settings
from bollard.server.api.deps import ServicesDep, WorkDep
from bollard.server.api.node_sriov_schemas import NodeSriovOut, PfOut, VfChange
from bollard.server.api.schemas import Name, TaskOut
from bollard.store import nodes, sriov, vms

router = APIRouter(prefix="/nodes", tags=["sriov"])

Pf = Annotated[str, Path(min_length=1, max_length=64, description="The PF's network device.")]
VfIndex = Annotated[int, Path(description="The VF's number on the PF.")]


@router.get("/{name}/sriov", response_model=NodeSriovOut)
async def node_sriov(name: Name, work: WorkDep) -> NodeSriovOut:
    """The node's SR-IOV PFs (from its agent's configuration, as its host found them) with
    their VFs: PCI address, network device, the settings Bollard set and those the host
    reports, and the VM whose NIC holds each."""

    def tx() -> NodeSriovOut:
        with work.read() as conn:
            node = nodes.get(conn, name)
            pfs = sriov.pfs_of(conn, name)
            rows = sriov.vfs_of(conn, name)
            users = {u for r in rows for u in (r.used_by, r.host_used_by) if u is not None}
            known = vms.find_many(conn, sorted(users))
        return NodeSriovOut(
            node=name,
            connected=node.connected,
            pfs=[PfOut.of(pf, [r for r in rows if r.pf == pf.device], known) for pf in pfs],
        )

    return await work.run(tx)


@router.patch("/{name}/sriov/{pf}/vfs/{vf}", status_code=202, response_model=TaskOut)
async def set_vf(name: Name, pf: Pf, vf: VfIndex, body: VfChange, s: ServicesDep) -> TaskOut:
    """Change a VF's settings (only the fields given). Answers the `vf_set` task that applies
    them on the host with a journaled command; at its end they are recorded (and re-applied
    by the agent at every start). 422: a value out of range; 404: a PF or VF the node does
    not have; 409: the node's agent is not connected, the VF's MAC is a VM NIC's, or a change
    of the VF is still running."""
    change = vf_settings(body.given())
    return TaskOut.of(await s.sriov_ops.set_vf(name, pf, vf, change))
