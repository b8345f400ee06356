"""The end of a resize (resize.py): confirm or revert, each a durable task.

confirm (task_state resize_confirming, status VERIFY_RESIZE while it runs):
  check             the VM still waits in VERIFY_RESIZE at the destination
  drop_source       the source's stopped copy is undefined (another node only)
  delete_originals  the disks it kept are deleted, and their records
  release           the source's hold is released; the record says `confirmed`

revert (task_state resize_reverting, status REVERT_RESIZE while it runs):
  check             the VM still waits at the destination; the source keeps every original
  stop_dest         the destination's guest is powered off (started again on rollback)
  switch            owner (next epoch), old size, original disks, and the destination's
                    claim released, together (no rollback after this point)
  undefine_dest     the destination's definition goes (another node only)
  define_source     the VM is defined (again) on the source at its old size, its original
                    disks attached (on its own node: its disks swapped back)
  start_source      started there if it ran before the resize
  delete_copies     the copies the resize made are deleted, and their records

A host that is gone (fenced or deleted) is not asked: what is left of the VM there is the
state reconciler's (a host that comes back destroys what it no longer owns).

SR-IOV VFs (issue 22): the VM holds some on both nodes while it waits. A confirm frees the
source's with its release (after the source's copy is undefined); a revert frees the
destination's once the destination's definition is gone (`undefine_dest`), or at its end
if it stopped after the switch: the VM is then the source's alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, StepFailed
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task, Vm
from bollard.domain.states import CommandType, DesiredPower, PowerState, TaskState, VmState
from bollard.domain.storage import VolumeState
from bollard.server import sriov_nics
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, RetryPolicy, StepDef
from bollard.server.tasks.flows import resize_common as rc
from bollard.server.tasks.flows.common import end_vm_task, show_task_state, with_locks
from bollard.server.tasks.flows.resize import ResizeFlow
from bollard.server.tasks.params import ResizeEndParams
from bollard.store import migrations_log, nodes, tasks, vms, volumes

Ctx = StepContext[ResizeEndParams]
# Cleaning up after the point of no return: tried until it works.
CLEANUP_RETRY = RetryPolicy(attempts=10, delay=2.0, factor=2.0, max_delay=60.0)


def _other_node(ctx: Ctx) -> bool:
    return not ctx.params.same_node


def _power_state(vm: Vm) -> VmState:
    """What a VM whose resize ended is, by what its host last reported (its desired power
    when the host has not said)."""
    if vm.observed_power in (PowerState.RUNNING, PowerState.PAUSED):
        return VmState.ACTIVE
    if vm.observed_power in (PowerState.STOPPED, PowerState.CRASHED):
        return VmState.STOPPED
    return VmState.ACTIVE if vm.desired_power is DesiredPower.RUNNING else VmState.STOPPED


async def _check_resized(ctx: Ctx, state: TaskState) -> Vm:
    await show_task_state(ctx, state)
    vm = await ctx.vm()
    p = ctx.params
    if vm.node != p.dest or vm.epoch != p.epoch or vm.vm_state is not VmState.RESIZED:
        raise StepFailed(
            f"VM {vm.name} changed underneath (now {vm.vm_state} on {vm.node}, epoch {vm.epoch})"
        )
    return vm


class ResizeConfirmFlow:
    type = "resize_confirm"
    params_model = ResizeEndParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("check", self._check),
            StepDef("drop_source", self._drop_source, when=_other_node, retry=RECONNECT_RETRY),
            StepDef("delete_originals", self._delete_originals, retry=RECONNECT_RETRY),
            StepDef("release", tx=self._release, commit_point=True),
        ]

    async def _check(self, ctx: Ctx) -> dict[str, Any]:
        await _check_resized(ctx, TaskState.RESIZE_CONFIRMING)
        return {}

    async def _drop_source(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        if not await rc.reachable(ctx, p.source):
            await ctx.note("resize.cleanup", f"{p.source} is gone: its copy is not asked for",
                           node=p.source)  # fmt: skip
            return {"skipped": f"{p.source} is gone"}
        return await ctx.command(
            "undefine", p.source, CommandType.UNDEFINE, {"force": True},
            vm_uuid=ctx.task.vm_uuid, epoch=p.source_epoch,
        )  # fmt: skip

    async def _originals(self, ctx: Ctx) -> list[str]:
        uuid = ctx.task.vm_uuid or ""
        _, kept = await ctx.read(lambda conn: rc.kept(conn, ctx.params.migration_id, uuid))
        return [v.id for v in kept]

    async def _delete_originals(self, ctx: Ctx) -> dict[str, Any]:
        ids = await self._originals(ctx)

        def take(conn: Connection) -> None:
            now = ctx.clock.now()
            for vid in ids:
                v = volumes.find_by_id(conn, vid)
                if v is not None and v.task_id is None:
                    volumes.transition(conn, vid, now, held_by=None, state=VolumeState.DELETING,
                                       task_id=ctx.task.id)  # fmt: skip

        await ctx.write(take)
        deleted = await rc.delete_files(ctx, "delete-", ids)
        await ctx.write(lambda conn: rc.forget(conn, ctx, deleted, "the resize was confirmed"))
        return {"deleted": deleted}

    def _release(self, conn: Connection, ctx: Ctx) -> None:
        p = ctx.params
        migration = migrations_log.get(conn, p.migration_id)
        if migration.source_hold is not None:
            h = migration.source_hold
            nodes.release(conn, h.node, h.vcpus, h.memory_mb)
        now = ctx.clock.now()
        for v in volumes.of_migration(conn, p.migration_id):
            volumes.set_fields(conn, v.id, now, migration_id=None)
        sriov_nics.commit_move(conn, ctx.task.vm_uuid or "", p.source, p.dest)
        rc.set_migration(conn, ctx, p.migration_id, MigrationStatus.CONFIRMED, source_hold=None)
        ctx.event(conn, "vm.resize_confirmed",
                  f"resize confirmed: {p.source}'s copy and hold are gone", node=p.dest,
                  migration=p.migration_id)  # fmt: skip

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        vm = vms.find_by_uuid(conn, ctx.task.vm_uuid or "")
        end_vm_task(conn, ctx, vm_state=_power_state(vm) if vm else None)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        # Nothing is undone: what was dropped stays dropped (a revert is refused once the
        # originals are gone); the VM still waits in VERIFY_RESIZE, to be confirmed again.
        now = ctx.clock.now()
        for v in volumes.of_migration(conn, ctx.params.migration_id):
            if v.task_id == ctx.task.id:
                volumes.release(conn, v.id, ctx.task.id, now, VolumeState.ERROR, fault=error)
        rc.set_migration(conn, ctx, ctx.params.migration_id, MigrationStatus.FINISHED,
                         error=f"confirm failed: {error}")  # fmt: skip
        end_vm_task(conn, ctx, vm_state=None, fault=f"confirm of the resize failed: {error}")


class ResizeRevertFlow:
    type = "resize_revert"
    params_model = ResizeEndParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("check", self._check),
            StepDef("stop_dest", self._stop_dest, self._restart_dest, retry=RECONNECT_RETRY),
            StepDef("switch", tx=self._switch, commit_point=True),
            StepDef(
                "undefine_dest",
                self._undefine_dest,
                when=_other_node,
                retry=CLEANUP_RETRY,
                tx=self._free_dest_vfs,
            ),
            StepDef("define_source", self._define_source, retry=RECONNECT_RETRY),
            StepDef("start_source", self._start_source, when=self._starts, retry=RECONNECT_RETRY),
            StepDef("delete_copies", self._delete_copies, retry=CLEANUP_RETRY),
        ]

    def _starts(self, ctx: Ctx) -> bool:
        return ctx.params.was_running

    async def _check(self, ctx: Ctx) -> dict[str, Any]:
        vm = await _check_resized(ctx, TaskState.RESIZE_REVERTING)
        p = ctx.params
        if not ctx.connected(p.source):
            raise StepFailed(f"source node {p.source} is not connected: the VM cannot go back")
        uuid = vm.uuid
        _, kept = await ctx.read(lambda conn: rc.kept(conn, p.migration_id, uuid))
        lost = [v.name for v in kept if v.state is not VolumeState.RESERVED]
        if lost:
            raise StepFailed(f"the resize's original disks {', '.join(lost)} are not kept")
        return {"observed": vm.observed_power.value}

    async def _stop_dest(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        if not await rc.reachable(ctx, p.dest):
            return {"skipped": f"{p.dest} is gone"}
        return await with_locks(ctx, "stop", p.dest, CommandType.STOP, p.epoch)

    async def _restart_dest(self, ctx: Ctx) -> None:
        p = ctx.params
        check = ctx.results.get("check") or {}
        if check.get("observed") != PowerState.RUNNING.value or not ctx.connected(p.dest):
            return
        await with_locks(ctx, "undo-stop", p.dest, CommandType.START, p.epoch)

    def _switch(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        now = ctx.clock.now()
        migration = migrations_log.get(conn, p.migration_id)
        vm = vms.find_by_uuid(conn, ctx.task.vm_uuid or "")
        if vm is None:
            raise Conflict(f"VM {ctx.task.vm_name} was removed during the revert")
        assert migration.old_flavor is not None and migration.new_flavor is not None
        if not vms.resize_owner(conn, vm.uuid, source=p.dest, dest=p.source, epoch=p.epoch,
                                flavor=migration.old_flavor, now=now):  # fmt: skip
            raise Conflict(f"VM {vm.name} changed owner or epoch during the revert")
        copies, kept = rc.kept(conn, p.migration_id, vm.uuid)
        for v in copies:  # the copies first: their devices are the originals'
            volumes.transition(conn, v.id, now, held_by=None, state=VolumeState.DELETING,
                               task_id=ctx.task.id, vm_uuid=None)  # fmt: skip
        for v in kept:
            volumes.transition(conn, v.id, now, held_by=None, state=VolumeState.ATTACHED,
                               vm_uuid=vm.uuid, migration_id=None)  # fmt: skip
        new = migration.new_flavor
        nodes.release(conn, p.dest, new.vcpus, new.memory_mb)
        migrations_log.set_fields(conn, p.migration_id, now, source_hold=None)
        ctx.event(conn, "vm.resize_reverted",
                  f"{vm.name} is back at {migration.old_flavor.label} on {p.source}",
                  node=p.source, migration=p.migration_id)  # fmt: skip
        epoch = p.epoch if p.same_node else p.epoch + 1
        return {"owner": p.source, "epoch": epoch, "devices": [(v.device, v.id) for v in kept]}

    def _epoch(self, ctx: Ctx) -> int:
        return int(ctx.results["switch"]["epoch"])

    def _originals(self, ctx: Ctx) -> list[tuple[str, str]]:
        return [(str(d), str(i)) for d, i in ctx.results["switch"]["devices"]]

    async def _undefine_dest(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        if not await rc.reachable(ctx, p.dest):
            return {"skipped": f"{p.dest} is gone"}
        return await ctx.command(
            "undefine", p.dest, CommandType.UNDEFINE, {"force": True},
            vm_uuid=ctx.task.vm_uuid, epoch=p.epoch, cancellable=False,
        )  # fmt: skip

    def _free_dest_vfs(self, conn: Connection, ctx: Ctx) -> None:
        """The destination's VFs go once its definition does (the VM is the source's)."""
        p = ctx.params
        sriov_nics.commit_move(conn, ctx.task.vm_uuid or "", p.dest, p.source)

    async def _define_source(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        migration = await ctx.read(lambda conn: migrations_log.get(conn, p.migration_id))
        old = migration.old_flavor
        assert old is not None
        result = await rc.define(
            ctx, "define", p.source, vcpus=old.vcpus, memory_mb=old.memory_mb,
            disks=self._originals(ctx), epoch=self._epoch(ctx),
        )  # fmt: skip
        if p.same_node:
            await rc.swap_disks(ctx, "", p.source, self._originals(ctx), self._epoch(ctx))
        return result

    async def _start_source(self, ctx: Ctx) -> dict[str, Any]:
        return await with_locks(
            ctx, "start", ctx.params.source, CommandType.START, self._epoch(ctx)
        )

    async def _delete_copies(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params

        def held(conn: Connection) -> list[str]:
            return [
                v.id for v in volumes.of_migration(conn, p.migration_id)
                if v.task_id == ctx.task.id
            ]  # fmt: skip

        ids = await ctx.read(held)
        deleted = await rc.delete_files(ctx, "delete-", ids)
        await ctx.write(lambda conn: rc.forget(conn, ctx, deleted, "the resize was reverted"))
        return {"deleted": deleted}

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        rc.set_migration(conn, ctx, ctx.params.migration_id, MigrationStatus.REVERTED)
        state = VmState.ACTIVE if ctx.params.was_running else VmState.STOPPED
        end_vm_task(conn, ctx, vm_state=state)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        p = ctx.params
        task = tasks.get(conn, ctx.task.id, with_steps=True)
        done = {s.name for s in task.steps if s.state == "done"}
        now = ctx.clock.now()
        if "switch" not in done:
            # Nothing changed hands: the VM still waits at the destination, to be reverted
            # again (or confirmed).
            rc.set_migration(conn, ctx, p.migration_id, MigrationStatus.FINISHED,
                             error=f"revert failed: {error}")  # fmt: skip
            end_vm_task(conn, ctx, vm_state=None, fault=f"revert of the resize failed: {error}")
            return
        for v in volumes.of_migration(conn, p.migration_id):
            if v.task_id == ctx.task.id:
                volumes.release(conn, v.id, ctx.task.id, now, VolumeState.ERROR, fault=error)
        if not p.same_node:  # the source's now: the destination's VFs are not its own
            sriov_nics.commit_move(conn, ctx.task.vm_uuid or "", p.dest, p.source)
        rc.set_migration(conn, ctx, p.migration_id, MigrationStatus.ERROR, error=error)
        # Back on the source at the old size, but not (yet) defined or started there.
        end_vm_task(conn, ctx, vm_state=VmState.STOPPED, fault=f"revert: {error}")


FLOWS = (ResizeFlow(), ResizeConfirmFlow(), ResizeRevertFlow())
