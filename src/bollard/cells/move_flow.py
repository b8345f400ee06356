"""Moving a VM to another cell (a cross-cell resize, or a shutdown migration): a durable task
of the API server, each step persisted in the API database with its undo (the cells' own
task engine), so an API server that dies at any point resumes the move, or rolls it back, from
the last step it recorded.

  check          both cells answer; the VM is as it was asked (idle) and the target node ready
  copy_records   the target cell gets a hidden copy of the VM (its NICs and MACs, its disks as
                 reserved volumes) on the target node, whose resources it claims at once
                 (undo: the target's copy deleted, its claim and MACs released)
  stop_source    the guest is shut down in the source cell, if it ran (undo: started again)
  export         the source cell writes each disk's image to its spool (undo: removed)
  transfer       each image comes to the API server's store and goes to the target cell's
                 spool, its SHA-256 checked at every hop (undo: both copies removed)
  spawn          the target cell makes the volumes from the images and defines the VM, hidden
  grow           a resize's root disk grows to the flavor's
  start_target   started in the target cell if it ran before (undo: stopped there)
  flip           the target's copy shown, the source's hidden, then the mapping moved: in that
                 order, so the VM is always listed once (the mapping decides which copy a list
                 keeps while both show) (undo: the other way round)

It ends in VERIFY_RESIZE (the migration record `finished`); move_end.py confirms or reverts.
Every step that calls a cell retries one that does not answer for a while, then fails and the
move rolls back; every undo keeps trying a silent cell for minutes before it gives up (the task
then needs attention)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection

from bollard.cells.cell_tasks import hidden, persist, run_task
from bollard.cells.directory import CellClient, CellDirectory, CellUnreachable
from bollard.cells.image_store import ImageStore
from bollard.cells.move_params import MoveParams
from bollard.cells.routing import Routes
from bollard.domain.errors import BollardError, Conflict, StepFailed
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task
from bollard.domain.policy import Identity, Role
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RetryPolicy, StepDef
from bollard.store import migrations_log, tasks

Ctx = StepContext[MoveParams]

DEFAULT_CELL_WAIT = 120.0  # seconds a step waits for a cell that does not answer


def cell_retry(wait: float) -> RetryPolicy:
    """A step tries a cell that does not answer again for about `wait` seconds, then fails
    and the move rolls back (`bollard api --move-cell-wait`)."""
    delay = min(5.0, max(0.5, wait / 10))
    return RetryPolicy(
        attempts=int(wait / delay) + 1, delay=delay, factor=1.0, max_delay=delay,
        errors=(CellUnreachable,),
    )  # fmt: skip


POWER_DEADLINE = 300.0
# What the target cell keeps of each of the VM's past actions (copied with its records).
ACTION_FIELDS = (
    "task_id", "action", "request_id", "actor", "result", "message", "start_time",
    "finish_time",
)  # fmt: skip
COPY_DEADLINE = 3600.0


def acting(ctx: StepContext[Any]) -> Identity:
    """Cells' calls for this task name the user who asked for it (the API server checked the
    user's role when the task was asked for)."""
    user = ctx.task.actor or "system"
    return Identity(actor=user, user=user, role=Role.ADMIN, token_id="api-server")


def key(ctx: StepContext[Any], step: str) -> str:
    """The request id a step's call to a cell carries (see cell_tasks.py)."""
    return f"{ctx.task.id[:8]}{ctx.task.id[-12:]}-{step}"


def _missing(status: int, error: dict[str, Any]) -> bool:
    return status == 404


def _stopped_already(status: int, error: dict[str, Any]) -> bool:
    return status == 409 and "stopped" in str(error.get("message", "")).lower()


