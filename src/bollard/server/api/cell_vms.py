"""What an API server in front of cells asks of a cell for a VM moving between cells:
`POST /vms/import` (a hidden copy of a VM from another cell), `POST /vms/{name}/hide` and
`/unhide`; and the guard that keeps hidden VMs out of sight: every `/vms/{name}...` call about
a hidden VM answers 404 unless it says `?hidden=true` (operations/cell_ops.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from bollard.domain.errors import NotFound
from bollard.domain.flavors import FlavorRef
from bollard.server import scheduling, sriov_nics
from bollard.server.api.deps import CellOpsDep, WorkDep
from bollard.server.api.params import NAME_PATTERN, Text
from bollard.server.api.schemas import Name, NicIn, VmOut
from bollard.server.api.vms import CHECKS_HIDDEN, HIDDEN_CHECK, ViewsDep
from bollard.server.operations.cell_ops import ImportedDisk, PastAction, VmRecord
from bollard.store import pools, vms

router = APIRouter(prefix="/vms", tags=["cells"])
_NAME = re.compile(NAME_PATTERN)

Hidden = Annotated[
    bool,
    Query(
        description="Address a hidden VM (a cell's copy of a VM moving between cells, "
        "left out of every list): without it such a VM is 404."
    ),
]


async def visible(request: Request, work: WorkDep, hidden: Hidden = False) -> None:
    """404 for a hidden VM named in the path, unless `?hidden=true`. A route that reads the
    VM in a transaction anyway checks it there (api/vms.py CHECKS_HIDDEN): one transaction
    per call, not two."""
    name = request.path_params.get("name")
    if hidden or not isinstance(name, str) or not _NAME.fullmatch(name):
        return  # (an invalid name is the route's to refuse, 422)
    if getattr(request.scope.get("route"), "endpoint", None) in CHECKS_HIDDEN:
        request.scope[HIDDEN_CHECK] = name
        return

    def tx() -> bool:
        with work.read() as conn:
            return vms.is_hidden(conn, name)

    if await work.run(tx):
        raise NotFound(f"VM {name!r} does not exist")


VisibleDep = Depends(visible)


class DiskImport(BaseModel):
    device: str = Field(pattern=r"^vd[a-z]{1,2}$")
    size_mb: int = Field(ge=1, le=64 * 1024 * 1024)
    pool: str = Field(max_length=63)
    format: str = Field(pattern=r"^(qcow2|raw)$")


class FlavorRecord(BaseModel):
    id: str | None = Field(default=None, max_length=36)
    name: str | None = Field(default=None, max_length=63)
    vcpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=16, le=16 * 1024 * 1024)
    disk_mb: int = Field(default=0, ge=0)
    properties: dict[str, str] = Field(default_factory=dict)


class NicImport(NicIn):
    """A NIC of the VM, kept as it is; an SR-IOV NIC claims a free VF of the node here (409
    naming the physical network if it has none)."""

    mac: str = Field(description="The MAC the VM keeps (taken here too: 409 if taken).")


class ActionImport(BaseModel):
    """An ended action of the VM in its cell (GET /vms/{name}/actions), kept with it."""

    task_id: str = Field(pattern=r"^[0-9a-f-]{36}$")
    action: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,40}$")
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    actor: Text | None = Field(default=None, max_length=100)
    result: Literal["success", "error"]
    message: Text | None = Field(default=None, max_length=2000)
    start_time: datetime
    finish_time: datetime | None = None


class VmImport(BaseModel):
    """A VM as another cell holds it (the API server copies it here while it moves)."""

    name: Name
    uuid: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    vcpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=16, le=16 * 1024 * 1024)
    node: Name = Field(description="The node it goes to: claimed now (409 if it does not fit).")
    flavor: FlavorRecord | None = None
    nics: list[NicImport] = Field(default_factory=list, max_length=32)
    disks: list[DiskImport] = Field(default_factory=list, max_length=26)
    ha: str | None = Field(default=None, pattern=r"^(restart|none)$")
    ha_priority: int = Field(default=0, ge=-1000, le=1000)
    on_lost: str = Field(default="none", max_length=20)
    migration_method: str = Field(default="default", max_length=20)
    actions: list[ActionImport] = Field(default_factory=list, max_length=10_000)


@router.post("/import", status_code=201, response_model=VmOut)
async def import_vm(body: VmImport, ops: CellOpsDep, work: WorkDep, views: ViewsDep) -> VmOut:
    """Copy a VM here, hidden, on `node` (claimed, with a VF of it for each SR-IOV NIC), its
    disks `reserved` volumes to be filled from images (`POST /vms/{name}/spawn?hidden=true`).
    The same uuid again answers the copy already made."""
    record = VmRecord(
        name=body.name, uuid=body.uuid, vcpus=body.vcpus, memory_mb=body.memory_mb,
        node=body.node,
        flavor=None if body.flavor is None else FlavorRef.of(body.flavor.model_dump()),
        nics=tuple(replace(n.nic(), mac=n.mac.lower()) for n in body.nics),
        disks=tuple(ImportedDisk(d.device, d.size_mb, d.pool, d.format) for d in body.disks),
        meta={"ha": body.ha, "ha_priority": body.ha_priority, "on_lost": body.on_lost,
              "migration_method": body.migration_method},
        actions=tuple(
            PastAction(a.task_id, a.action, a.request_id, a.actor, a.result == "success",
                       a.message, a.start_time, a.finish_time)
            for a in body.actions
        ),
    )  # fmt: skip
    vm = await ops.import_vm(record)
    return await work.run(_one, work, views, vm.name)


def _one(work: WorkDep, views: ViewsDep, name: str) -> VmOut:
    with work.read() as conn:
        return views.one(conn, name)


@router.post("/{name}/hide", response_model=VmOut)
async def hide_vm(name: Name, ops: CellOpsDep, work: WorkDep, views: ViewsDep) -> VmOut:
    """Hide the VM (it stays, holding its node's room and MACs, out of every list)."""
    await ops.set_hidden(name, True)
    return await work.run(_one, work, views, name)


@router.post("/{name}/unhide", response_model=VmOut)
async def unhide_vm(name: Name, ops: CellOpsDep, work: WorkDep, views: ViewsDep) -> VmOut:
    """Show a hidden VM again."""
    await ops.set_hidden(name, False)
    return await work.run(_one, work, views, name)


placement = APIRouter(prefix="/placement", tags=["cells"])


class DiskNeed(BaseModel):
    pool: str = Field(max_length=63)
    size_mb: int = Field(ge=1, le=64 * 1024 * 1024)


class CandidatesAsk(BaseModel):
    vcpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=16, le=16 * 1024 * 1024)
    disks: list[DiskNeed] = Field(default_factory=list, max_length=26)
    nics: list[NicIn] = Field(
        default_factory=list,
        max_length=32,
        description="The VM's NICs: a node needs a free VF for each SR-IOV one.",
    )


