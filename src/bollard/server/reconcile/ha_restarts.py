"""Restart and relocate limits of HA VMs (issue 21): what the state reconciler does with an
HA VM (ha_state started) that its host reports off after its start *failed*.

Two guards, for two different troubles:

- The restart budget (state_fixes.py, unchanged) is for a VM that *crashed*: it ran, then
  stopped by itself. It is restarted on its node, at most ``reconcile.restart_budget`` times
  per ``reconcile.restart_window``; past that the record follows the host (desired stopped,
  a fault, ``reconcile.restart_budget_exhausted``). Every HA VM, as before.
- The limits here are for a VM whose *start failed*: its last task, a start, an HA restart
  or a relocation, failed and left it off. It is tried again on its node while
  ``ha_restarts < max_restart`` (the VM's own, else ``ha.max_restart``), then relocated (an
  ``ha_relocate`` task: moved while stopped to the node the scheduler chooses among those it
  has not failed on, and started there) while ``ha_relocates < max_relocate``, then put in
  the HA error state (``ha_hold=error``, event ``vm.ha_error`` naming the failures, a fault,
  desired stopped): HA leaves it alone until an operator sets its ha_state again.

The counts start anew once the VM has run steadily: ``reset_steady`` (called by the failback
loop, failback.py) clears them for a VM its host has reported running, with no task, for a
heartbeat interval. A crash after that is a crash again (the budget's), not a failed start.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection, select

from bollard.domain.errors import BollardError
from bollard.domain.ha import HaHold
from bollard.domain.models import Task, Vm
from bollard.domain.states import PowerState, TaskStatus, VmState
from bollard.server.clock import Clock
from bollard.server.ports import SettingsReader
from bollard.store import events, ha_counts, host_vms, tasks, vms
from bollard.store.tables import vms as vms_table

# The tasks whose failure is a failed start: the VM was meant to run on its node after them.
START_TASKS = frozenset({"start", "ha_restart", "ha_relocate"})
_FAILED = frozenset({TaskStatus.FAILED, TaskStatus.ROLLED_BACK, TaskStatus.NEEDS_ATTENTION})
RELOCATE = "ha_relocate"


class Next(StrEnum):
    RETRY = "retry"  # start it again on its node
    RELOCATE = "relocate"  # move it (stopped) to another node and start it there
    ERROR = "error"  # its limits ran out: HA leaves it alone


@dataclass(frozen=True)
class Limits:
    max_restart: int
    max_relocate: int


def limits_of(vm: Vm, settings: SettingsReader) -> Limits:
    """The VM's own limits, else the settings'."""
    restart = vm.max_restart
    relocate = vm.max_relocate
    return Limits(
        max_restart=int(settings.get("ha.max_restart")) if restart is None else restart,
        max_relocate=int(settings.get("ha.max_relocate")) if relocate is None else relocate,
    )


def next_step(vm: Vm, limits: Limits) -> Next:
    """What follows a failed start of `vm`, by its counts (pure)."""
    if vm.ha_restarts < limits.max_restart:
        return Next.RETRY
    if vm.ha_relocates < limits.max_relocate:
        return Next.RELOCATE
    return Next.ERROR


def failed_start(conn: Connection, vm: Vm) -> Task | None:
    """The VM's last task if it was a start (a start, an HA restart, a relocation) that
    failed; None otherwise (e.g. it started and then crashed: the restart budget's case)."""
    found = tasks.of_vm(conn, vm.uuid, limit=1)
    if not found:
        return None
    last = found[0]
    return last if last.type in START_TASKS and last.state in _FAILED else None


def failed_nodes(conn: Connection, vm: Vm) -> list[str]:
    """The nodes its start failed on since it last ran steadily: its node, and the node each
    of its counted relocations left (its last `ha_relocates` relocation tasks)."""
    left = [
        str(t.params.get("source"))
        for t in tasks.of_vm(conn, vm.uuid, limit=200)
        if t.type == RELOCATE and t.params.get("source")
    ][: vm.ha_relocates]
    ordered = [*reversed(left), vm.node or ""]
    return [n for i, n in enumerate(ordered) if n and n not in ordered[:i]]


class Relocations(Protocol):
    """Creates an `ha_relocate` task in the caller's transaction (operations/relocate_ops.py)."""

    def relocate_in(self, conn: Connection, vm: Vm, *, exclude: Collection[str]) -> tuple[str, str]:
        """(task id, target node); raises a BollardError saying why when no node other than
        `exclude` can take the VM (nothing is written then)."""
        ...


@dataclass(frozen=True)
class Decided:
    next: Next
    text: str  # what was done, for the reconcile.fixed event
    task_id: str | None = None  # the relocation to launch


class HaLimits:
    """The limits as the state reconciler applies them, in its transaction."""

    def __init__(self, *, clock: Clock, settings: SettingsReader, relocations: Relocations) -> None:
        self.clock = clock
        self.settings = settings
        self.relocations = relocations

    def decide(self, vm: Vm, failed: Task) -> Next:
        """What follows the failed start `failed` of `vm`, by its counts and limits."""
        limits = limits_of(vm, self.settings)
        step = next_step(vm, limits)
        if (
            step is Next.RETRY
            and failed.type == RELOCATE
            and failed.params.get("source") == vm.node
        ):
            # A relocation that did not get the VM away: its node has had its retries.
            step = Next.RELOCATE if vm.ha_relocates < limits.max_relocate else Next.ERROR
        return step

    def act(self, conn: Connection, vm: Vm, failed: Task, step: Next) -> Decided:
        """Count and record `step` (decided for `vm`, read after its record followed its
        host): a retry is left to the caller (the ordinary start); a relocation's task is
        created here (the caller launches it once committed), or, if no node can take the
        VM, it goes to the error state instead (the caller then makes its desired power
        stopped)."""
        limits = limits_of(vm, self.settings)
        now = self.clock.now()
        error = (failed.error or "no error given").splitlines()[0][:300]
        where = vm.node or "no node"
        if step is Next.RETRY:
            ha_counts.count_restart(conn, vm.uuid, now)
            text = (
                f"its start failed on {where} ({error}): retry {vm.ha_restarts + 1} of "
                f"{limits.max_restart} there"
            )
            _event(conn, "vm.ha_restart", vm, f"{vm.name}: {text}", now,
                   {"retry": vm.ha_restarts + 1, "max_restart": limits.max_restart,
                    "failed_task": failed.id, "error": error})  # fmt: skip
            return Decided(step, text)
        failed_on = failed_nodes(conn, vm)
        if step is Next.RELOCATE:
            try:
                task_id, target = self.relocations.relocate_in(conn, vm, exclude=failed_on)
            except BollardError as exc:
                return self._error(conn, vm, limits, failed_on, error, now,
                                   nowhere=exc.message)  # fmt: skip
            ha_counts.count_relocate(conn, vm.uuid, now)
            text = (
                f"its start failed on {where} {vm.ha_restarts + 1} time(s) ({error}): "
                f"relocating it to {target}, relocation {vm.ha_relocates + 1} of "
                f"{limits.max_relocate} (task {task_id})"
            )
            _event(conn, "vm.ha_relocate", vm, f"{vm.name}: {text}", now,
                   {"target": target, "relocation": vm.ha_relocates + 1,
                    "max_relocate": limits.max_relocate, "failed_on": failed_on,
                    "error": error}, task_id=task_id)  # fmt: skip
            return Decided(step, text, task_id)
        return self._error(conn, vm, limits, failed_on, error, now)

    def _error(
        self,
        conn: Connection,
        vm: Vm,
        limits: Limits,
        failed_on: list[str],
        error: str,
        now: datetime,
        *,
        nowhere: str | None = None,
    ) -> Decided:
        ha_counts.set_hold(conn, vm.uuid, HaHold.ERROR, now)
        why = (
            f"no other node can take it ({nowhere})"
            if nowhere is not None
            else f"restart and relocate limits ({limits.max_restart}, {limits.max_relocate}) "
            "used up"
        )
        fault = (
            f"HA error: its start failed on {', '.join(failed_on)} (last: {error}); {why}; "
            "left off until its ha_state is set again"
        )
        vms.set_meta(conn, vm.uuid, now, fault=fault[:1000])
        _event(conn, "vm.ha_error", vm, f"{vm.name}: {fault}", now,
               {"failed_on": failed_on, "error": error, "max_restart": limits.max_restart,
                "max_relocate": limits.max_relocate, "restarts": vm.ha_restarts,
                "relocates": vm.ha_relocates, "nowhere": nowhere})  # fmt: skip
        return Decided(Next.ERROR, fault)


def _event(
    conn: Connection,
    kind: str,
    vm: Vm,
    message: str,
    now: datetime,
    data: dict[str, Any],
    *,
    task_id: str | None = None,
) -> None:
    events.add(conn, kind, message, now, vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node,
               task_id=task_id, data=data)  # fmt: skip


def counted(conn: Connection) -> list[str]:
    """The uuids of the active VMs with no task whose counts are not zero."""
    query = select(vms_table.c.uuid).where(
        (vms_table.c.ha_restarts > 0) | (vms_table.c.ha_relocates > 0),
        vms_table.c.task_id.is_(None),
        vms_table.c.vm_state == VmState.ACTIVE.value,
    )
    return list(conn.execute(query).scalars())


def reset_steady(conn: Connection, now: datetime, steady_after: float) -> list[str]:
    """Clear the counts of every VM that has run steadily: no task, active, and its host
    has reported it running, unchanged, for `steady_after` seconds. Their names."""
    cleared = []
    since = now - timedelta(seconds=steady_after)
    for uuid in counted(conn):
        vm = vms.find_by_uuid(conn, uuid)
        if vm is None or vm.node is None:
            continue
        entry = next((e for e in host_vms.for_vm(conn, uuid) if e.node == vm.node), None)
        if entry is None or entry.power is not PowerState.RUNNING or entry.changed_at > since:
            continue
        ha_counts.reset_counts(conn, uuid, now)
        events.add(conn, "vm.ha_steady",
                   f"{vm.name} has run steadily on {vm.node}: its restart and relocate counts "
                   f"({vm.ha_restarts}, {vm.ha_relocates}) start anew", now, vm_uuid=uuid,
                   vm_name=vm.name, node=vm.node)  # fmt: skip
        cleared.append(vm.name)
    return cleared
