"""Moves between cells confirmed by themselves: with `resize.confirm_window` set in the
target cell (seconds; 0, the default, means never), a move that has waited in VERIFY_RESIZE
longer than that is confirmed by the API server, as an operator's confirm would be, with an
event (the cells' own resizes are their AutoConfirm's)."""

from __future__ import annotations

import logging
from datetime import timedelta

from bollard.cells.directory import CellDirectory
from bollard.cells.moves import Moves, migrations_log_task_params
from bollard.domain import actors
from bollard.domain.errors import BollardError
from bollard.domain.migrations import Migration, MigrationStatus
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import events, migrations_log

log = logging.getLogger(__name__)

WINDOW = "resize.confirm_window"


class MoveAutoConfirm:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, directory: CellDirectory, moves: Moves,
        interval: float,
    ) -> None:  # fmt: skip
        self._work = work
        self._clock = clock
        self._cells = directory
        self._moves = moves
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.run_pass()
            except BollardError as exc:
                log.warning("auto-confirm of moves between cells: %s", exc.message)
            await self._clock.sleep(self.interval)

    async def run_pass(self) -> int:
        """Confirm the moves past their target cell's window; how many were asked."""

        def waiting() -> list[tuple[Migration, str]]:
            with self._work.read() as conn:
                found = [
                    m for m in migrations_log.open_all(conn)
                    if m.status is MigrationStatus.FINISHED
                ]  # fmt: skip
                return [(m, migrations_log_task_params(conn, m).target_cell) for m in found]

        windows: dict[str, float] = {}
        confirmed = 0
        for record, cell in await self._work.run(waiting):
            if cell not in windows:
                client = self._cells.find(cell)
                if client is None:
                    continue
                setting = await client.json("GET", f"/settings/{WINDOW}")
                windows[cell] = float(setting.get("value") or 0)
            window = windows[cell]
            if window <= 0 or self._clock.now() - record.updated_at < timedelta(seconds=window):
                continue
            with actors.acting_as(actors.SYSTEM):
                task = await self._moves.end(record.vm_name, "confirm")
            if task is None:
                continue
            confirmed += 1

            def note(m: Migration = record, w: float = window, t: str = str(task["id"])) -> None:
                with self._work.write() as conn:
                    events.add(
                        conn, "resize.auto_confirmed",
                        f"VM {m.vm_name}: its move between cells waited in VERIFY_RESIZE over "
                        f"{w:g} s (resize.confirm_window): confirmed (task {t})",
                        self._clock.now(), vm_name=m.vm_name, vm_uuid=m.vm_uuid, task_id=t,
                    )  # fmt: skip

            await self._work.run(note)
        return confirmed
