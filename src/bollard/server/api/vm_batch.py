"""/api/v1/vms/batch: many VMs at once (operations/vm_batch.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bollard.domain.models import Task, Vm
from bollard.server.api.deps import VmOpsDep, WorkDep
from bollard.server.api.responses import DESCRIPTIONS
from bollard.server.api.schemas import ErrorOut, TaskOut, VmCreate, VmTask
from bollard.server.api.vms import ViewsDep, VmViews, new_vm
from bollard.server.operations.vm_batch import MAX_COUNT, MIN_COUNT, create_batch
from bollard.server.ports import UnitOfWork
from bollard.store import vms

router = APIRouter(prefix="/vms", tags=["vms"])


class VmBatchCreate(VmCreate):
    count: int = Field(
        ge=MIN_COUNT,
        le=MAX_COUNT,
        description=f"How many VMs ({MIN_COUNT} to {MAX_COUNT}), named NAME-1 .. NAME-COUNT "
        "(each name a valid VM name: at most 63 characters).",
    )


class VmTaskList(BaseModel):
    items: list[VmTask] = Field(description="Each VM and its create task, NAME-1 first.")


# As `POST /vms` (responses.py EXTRA): the body names a node that may not exist; no free MAC.
_ALSO: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": DESCRIPTIONS[status]} for status in (404, 503)
}


@router.post("/batch", status_code=202, response_model=VmTaskList, responses=_ALSO)
async def create_vms(
    body: VmBatchCreate, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep
) -> VmTaskList:
    """Create `count` VMs alike, named NAME-1 .. NAME-COUNT, each placed as `POST /vms`
    places one (`node`: all on that node), all of them and their create tasks in one
    transaction: all or nothing. A name taken (409 naming it), a VM that does not fit (409
    saying how many fit) or anything else refused creates none. A NIC with a given `mac` is
    refused (422): a MAC belongs to one VM. Follow each task to see its VM made."""
    made = await create_batch(vm_ops, new_vm(body), body.count)
    return VmTaskList(items=await _answers(work, views, made))


async def _answers(work: UnitOfWork, views: VmViews, made: list[tuple[Vm, Task]]) -> list[VmTask]:
    def tx() -> list[VmTask]:
        with work.read() as conn:
            found = vms.find_many(conn, [vm.uuid for vm, _ in made])
            current = [found.get(vm.uuid, vm) for vm, _ in made]
            seen = views.seen(conn, current)
            return [
                VmTask(vm=views.out(vm, seen), task=TaskOut.of(task))
                for vm, (_, task) in zip(current, made, strict=True)
            ]

    return await work.run(tx)
