"""Requests for VM operations: take the VM for a task and hand the task to the engine.

Each request takes the VM with a compare-and-swap (a VM has at most one active task; a
conflicting request gets 409 naming the task) and creates the task with its steps in the
same transaction; the engine then runs it (see tasks/engine.py and tasks/flows/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import AlreadyExists, Conflict, InsufficientCapacity, InvalidInput
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.models import Disk, Nic, Task, Vm, disk_args, nic_args
from bollard.domain.operations import DELETE, PowerOp
from bollard.domain.scheduler import decision_error
from bollard.domain.states import DesiredPower, VmState
from bollard.domain.storage import DEFAULT_POOL
from bollard.server import scheduling, sriov_nics, vm_disks
from bollard.server.clock import Clock
from bollard.server.operations.ha_policy_ops import (
    check_group,
    ha_state_columns,
    ha_state_power,
)
from bollard.server.ports import TaskLauncher, UnitOfWork
from bollard.server.tasks.params import (
    CreateParams,
    DeleteParams,
    PowerParams,
    TaskParams,
)
from bollard.store import events, flavors, ha_counts, macs, nodes, tasks, vms

log = logging.getLogger(__name__)

PLACEMENT_ATTEMPTS = 5

# Metadata that may be changed but not cleared (null).
_NOT_NULL = ("migration_method", "on_lost", "ha_priority")


@dataclass(frozen=True)
class VmMeta:
    migration_method: str = "default"
    node_limit: list[str] | None = None
    node_selector: str | None = None
    on_lost: str = "none"
    ha: str | None = None
    ha_priority: int = 0
    ha_group: str | None = None
    ha_hold: str | None = None  # ignored (ha_state ignored), or None
    max_restart: int | None = None
    max_relocate: int | None = None


def _check_node_limit(conn: Connection, limit: Sequence[str] | None) -> None:
    """A node limit names only nodes that exist (InvalidInput naming the others)."""
    if not limit:
        return
    known = {n.name for n in nodes.find_many(conn, set(limit))}
    unknown = sorted(set(limit) - known)
    if unknown:
        raise InvalidInput(
            f"node_limit: no node named {', '.join(unknown)} (`bollard node list` shows the nodes)"
        )


@dataclass(frozen=True)
class NewVm:
    """A create request as its transaction takes it."""

    name: str
    vcpus: int
    memory_mb: int
    wanted: str | None  # the node asked for (None: the scheduler's choice)
    start: bool
    meta: VmMeta
    disks: tuple[Disk, ...]
    nics: tuple[Nic, ...]
    flavor: str | None
    root_pool: str | None


# Makes new VMs in the write transaction it is given, at the time given.
PlaceAll = Callable[[Connection, datetime], list[tuple[Vm, Task]]]


class _PlaceAgain(Exception):
    """Raised inside a create's transaction to roll it back and place again (a concurrent
    request took the node's room or its last free SR-IOV VF first)."""