class CellMoves:
    """What the move's and its confirm's and revert's steps reach: the cells, the mappings,
    the image store."""

    def __init__(
        self, *, directory: CellDirectory, routes: Routes, store: ImageStore,
        cell_wait: float = DEFAULT_CELL_WAIT,
    ) -> None:  # fmt: skip
        self.cells = directory
        self.routes = routes
        self.store = store
        self.retry = cell_retry(cell_wait)

    def cell(self, name: str) -> CellClient:
        return self.cells.get(name)

    async def power(
        self, ctx: StepContext[Any], cell: str, vm: str, action: str, step: str, *,
        is_hidden: bool, surely: bool = False,
    ) -> None:  # fmt: skip
        """Start or stop (`action`: start | shutdown | stop) the VM in a cell and wait;
        `surely` (an undo): keep trying a cell that does not answer (cell_tasks.persist)."""

        async def once() -> None:
            await run_task(
                self.cell(cell), key(ctx, step), "POST", f"/vms/{vm}/{action}", vm=vm,
                clock=ctx.clock, deadline=POWER_DEADLINE, identity=acting(ctx),
                params=hidden(is_hidden), json={} if action == "shutdown" else None,
                accept=_stopped_already if action != "start" else None,
            )  # fmt: skip

        if not surely:
            await once()
            return
        verb = "starting" if action == "start" else "stopping"
        await persist(once, clock=ctx.clock, what=f"{verb} VM {vm} in cell {cell}")

    async def delete(self, ctx: StepContext[Any], cell: str, vm: str, step: str) -> None:
        """Delete a hidden copy (guest, disks, records) in a cell and wait; gone is done."""
        await run_task(
            self.cell(cell), key(ctx, step), "DELETE", f"/vms/{vm}", vm=vm, clock=ctx.clock,
            deadline=POWER_DEADLINE, identity=acting(ctx), params=hidden(True), accept=_missing,
        )  # fmt: skip

    async def drop_image(self, cell: str, image: str) -> None:
        answer = await self.cell(cell).call("DELETE", f"/images/{image}")
        if answer.status_code not in (204, 404):
            raise StepFailed(f"cell {cell} kept image {image}: HTTP {answer.status_code}")

    async def set_hidden(self, ctx: StepContext[Any], cell: str, vm: str, flag: bool) -> None:
        action = "hide" if flag else "unhide"
        await self.cell(cell).json("POST", f"/vms/{vm}/{action}", identity=acting(ctx))


def set_migration(
    conn: Connection, ctx: StepContext[Any], status: MigrationStatus, error: str | None = None
) -> None:
    """Move the record to `status` unless it is there already (a step run again)."""
    current = migrations_log.get(conn, ctx.params.migration_id)
    if current.status is not status:
        migrations_log.set_status(conn, current.id, status, ctx.clock.now(), error=error)


