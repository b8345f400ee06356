"""/api/v1/vms"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.models import Disk, HostVm, Task, Vm
from bollard.domain.operations import DELETE, RESTART, SHUTDOWN, START, STOP
from bollard.server.api.deps import (
    MigrateOpsDep,
    ResizeOpsDep,
    ServicesDep,
    VmOpsDep,
    WorkDep,
)
from bollard.server.api.schemas import (
    MigrateRequest,
    Name,
    NodesSeen,
    ResizeRequest,
    ShutdownRequest,
    TaskOut,
    VmCreate,
    VmMetaFields,
    VmOut,
    VmPage,
    VmTask,
)
from bollard.server.clock import Clock
from bollard.server.operations.ha_policy_ops import ha_state_columns
from bollard.server.operations.migrate_ops import MigrateOperations
from bollard.server.operations.vm_ops import NewVm, VmMeta
from bollard.server.ports import SettingsReader, UnitOfWork
from bollard.server.settings import stored_value
from bollard.store import host_vms, migrations_log, nodes, vms, volumes
from bollard.store import settings as stored_settings
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/vms", tags=["vms"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


DEAD_AFTER = "health.dead_after"
# How old the dead threshold a view uses may be: it is read through the view's own
# transaction at most once a second per server (store/settings.py `recent`: a change made on
# this server is seen at once, one made on another server within this).
DEAD_AFTER_MAX_AGE = 1.0


@dataclass(frozen=True)
class VmViews:
    """VMs as the API shows them: with their status derived, UNKNOWN once their owner has
    been silent past the dead threshold (blocking: call inside a transaction's function).
    `settings` is not read: the threshold comes through the transaction (DEAD_AFTER_MAX_AGE)."""

    settings: SettingsReader
    clock: Clock
    heartbeat_interval: float

    def seen(self, conn: Connection, shown: list[Vm]) -> NodesSeen:
        """When the nodes of the VMs shown (the only ones read) last reported, and the
        VMs' disks (the volumes attached to them)."""
        heard = nodes.last_heard(conn, _owners(shown))
        now = self.clock.monotonic()
        raw = stored_settings.recent(conn, DEAD_AFTER, max_age=DEAD_AFTER_MAX_AGE, now=now)
        dead_after = int(stored_value(DEAD_AFTER, raw))
        return NodesSeen(
            last={name: beat for name, (beat, _) in heard.items()},
            host_time={name: host_time for name, (_, host_time) in heard.items()},
            stale_after=dead_after * self.heartbeat_interval,
            disks=volumes.of_vms(conn, [vm.uuid for vm in shown]),
            resizes=migrations_log.open_for_vms(conn, [vm.uuid for vm in shown]),
        )

    def out(self, vm: Vm, seen: NodesSeen, observed: HostVm | None = None) -> VmOut:
        return VmOut.of(vm, seen, self.clock.now(), observed)

    def one(self, conn: Connection, name: str, *, unless_hidden: bool = False) -> VmOut:
        """One VM with what its owner host reports of it (spec included); `unless_hidden`:
        NotFound for a hidden VM too, as `cell_vms.visible` says."""
        vm = vms.get(conn, name)
        if unless_hidden and vm.hidden:
            raise NotFound(f"VM {name!r} does not exist")
        observed = next((e for e in host_vms.for_vm(conn, vm.uuid) if e.node == vm.node), None)
        return self.out(vm, self.seen(conn, [vm]), observed)


async def _views(s: ServicesDep) -> VmViews:
    return VmViews(s.settings, s.clock, s.heartbeat_interval)


ViewsDep = Annotated[VmViews, Depends(_views)]


def _owners(shown: list[Vm]) -> set[str]:
    return {vm.node for vm in shown if vm.node is not None}


async def _answer(work: UnitOfWork, views: VmViews, vm: Vm, task: Task) -> VmTask:
    def tx() -> VmTask:
        with work.read() as conn:
            current = vms.find_by_uuid(conn, vm.uuid) or vm
            seen = views.seen(conn, [current])
            return VmTask(vm=views.out(current, seen), task=TaskOut.of(task))

    return await work.run(tx)


def new_vm(body: VmCreate) -> NewVm:
    """The VM a create body asks for, as `POST /vms` takes it (InvalidInput: what is wrong
    with it)."""
    problems = body.size_problems()
    if problems:
        raise InvalidInput("; ".join(problems))
    ha: str | None = body.ha
    hold: str | None = None
    start = body.start
    if body.ha_state is not None:
        columns = ha_state_columns(body.ha_state, body.ha)
        ha, hold = columns.ha, None if columns.hold is None else columns.hold.value
        if body.ha_state == "stopped" and start:
            raise InvalidInput("ha_state stopped: not with start (started starts it)")
        start = start or body.ha_state == "started"
    meta = VmMeta(
        migration_method=body.migration_method or "default",
        node_limit=body.node_limit or None,
        node_selector=body.node_selector,
        on_lost=body.on_lost or "none",
        ha=ha,
        ha_priority=body.ha_priority or 0,
        ha_group=body.ha_group or None,
        ha_hold=hold,
        max_restart=body.max_restart,
        max_relocate=body.max_relocate,
    )
    return NewVm(
        name=body.name, vcpus=body.vcpus or 0, memory_mb=body.memory_mb or 0,
        wanted=body.node, start=start, meta=meta,
        disks=tuple(Disk(d.size_mb, d.pool) for d in body.disks),
        nics=tuple(n.nic() for n in body.nics), flavor=body.flavor, root_pool=body.root_pool,
    )  # fmt: skip


@router.post("", status_code=202, response_model=VmTask)
async def create_vm(body: VmCreate, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep) -> VmTask:
    """Place the VM on a node (most free memory among connected nodes that fit, or `node`),
    define it there (with its local `disks`, created empty, and its `nics`, each with its
    given MAC or a free random one) and, with `start`, start it. Follow the task to see it
    end. A MAC another VM has: 409 naming that VM."""
    vm, task = await vm_ops.create_new(new_vm(body))
    return await _answer(work, views, vm, task)


@router.get("", response_model=VmPage)
async def list_vms(
    work: WorkDep, views: ViewsDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> VmPage:
    def tx() -> VmPage:
        with work.read() as conn:
            page = vms.list_page(conn, limit=limit, cursor=cursor)
            seen = views.seen(conn, page.items)
        return VmPage(
            items=[views.out(v, seen) for v in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{name}", response_model=VmOut)
async def show_vm(name: Name, request: Request, work: WorkDep, views: ViewsDep) -> VmOut:
    # `cell_vms.visible` leaves its check to this transaction (CHECKS_HIDDEN).
    unless_hidden = request.scope.get(HIDDEN_CHECK) == name

    def tx() -> VmOut:
        with work.read() as conn:
            return views.one(conn, name, unless_hidden=unless_hidden)

    return await work.run(tx)


# The routes that read their VM in a transaction anyway and check there that it is not hidden:
# `cell_vms.visible` (a dependency of every /vms/{name} route) then puts the name to check in
# the ASGI scope under HIDDEN_CHECK instead of reading the VM in a transaction of its own.
CHECKS_HIDDEN: frozenset[Callable[..., Any]] = frozenset({show_vm})
HIDDEN_CHECK = "bollard.hidden_check"


@router.post("/{name}/start", status_code=202, response_model=VmTask)
async def start_vm(name: Name, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep) -> VmTask:
    return await _answer(work, views, *await vm_ops.power(name, START))


@router.post("/{name}/stop", status_code=202, response_model=VmTask)
async def stop_vm(name: Name, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep) -> VmTask:
    """Power the VM off at once (no guest shutdown)."""
    return await _answer(work, views, *await vm_ops.power(name, STOP))


@router.post("/{name}/shutdown", status_code=202, response_model=VmTask)
async def shutdown_vm(
    name: Name,
    vm_ops: VmOpsDep,
    work: WorkDep,
    views: ViewsDep,
    body: ShutdownRequest | None = None,
) -> VmTask:
    """Ask the guest to shut down (ACPI); force it off once `timeout` seconds have passed."""
    timeout = body.timeout if body else None
    return await _answer(work, views, *await vm_ops.power(name, SHUTDOWN, timeout=timeout))


@router.post("/{name}/restart", status_code=202, response_model=VmTask)
async def restart_vm(name: Name, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep) -> VmTask:
    return await _answer(work, views, *await vm_ops.power(name, RESTART))


@router.delete("/{name}", status_code=202, response_model=VmTask)
async def delete_vm(name: Name, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep) -> VmTask:
    """Power the VM off, undefine it on its node and remove its record."""
    return await _answer(work, views, *await vm_ops.power(name, DELETE))


@router.patch("/{name}", response_model=VmOut)
async def set_vm_meta(
    name: Name, body: VmMetaFields, vm_ops: VmOpsDep, work: WorkDep, views: ViewsDep
) -> VmOut:
    """Change how the VM is migrated, placed and kept by HA (fields left out are unchanged).
    `ha_state` started on a stopped VM also starts it, stopped on a running one shuts it
    down (the VM's `task_id` names that task); setting it clears an error state."""
    await vm_ops.set_meta(name, body.model_dump(exclude_unset=True))

    def tx() -> VmOut:
        with work.read() as conn:
            return views.one(conn, name)

    return await work.run(tx)


async def _migration(
    migrate_ops: MigrateOperations,
    work: UnitOfWork,
    views: VmViews,
    name: str,
    mode: str,
    body: MigrateRequest | None,
) -> VmTask:
    body = body or MigrateRequest()
    vm, task = await migrate_ops.request(
        name, mode=mode, to=body.to, method=body.method, force_live=body.force_live
    )
    return await _answer(work, views, vm, task)


@router.post("/{name}/migrate", status_code=202, response_model=VmTask)
async def migrate_vm(
    name: Name,
    migrate_ops: MigrateOpsDep,
    work: WorkDep,
    views: ViewsDep,
    body: MigrateRequest | None = None,
) -> VmTask:
    """Move the VM to another node for now; it remembers where it came from (`unmigrate`)."""
    return await _migration(migrate_ops, work, views, name, "migrate", body)


@router.post("/{name}/move", status_code=202, response_model=VmTask)
async def move_vm(
    name: Name,
    migrate_ops: MigrateOpsDep,
    work: WorkDep,
    views: ViewsDep,
    body: MigrateRequest | None = None,
) -> VmTask:
    """Move the VM to another node for good (it forgets any previous node)."""
    return await _migration(migrate_ops, work, views, name, "move", body)


@router.post("/{name}/unmigrate", status_code=202, response_model=VmTask)
async def unmigrate_vm(
    name: Name,
    migrate_ops: MigrateOpsDep,
    work: WorkDep,
    views: ViewsDep,
    body: MigrateRequest | None = None,
) -> VmTask:
    """Send a migrated VM back to its previous node."""
    return await _migration(migrate_ops, work, views, name, "unmigrate", body)


@router.post("/{name}/resize", status_code=202, response_model=VmTask)
async def resize_vm(
    name: Name, body: ResizeRequest, resize_ops: ResizeOpsDep, work: WorkDep, views: ViewsDep
) -> VmTask:
    """Give the VM another flavor: it is shut down (if it runs), its disks are copied to the
    destination (`to`, or the scheduler's choice; its own node only with the setting
    resize.allow_same_node) and the root disk grown to the flavor's (never shrunk), then it
    is defined there at the new size and started if it ran. It then waits in VERIFY_RESIZE:
    the source keeps its old copy, disks and resources until the resize is confirmed or
    reverted (or confirmed by itself after resize.confirm_window seconds, if set)."""
    return await _answer(work, views, *await resize_ops.resize(name, body.flavor, body.to))


@router.post("/{name}/resize/confirm", status_code=202, response_model=VmTask)
async def confirm_resize(
    name: Name, resize_ops: ResizeOpsDep, work: WorkDep, views: ViewsDep
) -> VmTask:
    """Keep the new size: the source's copy of the VM and its disks are deleted and its
    resources released (409 unless the VM is in VERIFY_RESIZE)."""
    return await _answer(work, views, *await resize_ops.confirm(name))


@router.post("/{name}/resize/revert", status_code=202, response_model=VmTask)
async def revert_resize(
    name: Name, resize_ops: ResizeOpsDep, work: WorkDep, views: ViewsDep
) -> VmTask:
    """Go back: the destination's guest and the copies are destroyed, its claim released,
    and the VM returns to the source at its old size, started if it ran before the resize
    (status REVERT_RESIZE meanwhile; 409 unless the VM is in VERIFY_RESIZE)."""
    return await _answer(work, views, *await resize_ops.revert(name))
