"""Requests to migrate, move or unmigrate a VM: choose the target, take the VM, create the task.

`migrate` is a temporary move: the VM remembers the node it came from (its first one, over
several migrations) and `unmigrate` sends it back there. `move` is for good.

SR-IOV NICs (issue 22): the target must have a free VF for each (the scheduler's request
counts them; the migration's claim step claims them). A VM with a hostdev NIC (the VF is the
guest's PCI device) cannot migrate live: a request for a live migration of it (method live,
or force_live; or its own method live while it runs) is refused with the reason, and method
default is a shutdown migration from the start (no live attempt that must fail first).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput, InvalidState
from bollard.domain.ids import new_id
from bollard.domain.migrations import MigrationStatus, MigrationType
from bollard.domain.models import Task, Vm
from bollard.domain.scheduler import Decision, decision_error
from bollard.domain.states import TaskState, VmState
from bollard.server import scheduling, vm_disks
from bollard.server.clock import Clock
from bollard.server.ports import TaskLauncher, UnitOfWork
from bollard.server.tasks.params import MigrateParams, MigrationMethod, MigrationMode
from bollard.store import migrations_log, tasks, vms

METHODS = ("default", "live", "shutdown")
MODES = ("migrate", "move", "unmigrate")
_MIGRATABLE = frozenset({VmState.ACTIVE, VmState.STOPPED})


class MigrateOperations:
    """Migrations as an operator or a drain asks for them (with `VmOperations.power`, a
    `ports.VmRequests`)."""

    def __init__(self, *, work: UnitOfWork, clock: Clock, launcher: TaskLauncher) -> None:
        self._work = work
        self._clock = clock
        self._launcher = launcher

    async def request(
        self,
        name: str,
        *,
        mode: str,
        to: str | None = None,
        method: str | None = None,
        force_live: bool = False,
    ) -> tuple[Vm, Task]:
        """`to`: the target node (default: the scheduler's choice; unmigrate: the previous
        node, never another); `method`: default, the VM's own."""
        if mode == "unmigrate" and to is not None:
            raise InvalidInput("to: unmigrate always returns the VM to its previous node")
        vm, task = await self._work.run(self._tx, name, mode, to, method, force_live)
        self._launcher.launch(task.id)
        return vm, task

    async def migrate(self, name: str, *, mode: str) -> tuple[Vm, Task]:
        """`ports.VmRequests.migrate`: to the scheduler's choice, by the VM's own method."""
        return await self.request(name, mode=mode)

    def _tx(
        self,
        name: str,
        mode: str,
        to: str | None,
        method: str | None,
        force_live: bool,
    ) -> tuple[Vm, Task]:
        if mode not in MODES:
            raise InvalidInput(f"mode: one of {', '.join(MODES)}")
        if method is not None and method not in METHODS:
            raise InvalidInput(f"method: one of {', '.join(METHODS)}")
        with self._work.write() as conn:
            vm = vms.get(conn, name)
            if vm.vm_state is VmState.RESIZED and vm.task_id is None:
                raise Conflict(
                    f"VM {name} waits in VERIFY_RESIZE: confirm or revert its resize first"
                )
            if mode == "unmigrate":
                if vm.previous_node is None:
                    raise InvalidState(f"VM {name} has not been migrated: it has no previous node")
                to = vm.previous_node
            if vm.node is None:
                raise InvalidState(f"VM {name} is on no node: there is nothing to migrate")
            how = hostdev_method(vm, method, force_live)
            decision = self._choose(conn, vm, to)
            if decision.chosen is None:
                raise decision_error(decision)
            params = MigrateParams(
                mode=cast(MigrationMode, mode),
                source=vm.node,
                target=decision.chosen,
                method=cast(MigrationMethod, how),
                force_live=force_live,
                was_running=vm.vm_state is VmState.ACTIVE,
                epoch=vm.epoch,
                vcpus=vm.vcpus,
                memory_mb=vm.memory_mb,
                shared_disks=vm_disks.lock_args(conn, vm.uuid, decision.chosen, vm.epoch)
                is not None,
            )
            task_id = new_id()
            vm_disks.check_idle(conn, vm.uuid, vm.name)
            vms.begin_task(
                conn, vm, TaskState.MIGRATING, task_id, self._clock.now(), allowed=_MIGRATABLE
            )
            self._launcher.create_in(
                conn,
                id=task_id,
                type="migrate",
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                node=vm.node,
                params=params,
            )
            tasks.set_result(conn, task_id, {"placement": decision.to_record()})
            live = params.was_running and params.method != "shutdown"
            migrations_log.create(
                conn, id=new_id(), vm_uuid=vm.uuid, vm_name=vm.name,
                type=MigrationType.LIVE if live else MigrationType.MIGRATION,
                source=vm.node, dest=decision.chosen, status=MigrationStatus.RUNNING,
                task_id=task_id, now=self._clock.now(),
            )  # fmt: skip
            return vms.get_by_uuid(conn, vm.uuid), tasks.get(conn, task_id)

    async def candidates(self, name: str) -> Decision:
        """Where the scheduler would send the VM now, without moving it: every node it
        accepts, best first, and every node it rejects, with why (the migrate target picker)."""

        def tx() -> Decision:
            with self._work.read() as conn:
                vm = vms.get(conn, name)
                if vm.node is None:
                    raise InvalidState(f"VM {name} is on no node: there is nothing to migrate")
                return self._choose(conn, vm, None, lock=False)

        return await self._work.run(tx)

    def _choose(self, conn: Connection, vm: Vm, to: str | None, *, lock: bool = True) -> Decision:
        # The scheduler reads its settings in this transaction. With `lock`, the VM's
        # affinity rules stay locked until the migration record (its destination) is written.
        # vfs: the migration's claim step claims the target's VFs (flows/migrate.py).
        request = scheduling.request_for_vm(conn, vm, leaving=vm.node, lock=lock, vfs=True)
        return scheduling.place(conn, request, wanted=to)


def hostdev_method(vm: Vm, method: str | None, force_live: bool) -> str:
    """The method the VM migrates by (`method`, else its own). A VM with a hostdev SR-IOV
    NIC migrates by shutdown only: Conflict when live is asked for (method live or
    force_live, or its own method live while it runs: a stopped VM only moves its
    definition); method default is shutdown for it."""
    how = method or vm.migration_method
    if not any(n.hostdev for n in vm.nics):
        return how
    running = vm.vm_state is VmState.ACTIVE
    if method == "live" or force_live or (how == "live" and running):
        raise Conflict(
            f"VM {vm.name} has a hostdev SR-IOV NIC (PCI passthrough): it migrates by "
            "shutdown only (--method shutdown)"
        )
    return "shutdown" if how == "default" else how
