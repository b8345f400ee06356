"""Relocating an HA VM whose start failed on its node (a `reconcile.ha_restarts.Relocations`):
the scheduler chooses a node among those its start has not failed on, and an `ha_relocate`
task (tasks/flows/ha_relocate.py) moves it there, stopped, and starts it. A VM with SR-IOV
NICs goes only to a node with free VFs for them: the task's claim step (the migration's)
claims them, its commit frees those of the node it leaves (issue 22)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from sqlalchemy import Connection

from bollard.domain.errors import InvalidState
from bollard.domain.ids import new_id
from bollard.domain.migrations import MigrationStatus, MigrationType
from bollard.domain.models import Vm
from bollard.domain.scheduler import decision_error
from bollard.domain.states import TaskState, VmState
from bollard.server import scheduling, vm_disks
from bollard.server.clock import Clock
from bollard.server.ports import TaskLauncher
from bollard.server.tasks.flows.ha_relocate import TYPE, HaRelocateParams
from bollard.store import migrations_log, tasks, vms


class RelocateOperations:
    def __init__(self, *, launcher: TaskLauncher, clock: Clock) -> None:
        self._launcher = launcher
        self._clock = clock

    def relocate_in(self, conn: Connection, vm: Vm, *, exclude: Collection[str]) -> tuple[str, str]:
        """Take the VM (stopped, no task) for an `ha_relocate` task to the scheduler's choice
        outside `exclude`, in the caller's transaction; (task id, target). A BollardError
        saying why, and nothing written, when no node can take it."""
        if vm.node is None:
            raise InvalidState(f"VM {vm.name} is on no node: there is nothing to relocate")
        request = scheduling.request_for_vm(conn, vm, leaving=vm.node, vfs=True)
        request = replace(request, exclude=frozenset(request.exclude) | frozenset(exclude))
        decision = scheduling.place(conn, request)
        if decision.chosen is None:
            raise decision_error(decision)
        target = decision.chosen
        vm_disks.check_idle(conn, vm.uuid, vm.name)
        params = HaRelocateParams(
            mode="move", source=vm.node, target=target, method="shutdown", was_running=False,
            epoch=vm.epoch, vcpus=vm.vcpus, memory_mb=vm.memory_mb,
            shared_disks=vm_disks.lock_args(conn, vm.uuid, target, vm.epoch) is not None,
            failed_on=tuple(exclude),
        )  # fmt: skip
        now = self._clock.now()
        task_id = new_id()
        vms.begin_task(
            conn, vm, TaskState.MIGRATING, task_id, now, allowed=frozenset({VmState.STOPPED})
        )
        self._launcher.create_in(
            conn, id=task_id, type=TYPE, vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node,
            params=params,
        )  # fmt: skip
        tasks.set_result(conn, task_id, {"placement": decision.to_record()})
        migrations_log.create(
            conn, id=new_id(), vm_uuid=vm.uuid, vm_name=vm.name, type=MigrationType.MIGRATION,
            source=vm.node, dest=target, status=MigrationStatus.RUNNING, task_id=task_id,
            now=now,
        )  # fmt: skip
        return task_id, target