class MoveFlow:
    params_model = MoveParams

    def __init__(self, moves: CellMoves, type: str = "cross_cell_move") -> None:
        self.moves = moves
        self.type = type

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("check", self._check, retry=self.moves.retry),
            StepDef("copy_records", self._copy_records, undo=self._undo_copy,
                    retry=self.moves.retry, tx=self._migrating),
            StepDef("stop_source", self._stop_source, undo=self._start_source,
                    when=lambda c: c.params.was_running, retry=self.moves.retry),
            StepDef("export", self._export, undo=self._undo_export, retry=self.moves.retry),
            StepDef("transfer", self._transfer, undo=self._undo_transfer, retry=self.moves.retry,
                    tx=self._post_migrating),
            StepDef("spawn", self._spawn, retry=self.moves.retry),
            StepDef("grow", self._grow, when=lambda c: c.params.grow_root_mb is not None,
                    retry=self.moves.retry),
            StepDef("start_target", self._start_target, undo=self._stop_target,
                    when=lambda c: c.params.was_running, retry=self.moves.retry),
            StepDef("flip", self._flip, undo=self._flip_back, retry=self.moves.retry),
        ]  # fmt: skip

    # -- steps ----------------------------------------------------------------------------

    async def _check(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        source, target = self.moves.cell(p.source_cell), self.moves.cell(p.target_cell)
        vm = await source.json("GET", f"/vms/{p.vm}", identity=acting(ctx))
        if vm["uuid"] != p.uuid:
            raise StepFailed(f"VM {p.vm} in cell {p.source_cell} is another VM now")
        node = await target.json("GET", f"/nodes/{p.target_node}", identity=acting(ctx))
        if not node["connected"] or node["health"] != "up" or node["scheduling"] != "ready":
            raise StepFailed(
                f"node {p.target_node} of cell {p.target_cell} cannot take VMs now "
                f"(health {node['health']}, {node['scheduling']}, "
                f"{'connected' if node['connected'] else 'not connected'})"
            )
        return {"status": vm["status"]}

    async def _copy_records(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        past = await self.moves.cell(p.source_cell).json(
            "GET", f"/vms/{p.vm}/actions", identity=acting(ctx)
        )
        actions = [
            {**{k: a.get(k) for k in ACTION_FIELDS}, "message": (a.get("message") or "")[:2000]}
            for a in past.get("items", [])
            if a.get("result") in ("success", "error")
        ]  # fmt: skip
        vm = await self.moves.cell(p.target_cell).json(
            "POST", "/vms/import", json={**p.record, "actions": actions}, identity=acting(ctx)
        )
        return {"volumes": {d["device"]: d["volume"] for d in vm.get("disks", [])}}

    def _migrating(self, conn: Connection, ctx: Ctx) -> None:
        set_migration(conn, ctx, MigrationStatus.MIGRATING)

    async def _undo_copy(self, ctx: Ctx) -> None:
        p = ctx.params
        await persist(
            lambda: self.moves.delete(ctx, p.target_cell, p.vm, "undo-copy"),
            clock=ctx.clock, what=f"removing VM {p.vm}'s copy from cell {p.target_cell}",
        )  # fmt: skip

    async def _stop_source(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(ctx, p.source_cell, p.vm, "shutdown", "stop", is_hidden=False)

    async def _start_source(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(
            ctx, p.source_cell, p.vm, "start", "undo-stop", is_hidden=False, surely=True
        )

    async def _export(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        result = await run_task(
            self.moves.cell(p.source_cell), key(ctx, "export"), "POST", f"/vms/{p.vm}/export",
            vm=p.vm, clock=ctx.clock, deadline=COPY_DEADLINE, identity=acting(ctx),
            json={"image": p.image},
        )  # fmt: skip
        return {"disks": result.get("disks", [])}

    async def _undo_export(self, ctx: Ctx) -> None:
        p = ctx.params
        await persist(
            lambda: self.moves.drop_image(p.source_cell, p.image),
            clock=ctx.clock, what=f"removing image {p.image} from cell {p.source_cell}",
        )  # fmt: skip

    async def _transfer(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        disks = ctx.results["export"]["disks"]
        source, target = self.moves.cell(p.source_cell), self.moves.cell(p.target_cell)
        total = sum(int(d["bytes"]) for d in disks) or 1
        done = 0
        moved = []
        for disk in disks:
            name, sha = str(disk["device"]), str(disk["sha256"])
            report = _reporter(ctx, name, done, total)
            size = await self.moves.store.pull(source, p.image, name, sha, report("pulled"))
            await self.moves.store.push(target, p.image, name, report("pushed"))
            done += size
            moved.append({"device": name, "bytes": size, "sha256": sha})
        return {"disks": moved, "bytes": done}

    def _post_migrating(self, conn: Connection, ctx: Ctx) -> None:
        set_migration(conn, ctx, MigrationStatus.POST_MIGRATING)

    async def _undo_transfer(self, ctx: Ctx) -> None:
        p = ctx.params
        await persist(
            lambda: self.moves.drop_image(p.target_cell, p.image),
            clock=ctx.clock, what=f"removing image {p.image} from cell {p.target_cell}",
        )  # fmt: skip
        self.moves.store.remove(p.image)

    async def _spawn(self, ctx: Ctx) -> None:
        p = ctx.params
        await run_task(
            self.moves.cell(p.target_cell), key(ctx, "spawn"), "POST", f"/vms/{p.vm}/spawn",
            vm=p.vm, clock=ctx.clock, deadline=COPY_DEADLINE, identity=acting(ctx),
            params=hidden(True), json={"image": p.image, "start": False},
        )  # fmt: skip

    async def _grow(self, ctx: Ctx) -> None:
        p = ctx.params
        volume = ctx.results["copy_records"]["volumes"].get("vda")
        if volume is None or p.grow_root_mb is None:
            return
        target = self.moves.cell(p.target_cell)
        current = await target.json("GET", f"/volumes/{volume}", identity=acting(ctx))
        if int(current["size_mb"]) >= p.grow_root_mb:
            return
        await run_task(
            target, key(ctx, "grow"), "POST", f"/volumes/{volume}/grow", vm=p.vm,
            clock=ctx.clock, deadline=POWER_DEADLINE, identity=acting(ctx),
            json={"size_mb": p.grow_root_mb},
        )  # fmt: skip

    async def _start_target(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(ctx, p.target_cell, p.vm, "start", "start", is_hidden=True)

    async def _stop_target(self, ctx: Ctx) -> None:
        p = ctx.params
        await self.moves.power(
            ctx, p.target_cell, p.vm, "stop", "undo-start", is_hidden=True, surely=True
        )

    async def _flip(self, ctx: Ctx) -> None:
        await flip(self.moves, ctx, show=ctx.params.target_cell, hide=ctx.params.source_cell)

    async def _flip_back(self, ctx: Ctx) -> None:
        p = ctx.params
        await flip(self.moves, ctx, show=p.source_cell, hide=p.target_cell, surely=True)

    # -- end --------------------------------------------------------------------------------

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        set_migration(conn, ctx, MigrationStatus.FINISHED)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        record = migrations_log.get(conn, ctx.params.migration_id)
        if record.status.ended:
            return
        task = tasks.get(conn, ctx.task.id, with_steps=True)
        undo_failed = any(s.state in ("undo_failed", "undoing") for s in task.steps)
        status = MigrationStatus.ERROR if undo_failed else MigrationStatus.FAILED
        migrations_log.set_status(conn, record.id, status, ctx.clock.now(), error=error)


async def flip(
    moves: CellMoves, ctx: StepContext[Any], *, show: str, hide: str, surely: bool = False
) -> None:
    """Show the VM's copy in cell `show`, hide the one in `hide`, then map the VM to `show`.
    Each part is idempotent; while both copies show, the mapping says which is listed.
    `surely` (an undo): keep trying a cell that does not answer."""
    if surely:
        what = f"showing VM {ctx.params.vm} in cell {show} again"
        await persist(lambda: flip(moves, ctx, show=show, hide=hide), clock=ctx.clock, what=what)
        return
    vm = ctx.params.vm
    await moves.set_hidden(ctx, show, vm, False)
    try:
        await moves.set_hidden(ctx, hide, vm, True)
    except BollardError as exc:
        if exc.http_status != 404:  # the other copy is gone already: nothing to hide
            raise
    await moves.routes.map_vm(vm, show, ctx.params.uuid)


def _reporter(
    ctx: Ctx, disk: str, before: int, total: int
) -> Callable[[str], Callable[[int], Awaitable[None]]]:
    """Progress of the transfer in the step's result, every tenth of the way or so."""
    marks: dict[str, int] = {}

    def for_phase(phase: str) -> Callable[[int], Awaitable[None]]:
        async def report(done: int) -> None:
            fraction = (before + done) / total
            mark = int(fraction * 10)
            if marks.get(phase, -1) < mark:
                marks[phase] = mark
                await ctx.merge_result(
                    {"progress": {"disk": disk, "phase": phase, "fraction": round(fraction, 2)}}
                )

        return report

    return for_phase


def conflict_if_open(record_status: MigrationStatus, vm: str) -> None:
    if not record_status.ended:
        raise Conflict(f"VM {vm} is being moved between cells ({record_status.value})")