class SizeCandidate(BaseModel):
    node: str
    score: float | None


class SizeCandidates(BaseModel):
    selector: str
    chosen: str | None
    ranking: list[SizeCandidate] = Field(description="Nodes that can take it, best first.")
    rejected: dict[str, str] = Field(description="node -> why it cannot.")


@placement.post("/candidates", response_model=SizeCandidates)
async def candidates(body: CandidatesAsk, work: WorkDep) -> SizeCandidates:
    """Where a VM of this size (and disks) would go in this cell now, nothing claimed (an API
    server in front of cells weighs the cells' answers to place a VM moving between them)."""

    def tx() -> SizeCandidates:
        with work.read() as conn:
            known = pools.by_name(conn, {d.pool for d in body.disks})
            missing = sorted({d.pool for d in body.disks} - set(known))
            if missing:
                return SizeCandidates(selector="-", chosen=None, ranking=[],
                                      rejected={"*": f"no pool {', '.join(missing)}"})  # fmt: skip
            needs = [(d.pool, d.size_mb) for d in body.disks]
            vfs, vf_netdev = sriov_nics.vf_needs([n.nic() for n in body.nics])
            request = scheduling.request_for(
                body.vcpus, body.memory_mb, pools=scheduling.pool_needs(conn, needs),
                vfs=vfs, vf_netdev=vf_netdev,
            )  # fmt: skip
            decision = scheduling.place(conn, request, settings=scheduling.read_settings(conn))
        return SizeCandidates(
            selector=decision.selector.value,
            chosen=decision.chosen,
            ranking=[SizeCandidate(node=n, score=s) for n, s in decision.ranking],
            rejected=dict(decision.rejected),
        )

    return await work.run(tx)
