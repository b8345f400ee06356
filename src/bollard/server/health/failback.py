"""Failback (issue 21): an HA VM goes back to the better node of its group when that node is
available again.

A loop on the server that holds the health monitor's lease (SQLite), or on the leader (a duty,
PostgreSQL). Every ``ha.failback_interval``
seconds (0: never) it looks at every HA VM that runs (ha_state started, active), has no task
and is in a group without ``nofailback``: if a node of the group with a higher priority than
the VM's current node passes every filter and rule of the scheduler
(``scheduling.failback_target``),
the VM is moved there by the ordinary migration (live, by the VM's own method; mode ``move``:
it is home, it keeps no previous node), with an event ``vm.failback`` (actor system). Ignored,
error, disabled and stopped VMs are never moved; a VM with a task is left to it (and so has one
failback at a time); nor is a VM sent back to a node it was relocated away from, because its
start failed there, within ``reconcile.restart_window``. Nothing fails back during cluster
maintenance or the startup grace.

Each tick (every heartbeat interval) also clears the restart and relocate counts of the VMs
that have run steadily (reconcile/ha_restarts.py ``reset_steady``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, select

from bollard.domain.errors import BollardError
from bollard.domain.ha import HaGroup, HaState
from bollard.domain.models import Task, Vm
from bollard.domain.states import VmState
from bollard.server.clock import Clock
from bollard.server.health.monitor import LEASE
from bollard.server.ports import SettingsReader, Touch, UnitOfWork
from bollard.store import events, ha_groups, tasks, vms
from bollard.store.db import utc
from bollard.store.tables import leases
from bollard.store.tables import vms as vms_table

log = logging.getLogger(__name__)

INTERVAL = "ha.failback_interval"
RESTART_WINDOW = "reconcile.restart_window"


class MigrateRequests(Protocol):
    """The migrate operation (operations/migrate_ops.py `MigrateOperations.request`)."""

    async def request(
        self,
        name: str,
        *,
        mode: str,
        to: str | None = None,
        method: str | None = None,
        force_live: bool = False,
    ) -> tuple[Vm, Task]: ...


def failed_there(conn: Connection, vm: Vm, node: str, since: datetime) -> bool:
    """Whether the VM was relocated away from `node` since `since` because its start failed
    there (an `ha_relocate` task that names it among the nodes it failed on): no failback
    there, or it would go back and forth between a node it cannot start on and another."""
    return any(
        t.type == "ha_relocate" and node in (t.params.get("failed_on") or ())
        for t in tasks.of_vm(conn, vm.uuid, limit=50)
        if t.created_at >= since
    )


def candidates(conn: Connection) -> list[tuple[Vm, HaGroup]]:
    """Running HA VMs with no task in a group that fails back."""
    uuids = list(
        conn.execute(
            select(vms_table.c.uuid).where(
                vms_table.c.ha_group.is_not(None),
                vms_table.c.ha_hold.is_(None),
                vms_table.c.task_id.is_(None),
                vms_table.c.vm_state == VmState.ACTIVE.value,
            )
        ).scalars()
    )
    if not uuids:
        return []
    groups = {g.name: g for g in ha_groups.all_groups(conn) if not g.nofailback}
    found = []
    for vm in sorted(vms.find_many(conn, uuids).values(), key=lambda v: v.name):
        group = groups.get(vm.ha_group or "")
        if vm.hidden or vm.node is None:  # (a cell's copy of a VM moving between cells)
            continue
        if group is not None and vm.ha_state is HaState.STARTED:
            found.append((vm, group))
    return found


class Failback:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        heartbeat_interval: float,
        migrations: MigrateRequests,
        holder: str | None,
        touch: Touch,
        target_of: Callable[[Connection, Vm], str | None],
        reset_steady: Callable[[Connection, datetime, float], list[str]],
        counted: Callable[[Connection], list[str]],
    ) -> None:
        """`target_of`: scheduling.failback_target; `reset_steady` and `counted`:
        reconcile.ha_restarts' (given by the assembly: health imports neither)."""
        self.work = work
        self.clock = clock
        self.settings = settings
        self.heartbeat_interval = heartbeat_interval
        self.migrations = migrations
        # The health monitor's lease holder id, this server's: it fails back only while
        # that lease is its own (None: it runs on one server only, as a leader's duty).
        self.holder = holder
        self.touch = touch
        self.target_of = target_of
        self.reset_steady = reset_steady
        self.counted = counted
        self.started = clock.monotonic()
        self._last: float | None = None  # when the last failback look ran (monotonic)
        self.ticks = 0  # ticks done (as the lead server or not)
        self.passes = 0  # failback looks done

    @property
    def tick(self) -> float:
        return max(0.2, self.heartbeat_interval)

    async def run(self) -> None:
        """Runs until cancelled."""
        while True:
            await self.clock.sleep(self.tick)  # a periodic loop
            try:
                await self.tick_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop failback for good
                log.exception("failback pass failed")

    async def tick_once(self) -> list[str]:
        """Reset steady counts; fail back if due. The VMs failed back (their names)."""
        self.ticks += 1
        settings = await self.work.run(self.settings.all)
        if not await self.work.run(self._lead):
            return []
        await self.work.run(self._reset_steady)
        interval = float(settings[INTERVAL])
        if interval <= 0 or settings["cluster.maintenance"]:
            return []
        now = self.clock.monotonic()
        if now - self.started < float(settings["health.startup_grace"]):
            return []
        if self._last is not None and now - self._last < interval:
            return []
        self._last = now
        return await self.pass_once()

    async def pass_once(self) -> list[str]:
        """One look: every VM that should go back is asked to; their names."""
        moved = []
        for name, target, why in await self.work.run(self._due):
            try:
                vm, task = await self.migrations.request(name, mode="move", to=target)
            except BollardError as exc:  # it changed meanwhile (a task, a delete, no room)
                log.info("failback of %s to %s not started: %s", name, target, exc.message)
                continue
            await self.work.run(self._record, vm, target, why, task.id)
            moved.append(name)
        if moved:
            self.touch()
        self.passes += 1
        return moved

    def _lead(self) -> bool:
        if self.holder is None:
            return True
        with self.work.read() as conn:
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at).where(leases.c.name == LEASE)
            ).first()
        if row is None or row.holder != self.holder:
            return False
        expires = utc(row.expires_at) or row.expires_at
        return bool(expires > self.clock.now())

    def _reset_steady(self) -> list[str]:
        with self.work.read() as conn:  # (most ticks: nothing counted, nothing to write)
            if not self.counted(conn):
                return []
        with self.work.write() as conn:
            return self.reset_steady(conn, self.clock.now(), self.heartbeat_interval)

    def _due(self) -> list[tuple[str, str, str]]:
        due = []
        window = timedelta(seconds=float(self.settings.get(RESTART_WINDOW)))
        with self.work.read() as conn:
            for vm, group in candidates(conn):
                target = self.target_of(conn, vm)
                if target is None or target == vm.node:
                    continue
                if failed_there(conn, vm, target, self.clock.now() - window):
                    log.info("no failback of %s to %s: its start failed there", vm.name, target)
                    continue
                was = group.priority(vm.node)
                why = (
                    f"{target} (priority {group.priority(target)} in group {group.name}) is "
                    f"available again; {vm.node} has "
                    + ("no priority there" if was is None else f"priority {was}")
                )
                due.append((vm.name, target, why))
        return due

    def _record(self, vm: Vm, target: str, why: str, task_id: str) -> None:
        data: dict[str, Any] = {"source": vm.node, "target": target, "group": vm.ha_group}
        with self.work.write() as conn:
            events.add(conn, "vm.failback",
                       f"{vm.name} fails back from {vm.node} to {target}: {why} (task {task_id})",
                       self.clock.now(), vm_uuid=vm.uuid, vm_name=vm.name, node=target,
                       task_id=task_id, data=data)  # fmt: skip
