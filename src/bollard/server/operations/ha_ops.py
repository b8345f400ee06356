"""HA restarts: an `ha_restart` task for each HA VM of a fenced node (a `ports.HaRecovery`).

Every method works in the caller's transaction and returns the ids of the tasks it created;
the caller launches them once the transaction has committed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from bollard.domain.errors import BollardError, InvalidState
from bollard.domain.ids import new_id
from bollard.domain.migrations import MigrationStatus, MigrationType
from bollard.domain.models import Vm
from bollard.domain.states import DesiredPower, NodeHealth, PowerState, TaskState, VmState
from bollard.server.clock import Clock
from bollard.server.operations.resize_ops import begin_end
from bollard.server.ports import TaskLauncher
from bollard.server.tasks.params import HaRestartParams
from bollard.store import events, migrations_log, nodes, vms


def _by_priority(vm: Vm) -> tuple[int, str]:
    return (-vm.ha_priority, vm.name)


def _recovered(vm: Vm) -> bool:
    """Whether HA restarts the VM elsewhere after its node's fence: HA policy restart, and
    HA not held back (an `ignored` or `error` VM is recorded as a non-HA VM is)."""
    return vm.ha_policy == "restart" and vm.ha_managed


def meant_to_run(vm: Vm) -> bool:
    """Whether an HA restart starts the VM on its new node: it was meant to run (desired
    power running), or waits to be started (autostart: parked by a flush, or deferred)."""
    return vm.desired_power is DesiredPower.RUNNING or vm.autostart


class HaOperations:
    def __init__(self, *, launcher: TaskLauncher, clock: Clock) -> None:
        self._launcher = launcher
        self._clock = clock

    def restart_in(self, conn: Connection, vm: Vm, *, start: bool = True) -> str:
        """Take the VM for an `ha_restart` task off its fenced node; returns the task's id.
        With `start` false the VM is only defined on its new node (it was meant to be off)."""
        return self._restart(conn, vm, self._clock.now(), start=start)

    def recover_node_in(self, conn: Connection, node: str) -> list[str]:
        """The VMs of a fenced node: non-HA VMs (and HA VMs held back: ignored, error) are
        recorded stopped, each HA VM gets its task, highest priority first. An HA VM is
        started on its new node only if it was meant to run (desired power running, or
        autostart); one meant to stay off is only defined there, as the state reconciler's
        `lost` fix does."""
        now = self._clock.now()
        on_node = vms.on_node(conn, node)
        ha = sorted((v for v in on_node if _recovered(v) and v.task_id is None), key=_by_priority)
        for vm in on_node:
            if not _recovered(vm) and vm.task_id is None and vm.vm_state is VmState.ACTIVE:
                why = "none" if vm.ha_managed else vm.ha_state.value
                vms.set_vm_state(conn, vm.uuid, VmState.STOPPED, now)
                vms.observe_power_now(conn, vm.uuid, PowerState.STOPPED, now)
                events.add(conn, "vm.stopped", f"{vm.name} is off with its fenced node (HA: {why})",
                           now, vm_uuid=vm.uuid, vm_name=vm.name, node=node)  # fmt: skip
        started = [self._restart(conn, vm, now, start=meant_to_run(vm)) for vm in ha]
        if ha:
            events.add(conn, "node.recovery",
                       f"restarting {len(ha)} HA VM(s) of {node} elsewhere: "
                       + ", ".join(v.name if meant_to_run(v) else f"{v.name} (stays off)"
                                   for v in ha), now, node=node)  # fmt: skip
        return started

    def _revert_instead(self, conn: Connection, vm: Vm, now: datetime) -> str | None:
        """A VM waiting in VERIFY_RESIZE on the fenced node goes back to its resize's source
        if that node is up: the source keeps its old copy and its disks whole, where a restart
        elsewhere would make its local disks anew, empty. The revert's task id, or None."""
        if vm.vm_state is not VmState.RESIZED:
            return None
        m = migrations_log.open_resize(conn, vm.uuid)
        if m is None or m.source is None or m.source == vm.node:
            return None
        source = nodes.find_many(conn, {m.source})
        if not source or source[0].health is not NodeHealth.UP or not source[0].connected:
            return None
        try:
            task_id = begin_end(conn, vm, "resize_revert", self._launcher, now)
        except BollardError:
            return None  # its originals are not all kept: restarted as any HA VM
        events.add(conn, "vm.ha_revert",
                   f"{vm.name} waited in VERIFY_RESIZE on fenced {vm.node}: reverted to "
                   f"{m.source}, which keeps its old copy", now, vm_uuid=vm.uuid,
                   vm_name=vm.name, node=m.source, task_id=task_id)  # fmt: skip
        return task_id

    def restart_deferred_in(self, conn: Connection) -> list[str]:
        """HA VMs left waiting for capacity (autostart, on a fenced node, no task): try again
        now that a node has come up."""
        now = self._clock.now()
        fenced = nodes.names_with_health(conn, NodeHealth.FENCED)
        waiting = sorted(
            (
                v
                for node in fenced  # (the VMs of fenced nodes only: this runs at every connect)
                for v in vms.on_node(conn, node)
                if v.autostart and v.task_id is None and _recovered(v)
            ),
            key=_by_priority,
        )
        started = [self._restart(conn, vm, now) for vm in waiting]
        if waiting:
            events.add(conn, "vm.ha_retry", "capacity returned: restarting "
                       + ", ".join(v.name for v in waiting), now)  # fmt: skip
        return started

    def _restart(self, conn: Connection, vm: Vm, now: datetime, *, start: bool = True) -> str:
        revert = self._revert_instead(conn, vm, now)
        if revert is not None:
            return revert
        if vm.node is None:
            raise InvalidState(f"VM {vm.name} is on no node: there is nothing to restart it from")
        params = HaRestartParams(
            source=vm.node, epoch=vm.epoch, priority=vm.ha_priority, start=start,
            found_desired=vm.desired_power,
        )  # fmt: skip
        task_id = new_id()
        vms.begin_task(
            conn, vm, TaskState.SCHEDULING, task_id, now,
            allowed=frozenset(VmState), desired_power=DesiredPower.RUNNING if start else None,
        )  # fmt: skip
        self._launcher.create_in(
            conn, id=task_id, type="ha_restart", vm_uuid=vm.uuid, vm_name=vm.name,
            node=vm.node, params=params,
        )  # fmt: skip
        migrations_log.create(
            conn, id=new_id(), vm_uuid=vm.uuid, vm_name=vm.name, type=MigrationType.EVACUATION,
            source=vm.node, dest=None, status=MigrationStatus.RUNNING, task_id=task_id, now=now,
        )  # fmt: skip
        return task_id
