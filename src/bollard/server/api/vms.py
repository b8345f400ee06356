"""/api/v1/vms"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput
from bollard.domain.models import Disk, HostVm, Task, Vm
from bollard.server.api.deps import RuntimeDep
from bollard.server.api.schemas import (
    MigrateRequest,
    NodesSeen,
    ShutdownRequest,
    TaskOut,
    VmCreate,
    VmMetaFields,
    VmOut,
    VmPage,
    VmTask,
)
from bollard.server.runtime import Runtime
from bollard.server.tasks import vm_ops
from bollard.server.tasks.vm_ops import VmMeta
from bollard.store import events, host_vms, nodes, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/vms", tags=["vms"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


def _last_seen(rt: Runtime, conn: Connection, owners: set[str]) -> NodesSeen:
    """A VM's status is UNKNOWN once its owner has been silent past the dead threshold
    (``owners``: the nodes of the VMs shown, the only ones read)."""
    all_nodes = nodes.find_many(conn, owners)
    dead_after = int(rt.settings.get("health.dead_after"))
    return NodesSeen(
        last={n.name: n.last_heartbeat for n in all_nodes},
        host_time={n.name: n.report_host_time for n in all_nodes},
        stale_after=dead_after * rt.config.heartbeat_interval,
    )


def _owners(shown: list[Vm]) -> set[str]:
    return {vm.node for vm in shown if vm.node is not None}


def _vm_out(rt: Runtime, vm: Vm, seen: NodesSeen, observed: HostVm | None = None) -> VmOut:
    return VmOut.of(vm, seen, rt.clock.now(), observed)


def _one(rt: Runtime, conn: Connection, name: str) -> VmOut:
    """One VM with what its owner host reports of it (spec included)."""
    vm = vms.get(conn, name)
    observed = next((e for e in host_vms.for_vm(conn, vm.uuid) if e.node == vm.node), None)
    return _vm_out(rt, vm, _last_seen(rt, conn, _owners([vm])), observed)


async def _answer(rt: Runtime, vm: Vm, task: Task) -> VmTask:
    def tx() -> VmTask:
        with rt.db.read() as conn:
            current = vms.find_by_uuid(conn, vm.uuid) or vm
            seen = _last_seen(rt, conn, _owners([current]))
            return VmTask(vm=_vm_out(rt, current, seen), task=TaskOut.of(task))

    return await rt.db_call(tx)


@router.post("", status_code=202, response_model=VmTask)
async def create_vm(body: VmCreate, rt: RuntimeDep) -> VmTask:
    """Place the VM on a node (most free memory among connected nodes that fit, or `node`),
    define it there (with its local `disks`, created empty, and its `nics`, each with its
    given MAC or a free random one) and, with `start`, start it. Follow the task to see it
    end. A MAC another VM has: 409 naming that VM."""
    meta = VmMeta(
        migration_method=body.migration_method or "default",
        node_limit=body.node_limit or None,
        node_selector=body.node_selector,
        on_lost=body.on_lost or "none",
        ha=body.ha,
        ha_priority=body.ha_priority or 0,
    )
    disks = [Disk(d.size_mb) for d in body.disks]
    nics = [n.nic() for n in body.nics]
    vm, task = await rt.vm_ops.create(
        body.name, body.vcpus, body.memory_mb, body.node, body.start, meta, disks, nics
    )
    return await _answer(rt, vm, task)


@router.get("", response_model=VmPage)
async def list_vms(rt: RuntimeDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> VmPage:
    def tx() -> VmPage:
        with rt.db.read() as conn:
            page = vms.list_page(conn, limit=limit, cursor=cursor)
            seen = _last_seen(rt, conn, _owners(page.items))
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
            return _one(rt, conn, name)

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


@router.patch("/{name}", response_model=VmOut)
async def set_vm_meta(name: str, body: VmMetaFields, rt: RuntimeDep) -> VmOut:
    """Change how the VM is migrated and placed (fields left out are unchanged)."""

    def tx() -> VmOut:
        values = body.model_dump(exclude_unset=True)
        if "node_limit" in values:
            values["node_limit"] = values["node_limit"] or None
        for key in ("migration_method", "on_lost", "ha_priority"):
            if key in values and values[key] is None:
                raise InvalidInput(f"{key}: may not be null")
        with rt.db.write() as conn:
            vm = vms.get(conn, name)
            if values:
                vms.set_meta(conn, vm.uuid, rt.clock.now(), **values)
                events.add(
                    conn,
                    "vm.meta",
                    "metadata changed: " + ", ".join(f"{k}={v}" for k, v in values.items()),
                    rt.clock.now(),
                    vm_uuid=vm.uuid,
                    vm_name=vm.name,
                    node=vm.node,
                    data={k: v for k, v in values.items()},
                )
            return _one(rt, conn, name)

    return await rt.db_call(tx)


async def _migration(rt: Runtime, name: str, mode: str, body: MigrateRequest | None) -> VmTask:
    body = body or MigrateRequest()
    if mode == "unmigrate" and body.to is not None:
        raise InvalidInput("to: unmigrate always returns the VM to its previous node")
    vm, task = await rt.migrate_ops.request(
        name, mode=mode, to=body.to, method=body.method, force_live=body.force_live
    )
    return await _answer(rt, vm, task)


@router.post("/{name}/migrate", status_code=202, response_model=VmTask)
async def migrate_vm(name: str, rt: RuntimeDep, body: MigrateRequest | None = None) -> VmTask:
    """Move the VM to another node for now; it remembers where it came from (`unmigrate`)."""
    return await _migration(rt, name, "migrate", body)


@router.post("/{name}/move", status_code=202, response_model=VmTask)
async def move_vm(name: str, rt: RuntimeDep, body: MigrateRequest | None = None) -> VmTask:
    """Move the VM to another node for good (it forgets any previous node)."""
    return await _migration(rt, name, "move", body)


@router.post("/{name}/unmigrate", status_code=202, response_model=VmTask)
async def unmigrate_vm(name: str, rt: RuntimeDep, body: MigrateRequest | None = None) -> VmTask:
    """Send a migrated VM back to its previous node."""
    return await _migration(rt, name, "unmigrate", body)
