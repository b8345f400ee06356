"""Requests for VM operations: take the VM for a task and hand the task to the engine.

Each request takes the VM with a compare-and-swap (a VM has at most one active task; a
conflicting request gets 409 naming the task) and creates the task with its steps in the
same transaction; the engine then runs it (see engine.py and flows/).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bollard.domain.errors import AlreadyExists, Conflict, InsufficientCapacity
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.models import Disk, Nic, Node, Task, Vm, disk_args, nic_args
from bollard.domain.placement import NodeCapacity, choose_node
from bollard.domain.states import (
    DesiredPower,
    NodeHealth,
    SchedulingState,
    TaskState,
    VmState,
)
from bollard.store import macs, nodes, vms

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

PLACEMENT_ATTEMPTS = 5


@dataclass(frozen=True)
class PowerOp:
    type: str
    task_state: TaskState
    allowed: frozenset[VmState]
    desired: DesiredPower | None


_ON = frozenset({VmState.ACTIVE, VmState.PAUSED})
START = PowerOp("start", TaskState.POWERING_ON, frozenset({VmState.STOPPED}), DesiredPower.RUNNING)
STOP = PowerOp("stop", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED)
SHUTDOWN = PowerOp("shutdown", TaskState.POWERING_OFF, _ON, DesiredPower.STOPPED)
RESTART = PowerOp("restart", TaskState.REBOOTING, frozenset({VmState.ACTIVE}), DesiredPower.RUNNING)
DELETE = PowerOp(
    "delete",
    TaskState.DELETING,
    frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.ERROR}),
    DesiredPower.STOPPED,
)


@dataclass(frozen=True)
class VmMeta:
    migration_method: str = "default"
    node_limit: list[str] | None = None
    node_selector: str | None = None
    on_lost: str = "none"
    ha: str | None = None
    ha_priority: int = 0


_AWAY = frozenset({NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCED, NodeHealth.FENCE_FAILED})


def _takes_new_vms(node: Node) -> bool:
    return node.scheduling is SchedulingState.READY and node.health not in _AWAY


def _check_wanted(conn: Connection, name: str) -> None:
    node = nodes.get(conn, name)
    if node.scheduling is not SchedulingState.READY:
        raise Conflict(f"node {name} is {node.scheduling}: it takes no new VMs")
    if node.health in _AWAY:
        raise Conflict(f"node {name} is {node.health}: it takes no new VMs")


class VmOperations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def create(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        node: str | None,
        start: bool,
        meta: VmMeta | None = None,
        disks: Sequence[Disk] = (),
        nics: Sequence[Nic] = (),
    ) -> tuple[Vm, Task]:
        """Create the VM and its create task. A NIC with mac "" gets a free random MAC; a given
        MAC another VM has is refused (AlreadyExists naming that VM)."""
        vm, task = await self.rt.db_call(
            self._create_tx,
            name,
            vcpus,
            memory_mb,
            node,
            start,
            meta or VmMeta(),
            tuple(disks),
            tuple(nics),
        )
        self.rt.engine.launch(task.id)
        return vm, task

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]:
        vm, task = await self.rt.db_call(
            self.begin_tx, name, op.type, op.task_state, op.allowed, params, op.desired
        )
        self.rt.engine.launch(task.id)
        return vm, task

    def _create_tx(
        self,
        name: str,
        vcpus: int,
        memory_mb: int,
        wanted: str | None,
        start: bool,
        meta: VmMeta,
        disks: tuple[Disk, ...] = (),
        nics: tuple[Nic, ...] = (),
    ) -> tuple[Vm, Task]:
        now = self.rt.clock.now()
        for _ in range(PLACEMENT_ATTEMPTS):
            with self.rt.db.write() as conn:
                if vms.name_taken(conn, name):
                    raise AlreadyExists(f"a VM named {name!r} already exists")
                capacities = [
                    NodeCapacity(
                        n.name,
                        n.connected,
                        n.vcpus,
                        n.memory_mb,
                        n.allocated_vcpus,
                        n.allocated_memory_mb,
                    )
                    for n in nodes.list_all(conn)
                    if (meta.node_limit is None or n.name in meta.node_limit)
                    and (n.name == wanted or _takes_new_vms(n))
                ]
                if wanted is not None:
                    _check_wanted(conn, wanted)
                target = choose_node(capacities, vcpus, memory_mb, wanted=wanted)
                if not nodes.claim(conn, target.name, vcpus, memory_mb):
                    continue  # another request took the room first: place again
                task_id, uuid = new_id(), new_uuid()
                with_macs = macs.assign(conn, uuid, nics)
                vm = vms.create(
                    conn,
                    uuid=uuid,
                    name=name,
                    node=target.name,
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
                    disks=disks,
                    nics=with_macs,
                )
                task = self.rt.engine.create_in(
                    conn,
                    id=task_id,
                    type="create",
                    vm_uuid=uuid,
                    vm_name=name,
                    node=target.name,
                    params={
                        "vcpus": vcpus,
                        "memory_mb": memory_mb,
                        "start": start,
                        "node": wanted,
                        "disks": disk_args(disks),
                        "nics": nic_args(with_macs),
                    },
                )
                return vm, task
        raise InsufficientCapacity("the cluster is too busy placing VMs; try again")

    def begin_tx(
        self,
        name: str,
        type_: str,
        task_state: TaskState,
        allowed: frozenset[VmState],
        params: dict[str, Any],
        desired: DesiredPower | None = None,
    ) -> tuple[Vm, Task]:
        """Take the VM for a new task of `type_` (compare-and-swap) and create the task."""
        now = self.rt.clock.now()
        with self.rt.db.write() as conn:
            vm = vms.get(conn, name)
            task_id = new_id()
            vms.begin_task(
                conn, vm, task_state, task_id, now, allowed=allowed, desired_power=desired
            )
            task = self.rt.engine.create_in(
                conn,
                id=task_id,
                type=type_,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                node=vm.node,
                params=params,
            )
            return vms.get_by_uuid(conn, vm.uuid), task
