"""Resize: give a VM another flavor, on another node (or, with resize.allow_same_node, its
own), durably, keeping the old copy until the resize is confirmed or reverted.

Steps (each persisted; see engine.py), with the task_state each shows:
  check    resize_prep       prerequisites, no side effects
  claim    resize_prep       the destination's resources for the new size (released on
                             rollback); the migration record was made with the request
  stop     resize_migrating  the guest is shut down on the source (if it ran)
  copy     resize_migrating  each disk is copied to a new volume (on the destination, for a
           -> resize_migrated  local pool) and grown to the flavor's root disk
  define   resize_finish     the VM is defined on the destination at the new size with the
                             copies (on its own node: redefined, its disks swapped)
  commit                     owner, epoch, size and disks change together; the source keeps
                             its stopped copy, its disks (reserved) and its resources (the
                             migration record's hold). No rollback after this point.
  start    resize_finish     started on the destination if it ran before

It ends with the VM `resized` (VERIFY_RESIZE); `resize_end.py` confirms or reverts it. Before
the commit a failure rolls everything back: the destination's definition and copies go, the
guest restarts on the source, the claim is released, the record says `failed`.

SR-IOV NICs (issue 22), on another node: `claim` takes a VF of the destination for each (its
undo frees them), `define` names them, `commit` makes them the VM's; the source keeps its
own for its stopped copy until the confirm frees them (or the revert frees the
destination's).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InsufficientCapacity, StepFailed
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task
from bollard.domain.states import (
    CommandType,
    PowerState,
    TaskState,
    VmState,
)
from bollard.domain.storage import VolumeState
from bollard.server import scheduling, sriov_moves, sriov_nics
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, StepDef
from bollard.server.tasks.flows import resize_common as rc
from bollard.server.tasks.flows import volume_common as vc
from bollard.server.tasks.flows.common import (
    check_fit,
    end_vm_task,
    fail_vm_task,
    show_task_state,
    with_locks,
)
from bollard.server.tasks.flows.volume_copies import copy_file
from bollard.server.tasks.params import ResizeParams
from bollard.store import migrations_log, nodes, tasks, vms, volumes

Ctx = StepContext[ResizeParams]


def _undone_cleanly(task: Task) -> bool:
    """Whether a failed resize's rollback undid everything it did (no undo failed or was
    cut short): its copies are gone, nothing is left to look at."""
    return not any(s.state in ("undo_failed", "undoing", "running", "waiting") for s in task.steps)


def _was_running(ctx: Ctx) -> bool:
    return ctx.params.was_running


def originals(ctx: Ctx) -> list[tuple[str, str]]:
    return [(d.device, d.original_id) for d in ctx.params.disks]


def copies(ctx: Ctx) -> list[tuple[str, str]]:
    return [(d.device, d.copy_id) for d in ctx.params.disks]


class ResizeFlow:
    type = "resize"
    params_model = ResizeParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("check", self._check),
            StepDef("claim", tx=self._claim, undo_tx=self._release),
            StepDef("stop", self._stop, self._restart_on_source, when=_was_running),
            StepDef(
                "copy", self._copy, self._remove_copies, tx=self._copied, retry=RECONNECT_RETRY
            ),
            StepDef("define", self._define, self._undefine, retry=RECONNECT_RETRY),
            StepDef("commit", tx=self._commit, commit_point=True),
            StepDef("start", self._start, when=_was_running, retry=RECONNECT_RETRY),
        ]

    # -- forward ------------------------------------------------------------------------

    async def _check(self, ctx: Ctx) -> dict[str, Any]:
        await show_task_state(ctx, TaskState.RESIZE_PREP)
        vm = await ctx.vm()
        p = ctx.params
        if vm.node != p.source or vm.epoch != p.epoch:
            raise StepFailed(
                f"VM {vm.name} changed underneath the resize (now on {vm.node}, epoch {vm.epoch})"
            )
        if not ctx.connected(p.source):
            raise StepFailed(f"source node {p.source} is not connected")
        await check_fit(ctx, p.dest, "destination")
        return {}

    def _claim(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        if not scheduling.claim(conn, p.dest, scheduling.request_for(p.vcpus, p.memory_mb)):
            raise InsufficientCapacity(f"destination {p.dest} no longer has room for the VM")
        if not p.same_node:
            vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
            sriov_moves.claim_on(conn, vm.uuid, p.dest, vm.nics, ctx.clock.now(), ctx.task.id)
        return {"claimed": {"node": p.dest, "vcpus": p.vcpus, "memory_mb": p.memory_mb}}

    def _release(self, conn: Connection, ctx: Ctx) -> None:
        p = ctx.params
        nodes.release(conn, p.dest, p.vcpus, p.memory_mb)
        sriov_nics.release_claims(conn, ctx.task.vm_uuid or "", p.dest, ctx.task.id)

    async def _migrating(self, ctx: Ctx) -> None:
        def tx(conn: Connection) -> None:
            vms.set_task_state(conn, ctx.task.vm_uuid or "", ctx.task.id,
                               TaskState.RESIZE_MIGRATING, ctx.clock.now())  # fmt: skip
            rc.set_migration(conn, ctx, ctx.params.migration_id, MigrationStatus.MIGRATING)

        await ctx.write(tx)

    async def _stop(self, ctx: Ctx) -> dict[str, Any]:
        await self._migrating(ctx)
        p = ctx.params
        grace = p.shutdown_timeout or ctx.timeouts.shutdown
        return await with_locks(ctx, "shutdown", p.source, CommandType.SHUTDOWN, p.epoch,
                                {"timeout": grace}, timeout=grace + 30)  # fmt: skip

    async def _copy(self, ctx: Ctx) -> dict[str, Any]:
        await self._migrating(ctx)
        p = ctx.params
        out: dict[str, Any] = {}
        for d in p.disks:
            original = await vc.volume(ctx, d.original_id)
            copy = await vc.volume(ctx, d.copy_id)
            pool = await vc.pool(ctx, original.pool)
            made = await copy_file(
                ctx, f"copy-{d.device}", source=(pool, original.node, original.file),
                target=(pool, copy.node, copy.file), fmt=original.format,
            )  # fmt: skip
            size = int((made.get("volume") or {}).get("size_mb") or d.from_mb)
            if d.size_mb > size:
                host = await vc.host_for(ctx, pool, copy.node)
                await ctx.command(f"grow-{d.device}", host, CommandType.VOLUME_GROW,
                                  vc.args(pool, copy, size_mb=d.size_mb))  # fmt: skip
            out[d.device] = {"copy": copy.name, "size_mb": d.size_mb, "grown": d.size_mb > size}
        return {"disks": out}

    def _copied(self, conn: Connection, ctx: Ctx) -> None:
        vms.set_task_state(conn, ctx.task.vm_uuid or "", ctx.task.id,
                           TaskState.RESIZE_MIGRATED, ctx.clock.now())  # fmt: skip
        rc.set_migration(conn, ctx, ctx.params.migration_id, MigrationStatus.POST_MIGRATING)

    async def _define(self, ctx: Ctx) -> dict[str, Any]:
        await show_task_state(ctx, TaskState.RESIZE_FINISH)
        p = ctx.params
        if p.same_node:
            result = await rc.define(
                ctx, "define", p.dest, vcpus=p.vcpus, memory_mb=p.memory_mb,
                disks=originals(ctx), epoch=p.epoch,
            )  # fmt: skip
            await rc.swap_disks(ctx, "", p.dest, copies(ctx), p.epoch)
            return result
        return await rc.define(
            ctx, "define", p.dest, vcpus=p.vcpus, memory_mb=p.memory_mb, disks=copies(ctx),
            epoch=p.dest_epoch,
        )  # fmt: skip

    def _commit(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        now = ctx.clock.now()
        vm = vms.find_by_uuid(conn, ctx.task.vm_uuid or "")
        if vm is None:
            raise Conflict(f"VM {ctx.task.vm_name} was removed during the resize")
        migration = migrations_log.get(conn, p.migration_id)
        assert migration.new_flavor is not None
        if not vms.resize_owner(conn, vm.uuid, source=p.source, dest=p.dest, epoch=p.epoch,
                                flavor=migration.new_flavor, now=now):  # fmt: skip
            raise Conflict(f"VM {vm.name} changed owner or epoch during the resize")
        for d in p.disks:  # the originals first: their devices are the copies'
            volumes.release(conn, d.original_id, ctx.task.id, now, VolumeState.RESERVED,
                            vm_uuid=None)  # fmt: skip
        for d in p.disks:
            volumes.set_fields(conn, d.copy_id, now, vm_uuid=vm.uuid, device=d.device)
            volumes.release(conn, d.copy_id, ctx.task.id, now, VolumeState.ATTACHED)
        # The destination's VFs are the VM's now; the source's stay its own too, for the
        # stopped copy there, until the confirm (or the revert) frees one side's.
        sriov_nics.commit_move(conn, vm.uuid, None, p.dest)
        hold = migrations_log.hold(p.source, p.old_vcpus, p.old_memory_mb)
        rc.set_migration(conn, ctx, p.migration_id, MigrationStatus.FINISHED, source_hold=hold)
        where = "on its own node" if p.same_node else f"on {p.dest} (from {p.source})"
        ctx.event(
            conn, "vm.resized",
            f"{vm.name} resized to {migration.new_flavor.label} {where}; {p.source} keeps "
            "the old copy until the resize is confirmed or reverted",
            node=p.dest, source=p.source, migration=p.migration_id,
        )  # fmt: skip
        return {"owner": p.dest, "epoch": p.dest_epoch}

    async def _start(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        return await with_locks(ctx, "start", p.dest, CommandType.START, p.dest_epoch)

    # -- rollback ---------------------------------------------------------------------------

    async def _restart_on_source(self, ctx: Ctx) -> None:
        p = ctx.params
        uuid = ctx.task.vm_uuid or ""
        answer = await ctx.inspect(p.source, uuid)
        if answer is None:
            raise StepFailed(f"source node {p.source} does not answer")
        if answer.vm is not None and answer.vm.power is not PowerState.RUNNING:
            await with_locks(ctx, "undo-stop", p.source, CommandType.START, p.epoch)

    async def _remove_copies(self, ctx: Ctx) -> None:
        await rc.delete_files(ctx, "undo-copy-", [d.copy_id for d in ctx.params.disks])

    async def _undefine(self, ctx: Ctx) -> None:
        p = ctx.params
        if "define" not in await ctx.sent_commands():
            return
        if p.same_node:  # back to the old size and the original disks
            await rc.swap_disks(ctx, "undo-", p.dest, originals(ctx), p.epoch)
            await rc.define(
                ctx, "undo-define", p.dest, vcpus=p.old_vcpus, memory_mb=p.old_memory_mb,
                disks=originals(ctx), epoch=p.epoch,
            )  # fmt: skip
            return
        await ctx.command(
            "undo-define", p.dest, CommandType.UNDEFINE, {"force": True},
            vm_uuid=ctx.task.vm_uuid, epoch=p.dest_epoch, cancellable=False,
        )  # fmt: skip

    # -- end ------------------------------------------------------------------------------------

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        vc.finish(conn, ctx)
        end_vm_task(conn, ctx, vm_state=VmState.RESIZED)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        vc.finish(conn, ctx)
        p = ctx.params
        task = tasks.get(conn, ctx.task.id, with_steps=True)
        done = {s.name for s in task.steps if s.state == "done"}
        if "commit" in done:
            # Resized, but not started at the destination: it waits there, stopped, to be
            # confirmed (then started) or reverted.
            rc.set_migration(conn, ctx, p.migration_id, MigrationStatus.FINISHED, error=error)
            end_vm_task(conn, ctx, vm_state=VmState.RESIZED, fault=error)
            return
        now = ctx.clock.now()
        rolled_back = _undone_cleanly(task)
        for d in p.disks:
            vc.let_go(conn, ctx, d.original_id, VolumeState.ATTACHED, migration_id=None)
            copy = volumes.find_by_id(conn, d.copy_id)
            if copy is None or copy.task_id != ctx.task.id:
                continue
            if rolled_back:
                volumes.remove(conn, copy.id)
            else:  # its file may be there: kept, in error, for the reconciler or an operator
                volumes.release(conn, copy.id, ctx.task.id, now, VolumeState.ERROR, fault=error)
        status = MigrationStatus.FAILED if rolled_back else MigrationStatus.ERROR
        rc.set_migration(conn, ctx, p.migration_id, status, error=error)
        fail_vm_task(conn, ctx, error)
