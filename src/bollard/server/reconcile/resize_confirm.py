"""Confirming resizes by themselves: with `resize.confirm_window` set (seconds; 0, the
default, means never), a resize left in VERIFY_RESIZE longer than that is confirmed through
the ordinary confirm operation, with an event. A VM that a task holds (busy) or whose resize
left a fault (its start at the destination failed: an operator should look) is skipped, with
one event per resize and server run; it is confirmed once that clears."""

from __future__ import annotations

import logging
from datetime import timedelta

from bollard.domain.errors import BollardError
from bollard.domain.migrations import Migration
from bollard.domain.states import VmState
from bollard.server.clock import Clock
from bollard.server.ports import ResizeRequests, SettingsReader, UnitOfWork
from bollard.server.reconcile.loop import PassLoop
from bollard.store import events, migrations_log, vms

log = logging.getLogger(__name__)

WINDOW = "resize.confirm_window"


class AutoConfirm:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        resizes: ResizeRequests,
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.resizes = resizes
        self._skipped: set[str] = set()
        # Passes as often as the state reconciler's (a cheap indexed query).
        self.loop = PassLoop(
            work=work, clock=clock, settings=settings, name="resize auto-confirm",
            interval_key="reconcile.state.interval", body=self.run_pass,
        )  # fmt: skip

    async def run(self) -> None:
        await self.loop.run()

    async def run_pass(self) -> int:
        """Confirm the resizes past the window; how many were asked to confirm."""
        window = float(await self.work.run(self.settings.get, WINDOW))
        if window <= 0:
            return 0
        due = await self.work.run(self._due, window)
        confirmed = 0
        for migration in due:
            reason = await self.work.run(self._skip_reason, migration)
            if reason is not None:
                await self._skip(migration, reason)
                continue
            try:
                _, task = await self.resizes.confirm(migration.vm_name)
            except BollardError as exc:  # it changed meanwhile (a revert, a delete)
                log.info("auto-confirm of %s skipped: %s", migration.vm_name, exc.message)
                continue
            confirmed += 1
            await self.work.run(self._note, migration, window, task.id)
        return confirmed

    def _due(self, window: float) -> list[Migration]:
        with self.work.read() as conn:
            before = self.clock.now() - timedelta(seconds=window)
            return migrations_log.resized_before(conn, before)

    def _skip_reason(self, migration: Migration) -> str | None:
        with self.work.read() as conn:
            vm = vms.find_by_uuid(conn, migration.vm_uuid)
            if vm is None:
                return "the VM is gone"
            if vm.task_id is not None:
                return f"busy with task {vm.task_id}"
            if vm.vm_state is not VmState.RESIZED:
                return f"it is {vm.vm_state}, not waiting for a confirm"
            if vm.fault:
                return f"in error: {vm.fault}"
            return None

    async def _skip(self, migration: Migration, reason: str) -> None:
        if migration.id in self._skipped:
            return
        self._skipped.add(migration.id)

        def tx() -> None:
            with self.work.write() as conn:
                events.add(
                    conn, "resize.auto_confirm_skipped",
                    f"resize of {migration.vm_name} not confirmed by itself: {reason}",
                    self.clock.now(), vm_uuid=migration.vm_uuid, vm_name=migration.vm_name,
                    node=migration.dest, data={"migration": migration.id},
                )  # fmt: skip

        await self.work.run(tx)

    def _note(self, migration: Migration, window: float, task_id: str) -> None:
        with self.work.write() as conn:
            events.add(
                conn, "resize.auto_confirmed",
                f"resize of {migration.vm_name} confirmed by itself after {window:g} s in "
                f"VERIFY_RESIZE (task {task_id})", self.clock.now(),
                vm_uuid=migration.vm_uuid, vm_name=migration.vm_name, node=migration.dest,
                task_id=task_id, data={"migration": migration.id},
            )  # fmt: skip