class VmOperations:
    """Creating VMs, their power operations and their metadata (power: a `ports.VmRequests`
    half, with `MigrateOperations.request` the other)."""

    def __init__(self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher

    async def create(
        self,
        name: str,
        vcpus: int | None,
        memory_mb: int | None,
        node: str | None,
        start: bool,
        meta: VmMeta | None = None,
        disks: Sequence[Disk] = (),
        nics: Sequence[Nic] = (),
        flavor: str | None = None,
        root_pool: str | None = None,
    ) -> tuple[Vm, Task]:
        """Create the VM and its create task: of `flavor`'s size (its root disk first, in
        `root_pool`), or of `vcpus` and `memory_mb`. A NIC with mac "" gets a free random
        MAC; a given MAC another VM has is refused (AlreadyExists naming that VM). An SR-IOV
        NIC gets a free VF of the chosen node on its physical network (claimed with the VM;
        InvalidInput when no node has that physical network)."""
        if flavor is None and (vcpus is None or memory_mb is None):
            raise InvalidInput("give a flavor, or both vcpus and memory_mb")
        new = NewVm(
            name=name, vcpus=vcpus or 0, memory_mb=memory_mb or 0, wanted=node, start=start,
            meta=meta or VmMeta(), disks=tuple(disks), nics=tuple(nics), flavor=flavor,
            root_pool=root_pool,
        )  # fmt: skip
        return await self.create_new(new)

    async def create_new(self, new: NewVm) -> tuple[Vm, Task]:
        """`create` of a request already checked (a flavor, or vcpus and memory_mb)."""
        vm, task = await self._work.run(self._create_tx, new)
        self._launcher.launch(task.id)
        return vm, task

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]:
        """start, stop, shutdown (`timeout`: the grace period), restart or delete."""
        model: type[TaskParams] = DeleteParams if op is DELETE else PowerParams
        vm, task = await self._work.run(self.begin_tx, name, op, model(**params))
        self._launcher.launch(task.id)
        return vm, task

    async def set_meta(self, name: str, values: dict[str, Any]) -> Task | None:
        """Change how the VM is migrated, placed and kept by HA (the fields given; an empty
        `node_limit` means any node, an empty `ha_group` no group); recorded as a `vm.meta`
        event. `ha_state` started on a VM meant to be stopped also starts it, stopped on one
        meant to run shuts it down (that task is returned; None: no task)."""
        values = dict(values)
        if "node_limit" in values:
            values["node_limit"] = values["node_limit"] or None
        if "ha_group" in values:
            values["ha_group"] = values["ha_group"] or None
        for key in (*_NOT_NULL, "ha_state"):
            if key in values and values[key] is None:
                raise InvalidInput(f"{key}: may not be null")
        state = values.pop("ha_state", None)
        columns = None if state is None else ha_state_columns(state, values.get("ha"))
        if columns is not None and columns.ha is not None:
            values["ha"] = columns.ha

        def tx() -> Task | None:
            with self._work.write() as conn:
                vm = vms.get(conn, name)
                if not values and columns is None:
                    return None
                _check_node_limit(conn, values.get("node_limit"))
                check_group(conn, values.get("ha_group"))
                sriov_nics.check_method(vm.nics, values.get("migration_method"))
                now = self._clock.now()
                if values:
                    vms.set_meta(conn, vm.uuid, now, **values)
                if columns is not None:
                    ha_counts.set_hold(conn, vm.uuid, columns.hold, now)
                said = {**values, **({"ha_state": state} if state is not None else {})}
                events.add(
                    conn,
                    "vm.meta",
                    "metadata changed: " + ", ".join(f"{k}={v}" for k, v in said.items()),
                    now,
                    vm_uuid=vm.uuid,
                    vm_name=vm.name,
                    node=vm.node,
                    data=said,
                )
                op = ha_state_power(state, vm.desired_power)
                return None if op is None else self.begin_in(conn, name, op, PowerParams())[1]

        task = await self._work.run(tx)
        if task is not None:
            self._launcher.launch(task.id)
        return task

    async def create_together(self, place: PlaceAll) -> list[tuple[Vm, Task]]:
        """VMs made by `place` (calling `place_in` for each) in one write transaction, all
        or none, placed again as `create` places one when a concurrent request took a node's
        room first; each of their create tasks launched once committed (vm_batch.py)."""
        made = await self._work.run(self._placing_tx, place)
        for _, task in made:
            self._launcher.launch(task.id)
        return made

    def _create_tx(self, new: NewVm) -> tuple[Vm, Task]:
        return self._placing_tx(lambda conn, now: [self.place_in(conn, new, now)])[0]

    def _placing_tx(self, place: PlaceAll) -> list[tuple[Vm, Task]]:
        now = self._clock.now()
        for _ in range(PLACEMENT_ATTEMPTS):
            try:
                with self._work.write() as conn:
                    return place(conn, now)
            except _PlaceAgain:
                continue  # rolled back: place again
        raise InsufficientCapacity("the cluster is too busy placing VMs; try again")

    def place_in(self, conn: Connection, new: NewVm, now: datetime) -> tuple[Vm, Task]:
        """Place one new VM and create it with its create task, in the caller's write
        transaction (`create_together`'s); _PlaceAgain (from here) rolls it back to place
        again."""
        name, vcpus, memory_mb, wanted, meta = (
            new.name, new.vcpus, new.memory_mb, new.wanted, new.meta
        )  # fmt: skip
        disks, nics, start = new.disks, new.nics, new.start
        vfs, vf_netdev = sriov_nics.vf_needs(nics)
        if vms.name_taken(conn, name):
            raise AlreadyExists(f"a VM named {name!r} already exists")
        flavor = None
        if new.flavor is not None:
            flavor = flavors.get(conn, new.flavor).ref()
            vcpus, memory_mb = flavor.vcpus, flavor.memory_mb
            if flavor.disk_mb:
                disks = (Disk(flavor.disk_mb, new.root_pool), *disks)
        _check_node_limit(conn, meta.node_limit)
        check_group(conn, meta.ha_group)
        vm_disks.check_disk_pools(conn, disks)
        sriov_nics.check_physnets(conn, nics)
        sriov_nics.check_method(nics, meta.migration_method)
        needs = [(d.pool or DEFAULT_POOL, d.size_mb) for d in disks]
        request = scheduling.request_for(
            vcpus, memory_mb, node_limit=meta.node_limit, node_selector=meta.node_selector,
            pools=scheduling.pool_needs(conn, needs),
            policy=scheduling.policy_for_new(conn, meta.ha_group),
            vfs=vfs, vf_netdev=vf_netdev,
        )  # fmt: skip
        settings = scheduling.read_settings(conn)
        decision = scheduling.place(conn, request, wanted=wanted, settings=settings)
        if decision.chosen is None:
            raise decision_error(decision)
        if not scheduling.claim(conn, decision.chosen, request, settings=settings):
            raise _PlaceAgain  # another request took the room first
        task_id, uuid = new_id(), new_uuid()
        with_macs = macs.assign(conn, uuid, nics)
        if not sriov_nics.claim_for(conn, uuid, decision.chosen, with_macs, now):
            raise _PlaceAgain  # another request took a free VF first
        vm = vms.create(
            conn,
            uuid=uuid,
            name=name,
            node=decision.chosen,
            vcpus=vcpus,
            memory_mb=memory_mb,
            desired_power=DesiredPower.RUNNING if start else DesiredPower.STOPPED,
            task_id=task_id,
            now=now,
            migration_method=meta.migration_method,
            node_limit=meta.node_limit,
            node_selector=meta.node_selector,
            on_lost=meta.on_lost,
            ha=meta.ha,
            ha_priority=meta.ha_priority,
            nics=with_macs,
            flavor=flavor,
        )
        ha_fields = {
            k: v
            for k, v in (("ha_group", meta.ha_group), ("ha_hold", meta.ha_hold),
                         ("max_restart", meta.max_restart),
                         ("max_relocate", meta.max_relocate))
            if v is not None
        }  # fmt: skip
        if ha_fields:
            vms.set_meta(conn, uuid, now, **ha_fields)
            vm = vms.get_by_uuid(conn, uuid)
        vm_disks.create_vm_volumes(
            conn, vm_uuid=uuid, vm_name=name, node=decision.chosen, disks=disks,
            task_id=task_id, now=now,
        )  # fmt: skip
        task = self._launcher.create_in(
            conn,
            id=task_id,
            type="create",
            vm_uuid=uuid,
            vm_name=name,
            node=decision.chosen,
            params=CreateParams(
                vcpus=vcpus,
                memory_mb=memory_mb,
                start=start,
                node=wanted,
                disks=disk_args(disks),
                nics=nic_args(with_macs),
            ),
        )
        tasks.set_result(conn, task.id, {"placement": decision.to_record()})
        return vm, tasks.get(conn, task.id)

    def begin_tx(self, name: str, op: PowerOp, params: TaskParams) -> tuple[Vm, Task]:
        """Take the VM for a new task of `op` (compare-and-swap) and create the task. The
        task keeps the desired power it found, to give it back if it fails."""
        with self._work.write() as conn:
            return self.begin_in(conn, name, op, params)

    def begin_in(
        self, conn: Connection, name: str, op: PowerOp, params: TaskParams
    ) -> tuple[Vm, Task]:
        """`begin_tx` in the caller's transaction."""
        now = self._clock.now()
        vm = vms.get(conn, name)
        if vm.vm_state is VmState.RESIZED and vm.task_id is None:
            raise Conflict(
                f"VM {name} waits in VERIFY_RESIZE: confirm or revert its resize first "
                f"(`bollard vm resize {name} --confirm` or `--revert`)"
            )
        if isinstance(params, PowerParams | DeleteParams):
            params = params.model_copy(update={"found_desired": vm.desired_power})
        task_id = new_id()
        vm_disks.check_idle(conn, vm.uuid, vm.name)
        vms.begin_task(
            conn, vm, op.task_state, task_id, now, allowed=op.allowed, desired_power=op.desired
        )
        task = self._launcher.create_in(
            conn,
            id=task_id,
            type=op.type,
            vm_uuid=vm.uuid,
            vm_name=vm.name,
            node=vm.node,
            params=params,
        )
        return vms.get_by_uuid(conn, vm.uuid), task
