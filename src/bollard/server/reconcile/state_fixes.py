"""How the state reconciler fixes each class of difference, through the paths real reports
and operations take: a record that follows its host is written as a late report is (with
compare-and-swap guards, so a task that took the VM meanwhile wins), and an action on a host
is an ordinary task (start, stop, delete, ha_restart) or an ordinary command (undefine).

- stale: the record is deleted through the delete operation (its host has nothing to undo);
- orphan: the copy is destroyed on its host (never a copy whose owner does not have the VM);
- power: an HA VM gets its desired state back: a crashed VM is restarted within the
  restart budget; one whose start failed is retried, relocated, then put in the HA error
  state by its restart and relocate limits (ha_restarts.py); past the budget, and for every
  other VM (ignored and error ones too), the record follows the host;
- spec: the record (and the node's allocation) follows the host;
- pending: a VM held by an ended task is released; a task no server drives is resumed;
- lost: the VM is restarted on another node by an ``ha_restart`` task;
- resize: a resize whose old copy is gone is confirmed (the ordinary confirm task); a
  resize record nothing drives ends in error, the source's hold released;
- the storage classes (volume-missing, volume-orphan, volume-stuck, volume-size): by the
  storage fixer (storage_fixes.py);
- the SR-IOV classes (vf-unrecorded, vf-mismatch, vf-leaked; vf-conflict is reported only):
  the record of who holds each VF follows the host (sriov_fixes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Connection

from bollard.domain.drift import SRIOV_CLASSES, STORAGE_CLASSES, Drift, DriftClass, DriftKey
from bollard.domain.errors import BollardError
from bollard.domain.models import Vm
from bollard.domain.operations import DELETE, START, STOP
from bollard.domain.power_states import POWERED_ON, STATE_OF_POWER
from bollard.domain.states import CommandType, DesiredPower, PowerState, VmState
from bollard.domain.storage import VolumeState
from bollard.server.clock import Clock
from bollard.server.ports import (
    CommandPort,
    HaRecovery,
    ResizeRequests,
    SettingsReader,
    TaskWaiter,
    UnitOfWork,
    VmRequests,
)
from bollard.server.reconcile import ha_restarts
from bollard.server.reconcile.ha_restarts import HaLimits, Next
from bollard.server.reconcile.sriov_fixes import Skipped as SriovSkipped
from bollard.server.reconcile.sriov_fixes import SriovFixes
from bollard.store import events, host_vms, migrations_log, nodes, vms, volumes

log = logging.getLogger(__name__)


class Skipped(Exception):
    """The difference is gone or changed since it was detected; nothing was done."""


class StorageFixes(Protocol):
    """Fixes a difference of a storage class (storage_fixes.StorageFixer); returns what it
    did; raises Skipped or BollardError as the fixes here do."""

    async def fix(self, drift: Drift) -> str: ...


@dataclass(frozen=True)
class FixResult:
    drift: Drift
    ok: bool
    action: str
    skipped: bool = False  # nothing was done (the difference was gone or had changed)

    def to_dict(self) -> dict[str, Any]:
        return self.drift.to_dict() | {"ok": self.ok, "action": self.action}


class StateFixer:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        requests: VmRequests,
        commands: CommandPort,
        recovery: HaRecovery,
        launch: Callable[[str], None],
        runner: TaskWaiter,
        storage: StorageFixes | None = None,
        resizes: ResizeRequests | None = None,
        limits: HaLimits | None = None,
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.requests = requests
        self.commands = commands
        self.recovery = recovery
        self.launch = launch
        self.runner = runner
        self.storage = storage
        self.resizes = resizes
        self.limits = limits  # restart and relocate limits (ha_restarts.py)
        self.sriov = SriovFixes(work=work, clock=clock)
        self._failed: set[DriftKey] = set()

    async def fix(self, drift: Drift, *, auto: bool, record: bool = True) -> FixResult | None:
        """Fix one difference; None when an automatic fix already failed on it (it is not
        retried, nor recorded again, until it changes; an operator's fix always runs).
        With `record` False, the caller records the result (one event for many)."""
        if auto and drift.key in self._failed:
            return None
        try:
            action = await self._dispatch(drift)
        except Skipped as exc:
            return FixResult(drift, True, f"nothing to do: {exc}", skipped=True)
        except BollardError as exc:
            self._failed.add(drift.key)
            if record:
                await self.work.run(self._record, drift, False, exc.message)
            return FixResult(drift, False, exc.message)
        self._failed.discard(drift.key)
        if record:
            await self.work.run(self._record, drift, True, action)
        return FixResult(drift, True, action)

    async def _dispatch(self, drift: Drift) -> str:
        if drift.kind in STORAGE_CLASSES:
            if self.storage is None:
                raise BollardError(f"this server cannot fix {drift.kind} differences")
            return await self.storage.fix(drift)
        if drift.kind in SRIOV_CLASSES:
            try:
                return await self.work.run(self.sriov.fix, drift)
            except SriovSkipped as exc:
                raise Skipped(str(exc)) from None
        if drift.kind is DriftClass.STALE:
            return await self._stale(drift)
        if drift.kind is DriftClass.ORPHAN:
            return await self._orphan(drift)
        if drift.kind is DriftClass.POWER:
            return await self._power(drift)
        if drift.kind is DriftClass.SPEC:
            return await self.work.run(self._spec, drift)
        if drift.kind is DriftClass.PENDING:
            return await self._pending(drift)
        if drift.kind is DriftClass.RESIZE:
            return await self._resize(drift)
        return await self._lost(drift)

    # -- the record follows the host -----------------------------------------------------

    def _vm(self, conn: Connection, drift: Drift) -> Vm:
        vm = vms.find_by_uuid(conn, drift.vm_uuid)
        if vm is None:
            raise Skipped("the VM is no longer in the database")
        if vm.task_id is not None:
            raise Skipped(f"task {vm.task_id} holds the VM now")
        return vm

    def _observed(self, conn: Connection, vm: Vm) -> PowerState:
        entry = next((e for e in host_vms.for_vm(conn, vm.uuid) if e.node == vm.node), None)
        if entry is None:
            raise Skipped(f"{vm.node} no longer reports the VM")
        return entry.power

    def _follow(
        self, conn: Connection, vm: Vm, power: PowerState, desired: DesiredPower | None
    ) -> str:
        state = STATE_OF_POWER[power]
        if vm.vm_state is VmState.RESIZED:
            state = VmState.RESIZED  # it waits for confirm or revert, whether it runs or not
        values: dict[str, Any] = {"vm_state": state.value}
        if desired is not None:
            values["desired_power"] = desired.value
        if not vms.follow_host(conn, vm, self.clock.now(), **values):
            raise Skipped("the VM changed meanwhile")
        want = desired or vm.desired_power
        return f"record now {state}, desired {want} (was {vm.vm_state}, desired {vm.desired_power})"

    async def _power(self, drift: Drift) -> str:
        text, relocation = await self.work.run(self._power_tx, drift)
        if relocation is not None:
            self.launch(relocation)
            return text
        return text + await self._power_task(drift)

    def _power_tx(self, drift: Drift) -> tuple[str, str | None]:
        """What was written, and the relocation task to launch (if any)."""
        with self.work.write() as conn:
            vm = self._vm(conn, drift)
            power = self._observed(conn, vm)
            on = power in POWERED_ON
            if vm.ha_policy != "restart" or not vm.ha_managed:  # (ignored, error: as non-HA)
                desired = DesiredPower.RUNNING if on else DesiredPower.STOPPED
                return self._follow(conn, vm, power, desired), None
            if on or vm.desired_power is DesiredPower.STOPPED:
                return self._follow(conn, vm, power, None), None
            failed = None if self.limits is None else ha_restarts.failed_start(conn, vm)
            if self.limits is not None and failed is not None:
                # Its start failed (not a crash): the restart and relocate limits govern.
                step = self.limits.decide(vm, failed)
                off = DesiredPower.STOPPED if step is Next.ERROR else None
                text = self._follow(conn, vm, power, off)
                fresh = vms.get_by_uuid(conn, vm.uuid)
                decided = self.limits.act(conn, fresh, failed, step)
                if decided.next is Next.ERROR and step is not Next.ERROR:  # nowhere to go
                    self._follow(conn, fresh, power, DesiredPower.STOPPED)
                return f"{text}; {decided.text}", decided.task_id
            return self._restart_budget(conn, vm, power), None

    def _restart_budget(self, conn: Connection, vm: Vm, power: PowerState) -> str:
        """A crashed HA VM (it ran, then stopped): restarted within the budget."""
        # An HA VM meant to run is off: restart it, within the budget.
        budget = int(self.settings.get("reconcile.restart_budget"))
        window = float(self.settings.get("reconcile.restart_window"))
        now = self.clock.now()
        used = events.count_since(
            conn, "reconcile.restart", vm.uuid, now - timedelta(seconds=window)
        )
        if used >= budget:
            text = self._follow(conn, vm, power, DesiredPower.STOPPED)
            fault = (
                f"found {power} {used + 1} times within {window:g} s; restart budget "
                f"({budget}) exhausted: left off"
            )
            vms.set_meta(conn, vm.uuid, now, fault=fault)
            events.add(conn, "reconcile.restart_budget_exhausted", f"{vm.name}: {fault}",
                       now, vm_uuid=vm.uuid, vm_name=vm.name, node=vm.node)  # fmt: skip
            return text + "; " + fault
        text = self._follow(conn, vm, power, None)
        events.add(conn, "reconcile.restart",
                   f"{vm.name} found {power}: restart {used + 1} of {budget} "
                   f"within {window:g} s", now, vm_uuid=vm.uuid, vm_name=vm.name,
                   node=vm.node, data={"budget": budget, "used": used + 1})  # fmt: skip
        return text

    async def _power_task(self, drift: Drift) -> str:
        """For an HA VM whose record now says it is off (or on) while meant to be on (off):
        the ordinary start (stop) operation."""

        def current() -> Vm | None:
            with self.work.read() as conn:
                return vms.find_by_uuid(conn, drift.vm_uuid)

        vm = await self.work.run(current)
        if vm is None or vm.task_id is not None or vm.ha_policy != "restart" or not vm.ha_managed:
            return ""
        if vm.desired_power is DesiredPower.RUNNING and vm.vm_state is VmState.STOPPED:
            _, task = await self.requests.power(vm.name, START)
            return f"; started again (task {task.id})"
        if vm.desired_power is DesiredPower.STOPPED and vm.vm_state is VmState.ACTIVE:
            _, task = await self.requests.power(vm.name, STOP)
            return f"; stopped again (task {task.id})"
        return ""

    def _spec(self, drift: Drift) -> str:
        vcpus, memory = int(drift.data["vcpus"]), int(drift.data["memory_mb"])
        with self.work.write() as conn:
            vm = self._vm(conn, drift)
            if not vms.follow_host(conn, vm, self.clock.now(), vcpus=vcpus, memory_mb=memory):
                raise Skipped("the VM changed meanwhile")
            if vm.node is not None:
                nodes.adjust_allocation(conn, vm.node, vcpus - vm.vcpus, memory - vm.memory_mb)
        return f"record now {vcpus} vCPU, {memory} MiB (was {vm.vcpus} vCPU, {vm.memory_mb} MiB)"

    # -- actions on hosts and tasks -------------------------------------------------------

    async def _stale(self, drift: Drift) -> str:
        _, task = await self.requests.power(drift.vm_name, DELETE)
        return f"record deleted through the delete operation (task {task.id})"

    async def _orphan(self, drift: Drift) -> str:
        node = drift.node or ""
        epoch = int(drift.data.get("epoch", 0))
        owner = drift.data.get("owner")
        if owner is not None:
            if not await self.work.run(self._owner_has, drift.vm_uuid, str(owner)):
                raise BollardError(
                    f"the owner {owner} does not report {drift.vm_name}: this copy may be the "
                    "only one, so it is left alone (move the record or delete the VM)"
                )
            epoch = max(epoch, int(drift.data.get("owner_epoch", 0)))
        await self.commands.call(
            node, CommandType.UNDEFINE, {"force": True}, vm_uuid=drift.vm_uuid, epoch=epoch
        )
        return f"destroyed on {node}"

    def _owner_has(self, uuid: str, owner: str) -> bool:
        with self.work.read() as conn:
            known = nodes.get(conn, owner).inventory_known
            return known and any(e.node == owner for e in host_vms.for_vm(conn, uuid))

    async def _pending(self, drift: Drift) -> str:
        task_id = str(drift.data["task_id"])
        if drift.data.get("undriven"):
            if self.runner.is_running(task_id):
                raise Skipped(f"task {task_id} is running again")
            self.launch(task_id)
            return f"task {task_id} resumed"
        return str(await self.work.run(self._release, drift, task_id))

    def _release(self, drift: Drift, task_id: str) -> str:
        with self.work.write() as conn:
            vm = vms.find_by_uuid(conn, drift.vm_uuid)
            if vm is None or vm.task_id != task_id:
                raise Skipped("the VM is no longer held by that task")
            entry = next((e for e in host_vms.for_vm(conn, vm.uuid) if e.node == vm.node), None)
            state = STATE_OF_POWER.get(entry.power) if entry is not None else None
            if state is None and vm.vm_state is VmState.BUILDING:
                state = VmState.ERROR
            vms.end_task(conn, vm.uuid, task_id, self.clock.now(), vm_state=state,
                         fault=vm.fault)  # fmt: skip
        return f"released from task {task_id}; vm_state {state or vm.vm_state}"

    async def _lost(self, drift: Drift) -> str:
        def tx() -> str:
            with self.work.write() as conn:
                vm = self._vm(conn, drift)
                start = vm.desired_power is DesiredPower.RUNNING
                return self.recovery.restart_in(conn, vm, start=start)

        task_id = await self.work.run(tx)
        self.launch(task_id)
        return f"restarting on another node (task {task_id})"

    async def _resize(self, drift: Drift) -> str:
        if drift.data.get("source_gone"):
            if self.resizes is None:
                raise BollardError("this server cannot confirm resizes")
            _, task = await self.resizes.confirm(drift.vm_name)
            return f"confirmed (task {task.id}): its old copy is gone, a revert is impossible"
        return str(await self.work.run(self._end_resize, drift))

    def _end_resize(self, drift: Drift) -> str:
        migration_id = str(drift.data["migration_id"])
        now = self.clock.now()
        with self.work.write() as conn:
            m = migrations_log.find(conn, migration_id)
            if m is None or m.status.ended:
                raise Skipped("the resize has ended meanwhile")
            vm = vms.find_by_uuid(conn, m.vm_uuid)
            if vm is not None and (vm.task_id is not None or vm.vm_state is VmState.RESIZED):
                raise Skipped("a task or the VM's resized state explains it now")
            if m.source_hold is not None:
                nodes.release(conn, m.source_hold.node, m.source_hold.vcpus,
                              m.source_hold.memory_mb)  # fmt: skip
            migrations_log.set_fields(conn, m.id, now, source_hold=None)
            error = f"ended by the state reconciler: {drift.host}"
            migrations_log.force_end(conn, m.id, now, error)
            # The originals it kept are nobody's now: in error, for an operator to delete.
            kept = [v for v in volumes.of_migration(conn, m.id) if v.vm_uuid is None]
            for v in kept:
                if v.state is VolumeState.RESERVED:
                    volumes.transition(conn, v.id, now, held_by=None, state=VolumeState.ERROR,
                                       fault=f"kept by resize {m.id}, which {error}")  # fmt: skip
        return f"resize {migration_id} ended in error; the source's hold released"

    def _record(self, drift: Drift, ok: bool, action: str) -> None:
        kind = "reconcile.fixed" if ok else "reconcile.fix_failed"
        what = "fixed" if ok else "could not fix"
        data: dict[str, Any] = {
            "class": drift.kind.value,
            "old": drift.record,
            "new": drift.host,
            "action": action,
        }
        if drift.kind in STORAGE_CLASSES:
            data |= {"volume": drift.volume, "pool": drift.pool, "file": drift.file}
        with self.work.write() as conn:
            events.add(
                conn,
                kind,
                f"{what} {drift.kind} {drift.label}: {drift.record} -> {drift.host}: {action}",
                self.clock.now(),
                vm_uuid=drift.vm_uuid or None,
                vm_name=drift.vm_name or None,
                node=drift.node,
                data=data,
            )
        (log.info if ok else log.warning)("reconcile %s: %s", kind, action)
