"""Confirm or revert a VM moved between cells (waiting in VERIFY_RESIZE): durable tasks of the
API server, as the move itself (move_flow.py).

Confirm: the source cell's hidden copy goes (guest, disks, records: its delete task), then the
disks' images (both spools and the API server's store). Nothing is undone: each step is tried
until it is done.

Revert:
  stop_target    the guest is stopped in the target cell (undo: started again)
  flip_back      the source's copy shown, the target's hidden, the mapping back to the source
                 (undo: the other way round)
  start_source   started in the source cell if it ran before (undo: stopped)
  delete_target  the target's hidden copy deleted: from here on nothing is undone
  drop_images    the images removed
"""

from __future__ import annotations

from sqlalchemy import Connection

from bollard.cells.move_flow import CellMoves, flip, set_migration
from bollard.cells.move_params import MoveEndParams
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RetryPolicy, StepDef
from bollard.store import migrations_log, tasks

Ctx = StepContext[MoveEndParams]
CLEANUP_RETRY = RetryPolicy(attempts=12, delay=2.0, factor=2.0, max_delay=60.0)


async def _drop_images(moves: CellMoves, ctx: Ctx) -> None:
    p = ctx.params
    for cell in (p.source_cell, p.target_cell):
        await moves.drop_image(cell, p.image)
    moves.store.remove(p.image)


class ConfirmFlow:
    type = "cross_cell_confirm"
    params_model = MoveEndParams

    def __init__(self, moves: CellMoves) -> None:
        self.moves = moves

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("delete_source", self._delete_source, retry=CLEANUP_RETRY, commit_point=True),
            StepDef("drop_images", self._drop, retry=CLEANUP_RETRY),
        ]

    async def _delete_source(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.delete(ctx, p.source_cell, p.vm, "delete-source")

    async def _drop(self, ctx: Ctx) -> None:
        await _drop_images(self.moves, ctx)

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        set_migration(conn, ctx, MigrationStatus.CONFIRMED)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        _end_failed(conn, ctx, error, done_means=MigrationStatus.CONFIRMED)


class RevertFlow:
    type = "cross_cell_revert"
    params_model = MoveEndParams

    def __init__(self, moves: CellMoves) -> None:
        self.moves = moves

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("stop_target", self._stop_target, undo=self._start_target,
                    retry=self.moves.retry),
            StepDef("flip_back", self._flip_back, undo=self._flip, retry=self.moves.retry),
            StepDef("start_source", self._start_source, undo=self._stop_source,
                    when=lambda c: c.params.was_running, retry=self.moves.retry),
            StepDef("delete_target", self._delete_target, retry=CLEANUP_RETRY,
                    commit_point=True),
            StepDef("drop_images", self._drop, retry=CLEANUP_RETRY),
        ]  # fmt: skip

    async def _stop_target(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(ctx, p.target_cell, p.vm, "stop", "stop-target", is_hidden=False)

    async def _start_target(self, ctx: Ctx) -> None:
        p = ctx.params
        if not p.was_running:
            return
        await self.moves.power(
            ctx, p.target_cell, p.vm, "start", "undo-stop-target", is_hidden=False, surely=True
        )

    async def _flip_back(self, ctx: Ctx) -> None:
        p = ctx.params
        await flip(self.moves, ctx, show=p.source_cell, hide=p.target_cell)

    async def _flip(self, ctx: Ctx) -> None:
        p = ctx.params
        await flip(self.moves, ctx, show=p.target_cell, hide=p.source_cell, surely=True)

    async def _start_source(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(ctx, p.source_cell, p.vm, "start", "start-source", is_hidden=False)

    async def _stop_source(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(
            ctx, p.source_cell, p.vm, "stop", "undo-start-source", is_hidden=False, surely=True
        )

    async def _delete_target(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.delete(ctx, p.target_cell, p.vm, "delete-target")

    async def _drop(self, ctx: Ctx) -> None:
        await _drop_images(self.moves, ctx)

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        set_migration(conn, ctx, MigrationStatus.REVERTED)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        _end_failed(conn, ctx, error, done_means=MigrationStatus.REVERTED)


def _end_failed(conn: Connection, ctx: Ctx, error: str, *, done_means: MigrationStatus) -> None:
    """A confirm or revert that failed: past its commit point the record ends as it would
    have (with the error: a cleanup is left); before it, the VM still waits in VERIFY_RESIZE
    (the record back to `finished`, with the error), or, if an undo failed, `error`."""
    task = tasks.get(conn, ctx.task.id, with_steps=True)
    states = {s.name: s.state for s in task.steps}
    record = migrations_log.get(conn, ctx.params.migration_id)
    if record.status.ended:
        return
    now = ctx.clock.now()
    committed = any(states.get(n) == "done" for n in ("delete_source", "delete_target"))
    if committed:
        migrations_log.set_status(conn, record.id, done_means, now, error=error)
    elif any(state in ("undo_failed", "undoing") for state in states.values()):
        migrations_log.set_status(conn, record.id, MigrationStatus.ERROR, now, error=error)
    else:
        migrations_log.set_status(conn, record.id, MigrationStatus.FINISHED, now, error=error)
