"""/api/v1/vms"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from bollard.domain.models import Task, Vm
from bollard.server.api.deps import RuntimeDep
from bollard.server.api.schemas import ShutdownRequest, TaskOut, VmCreate, VmOut, VmPage, VmTask
from bollard.server.runtime import Runtime
from bollard.server.tasks import vm_ops
from bollard.store import nodes, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/vms", tags=["vms"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def _last_seen(conn: Connection) -> dict[str, datetime | None]:
    return {n.name: n.last_heartbeat for n in nodes.list_all(conn)}


def _vm_out(rt: Runtime, vm: Vm, seen: dict[str, datetime | None]) -> VmOut:
    return VmOut.of(vm, seen, rt.clock.now(), rt.config.stale_after)


async def _answer(rt: Runtime, vm: Vm, task: Task) -> VmTask:
    def tx() -> VmTask:
        with rt.db.read() as conn:
            current = vms.find_by_uuid(conn, vm.uuid) or vm
            return VmTask(vm=_vm_out(rt, current, _last_seen(conn)), task=TaskOut.of(task))

    return await rt.db_call(tx)


@router.post("", status_code=202, response_model=VmTask)
async def create_vm(body: VmCreate, rt: RuntimeDep) -> VmTask:
    """Place the VM on a node (most free memory among connected nodes that fit, or `node`),
    define it there and, with `start`, start it. Follow the task to see it end."""
    vm, task = await rt.vm_ops.create(body.name, body.vcpus, body.memory_mb, body.node, body.start)
    return await _answer(rt, vm, task)


@router.get("", response_model=VmPage)
async def list_vms(rt: RuntimeDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> VmPage:
    def tx() -> VmPage:
        with rt.db.read() as conn:
            page = vms.list_page(conn, limit=limit, cursor=cursor)
            seen = _last_seen(conn)
        return VmPage(
            items=[_vm_out(rt, v, seen) for v in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await rt.db_call(tx)


@router.get("/{name}", response_model=VmOut)
async def show_vm(name: str, rt: RuntimeDep) -> VmOut:
    def tx() -> VmOut:
        with rt.db.read() as conn:
            return _vm_out(rt, vms.get(conn, name), _last_seen(conn))

    return await rt.db_call(tx)


@router.post("/{name}/start", status_code=202, response_model=VmTask)
async def start_vm(name: str, rt: RuntimeDep) -> VmTask:
    return await _answer(rt, *await rt.vm_ops.power(name, vm_ops.START))


@router.post("/{name}/stop", status_code=202, response_model=VmTask)
async def stop_vm(name: str, rt: RuntimeDep) -> VmTask:
    """Power the VM off at once (no guest shutdown)."""
    return await _answer(rt, *await rt.vm_ops.power(name, vm_ops.STOP))


@router.post("/{name}/shutdown", status_code=202, response_model=VmTask)
async def shutdown_vm(name: str, rt: RuntimeDep, body: ShutdownRequest | None = None) -> VmTask:
    """Ask the guest to shut down (ACPI); force it off once `timeout` seconds have passed."""
    timeout = body.timeout if body else None
    return await _answer(rt, *await rt.vm_ops.power(name, vm_ops.SHUTDOWN, timeout=timeout))


@router.post("/{name}/restart", status_code=202, response_model=VmTask)
async def restart_vm(name: str, rt: RuntimeDep) -> VmTask:
    return await _answer(rt, *await rt.vm_ops.power(name, vm_ops.RESTART))


@router.delete("/{name}", status_code=202, response_model=VmTask)
async def delete_vm(name: str, rt: RuntimeDep) -> VmTask:
    """Power the VM off, undefine it on its node and remove its record."""
    return await _answer(rt, *await rt.vm_ops.power(name, vm_ops.DELETE))
