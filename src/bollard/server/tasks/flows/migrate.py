"""Migration: move a VM to another node, live or by shutting it down, durably.

Steps (each persisted; see engine.py):
  check         prerequisites, no side effects
  claim         reserve the target's resources (released on rollback)
  live_migrate  a running VM moves while it runs            (method live, or default)
  stop          shutdown-migration: the VM is shut down     (method shutdown, or fallback)
  move          its definition moves while it is stopped
  commit        owner and epoch change together             (no rollback after this point)
  start         shutdown-migration: it is started on the target

SR-IOV NICs (issue 22): the claim step also claims a VF of the target for each SR-IOV NIC
(with the task's id, so the rollback releases exactly those: `sriov_nics.release_claims`);
the `migrate` command carries the VM's NICs on the target's VFs, so the source's driver
defines it there with them; the commit makes the target's VFs the VM's and frees the
source's (`sriov_nics.commit_move`). A migration that fails, is cancelled or rolls back thus
keeps the source's VFs and frees the target's: the store's holders and the VM's NICs agree
on both nodes whatever the outcome. A VM with a hostdev NIC comes here with method shutdown
(migrate_ops refuses a live request for it).

A migration that fails or whose answer is lost is not failed blindly: both hosts are asked
where the VM is. On the target → commit. On the source → the target's leftover is removed
(and with method `default`, unless `force_live`, a shutdown migration is tried). On neither →
the VM is in ERROR with an event, and with `on_lost: start` it is started on its owner.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import (
    BollardError,
    CommandFailed,
    CommandOutcomeUnknown,
    Conflict,
    InsufficientCapacity,
    NodeUnavailable,
    StepFailed,
)
from bollard.domain.migrations import MigrationStatus, MigrationType
from bollard.domain.models import Task, Vm, nic_args
from bollard.domain.states import (
    CommandType,
    PowerState,
    TaskState,
    VmState,
)
from bollard.server import scheduling, sriov_moves, sriov_nics, vm_disks
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, StepDef
from bollard.server.tasks.flows.common import (
    check_fit,
    end_migration,
    end_vm_task,
    fail_vm_task,
    show_task_state,
    with_locks,
)
from bollard.server.tasks.flows.locate import Location, Where, locate
from bollard.server.tasks.flows.migrate_progress import finish_result, with_progress
from bollard.server.tasks.params import MigrateParams
from bollard.store import nodes, sriov, tasks, vms

_UNCERTAIN = (CommandFailed, CommandOutcomeUnknown, NodeUnavailable)

Ctx = StepContext[MigrateParams]


def _live_wanted(ctx: Ctx) -> bool:
    return ctx.params.was_running and ctx.params.method in ("live", "default")


def _shutdown_path(ctx: Ctx) -> bool:
    if not ctx.params.was_running:
        return True  # a stopped VM: only its definition moves
    if ctx.params.method == "shutdown":
        return True
    return bool(ctx.results.get("live_migrate", {}).get("fallback"))


def _stops_and_starts(ctx: Ctx) -> bool:
    return _shutdown_path(ctx) and ctx.params.was_running


def _moved_live(ctx: Ctx) -> bool:
    return ctx.params.shared_disks and ctx.params.was_running and not _shutdown_path(ctx)


class MigrateFlow:
    type = "migrate"
    params_model = MigrateParams

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("check", self._check),
            StepDef("claim", tx=self._claim, undo_tx=self._release),
            StepDef("live_migrate", self._live, self._undo_move, when=_live_wanted),
            StepDef("stop", self._stop, self._restart_on_source, when=_stops_and_starts),
            StepDef("move", self._move, self._undo_move, when=_shutdown_path),
            StepDef("commit", tx=self._commit, commit_point=True),
            # After the commit the VM is the target's: a target briefly away is waited for.
            StepDef("start", self._start_on_target, when=_stops_and_starts, retry=RECONNECT_RETRY),
            # A live-migrated VM's shared volumes: their locks go to the target.
            StepDef("locks", self._hand_over_locks, when=_moved_live, retry=RECONNECT_RETRY),
        ]

    # -- forward ------------------------------------------------------------------------

    async def _check(self, ctx: Ctx) -> dict[str, Any]:
        await show_task_state(ctx, TaskState.MIGRATING)
        vm = await ctx.vm()
        p = ctx.params
        if vm.node != p.source or vm.epoch != p.epoch:
            raise StepFailed(
                f"VM {vm.name} changed underneath the migration (now on {vm.node}, "
                f"epoch {vm.epoch})"
            )
        if not ctx.connected(p.source):
            raise StepFailed(f"source node {p.source} is not connected")
        await self._target_ready(ctx)
        return {}

    async def _target_ready(self, ctx: Ctx) -> None:
        """The target must still be fit: a target that changed underneath aborts cleanly."""
        await check_fit(ctx, ctx.params.target, "target node")

    def _claim(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        # The same vCPU ratio the scheduler chose the target by (scheduling.claim).
        if not scheduling.claim(conn, p.target, scheduling.request_for(p.vcpus, p.memory_mb)):
            raise InsufficientCapacity(f"target node {p.target} no longer has room for the VM")
        claimed: dict[str, Any] = {"node": p.target, "vcpus": p.vcpus, "memory_mb": p.memory_mb}
        vfs = _claim_vfs(conn, ctx, _vm_in(conn, ctx))
        if vfs:
            claimed["vfs"] = vfs
        return {"claimed": claimed}

    def _release(self, conn: Connection, ctx: Ctx) -> None:
        p = ctx.params
        nodes.release(conn, p.target, p.vcpus, p.memory_mb)
        sriov_nics.release_claims(conn, ctx.task.vm_uuid or "", p.target, ctx.task.id)

    async def _live(self, ctx: Ctx) -> dict[str, Any]:
        return await self._transfer(ctx, live=True)

    async def _move(self, ctx: Ctx) -> dict[str, Any]:
        return await self._transfer(ctx, live=False)

    async def _transfer(self, ctx: Ctx, *, live: bool) -> dict[str, Any]:
        p = ctx.params
        if "migrate" not in await ctx.sent_commands():
            # Checked before the transfer starts; a resumed step follows the one it started.
            await self._target_ready(ctx)
        timeout = float(await ctx.setting("migration.timeout"))
        args: dict[str, Any] = {"target": p.target, "live": live, "new_epoch": p.epoch + 1}
        # The VM's NICs as the target is to have them: each SR-IOV NIC on the VF claimed there.
        args["nics"] = await ctx.read(lambda conn: _nics_on_target(conn, ctx))
        endpoint = await ctx.read(lambda conn: nodes.get(conn, p.target).migration_endpoint)
        if endpoint is not None:  # how the source's hypervisor reaches the target's
            args["target_endpoint"] = endpoint
        try:
            result = await with_progress(
                ctx,
                "migrate",
                ctx.command(
                    "migrate",
                    p.source,
                    CommandType.MIGRATE,
                    args,
                    vm_uuid=ctx.task.vm_uuid,
                    epoch=p.epoch,
                    timeout=timeout,
                ),
            )
            return {"moved": True, "vm": result.get("vm")}
        except _UNCERTAIN as exc:
            failure = exc.message
        # Not failed blindly: where is the VM?
        where = await self._where(ctx, live=live)
        if where.where is Where.TARGET:
            await ctx.note("migration.found", f"the VM is on {p.target} ({failure})")
            await self._drop_leftover(ctx, p.source, where.source, p.epoch)
            return {"moved": True, "recovered_from": failure}
        if where.where is Where.SOURCE:
            await self._drop_leftover(ctx, p.target, where.target, p.epoch + 1)
            cancelled = await ctx.cancel_requested()
            if live and p.method == "default" and not p.force_live and not cancelled:
                await ctx.note(
                    "migration.fallback",
                    f"live migration failed ({failure}); falling back to a shutdown migration",
                )
                return {"moved": False, "fallback": True, "live_error": failure}
            raise StepFailed(f"migration failed: {failure}; the VM is still on {p.source}")
        if where.where is Where.NEITHER:
            await self._lost(ctx, where, failure)
            raise StepFailed(f"the VM runs on neither host after the migration ({failure})")
        raise StepFailed(
            f"migration outcome unknown ({failure}); where the VM runs is {where.where.value}"
        )

    async def _stop(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        grace = p.shutdown_timeout or ctx.timeouts.shutdown
        return await with_locks(ctx, "shutdown", p.source, CommandType.SHUTDOWN, p.epoch,
                                {"timeout": grace}, timeout=grace + 30)  # fmt: skip

    def _commit(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        vm = _vm_in(conn, ctx)
        previous = None
        if p.mode == "migrate":
            previous = vm.previous_node or p.source
            if previous == p.target:
                previous = None
        # Lock order: nodes, then VFs, then VMs (as a create claims them).
        nodes.release(conn, p.source, p.vcpus, p.memory_mb)
        sriov_nics.commit_move(conn, vm.uuid, p.source, p.target)
        if not vms.move_owner(
            conn, vm.uuid, source=p.source, target=p.target, epoch=p.epoch,
            previous_node=previous, now=ctx.clock.now(),
        ):  # fmt: skip
            raise Conflict(f"VM {vm.name} changed owner or epoch during the migration")
        live = ctx.results.get("live_migrate") or {}
        how = " by a shutdown migration (live migration failed)" if live.get("fallback") else ""
        ctx.event(
            conn, "vm.migrated",
            f"{vm.name} now belongs to {p.target} (from {p.source}){how}, epoch {p.epoch + 1}",
            node=p.target, source=p.source, epoch=p.epoch + 1, fallback=bool(live.get("fallback")),
        )  # fmt: skip
        return {"owner": p.target, "epoch": p.epoch + 1, "previous_node": previous}

    async def _locks(
        self, ctx: Ctx, node: str, epoch: int, breakable: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        uuid = ctx.task.vm_uuid or ""
        return await ctx.read(
            lambda conn: vm_disks.lock_args(conn, uuid, node, epoch, breakable=breakable)
        )

    async def _start_on_target(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        return await with_locks(ctx, "start", p.target, CommandType.START, p.epoch + 1)

    async def _hand_over_locks(self, ctx: Ctx) -> dict[str, Any]:
        """The VM runs on the target now: the target takes its shared volumes' locks over
        from the source (a start of a running VM changes nothing else)."""
        p = ctx.params
        locks = await self._locks(ctx, p.target, p.epoch + 1, breakable=(p.source,))
        if locks is None:
            return {"locks": "none"}
        return await ctx.command(
            "locks", p.target, CommandType.START, {"locks": locks},
            vm_uuid=ctx.task.vm_uuid, epoch=p.epoch + 1,
        )  # fmt: skip

    # -- rollback ---------------------------------------------------------------------------

    async def _undo_move(self, ctx: Ctx) -> None:
        """Make sure the VM is on the source and nothing of it is left on the target."""
        p = ctx.params
        if "migrate" not in await ctx.sent_commands():
            return  # the step stopped before it sent the migration: nothing moved
        live = ctx.step_name == "live_migrate"
        where = await self._where(ctx, live=live)
        if where.where is Where.SOURCE:
            await self._drop_leftover(ctx, p.target, where.target, p.epoch + 1)
            return
        if where.where is Where.NEITHER:
            if not (await ctx.result()).get("lost"):
                await self._lost(ctx, where, "found on neither host while rolling back")
            await self._drop_leftover(ctx, p.target, where.target, p.epoch + 1)
            return
        raise StepFailed(
            f"cannot roll back: the VM is on {where.where.value} host(s), not only on {p.source}"
        )

    async def _restart_on_source(self, ctx: Ctx) -> None:
        p = ctx.params
        answer = await ctx.inspect(p.source, ctx.task.vm_uuid or "")
        if answer is None:
            raise StepFailed(f"source node {p.source} does not answer")
        if answer.vm is not None and answer.vm.power is not PowerState.RUNNING:
            await with_locks(ctx, "undo-stop", p.source, CommandType.START, p.epoch)

    # -- helpers ------------------------------------------------------------------------------

    async def _where(self, ctx: Ctx, *, live: bool) -> Location:
        p = ctx.params
        timeout = float(await ctx.setting("migration.timeout"))
        return await locate(
            ctx, ctx.task.vm_uuid or "", p.source, p.target,
            live=live, new_epoch=p.epoch + 1, deadline=ctx.deadline(timeout),
        )  # fmt: skip

    async def _drop_leftover(self, ctx: Ctx, node: str, copy: Any, epoch: int) -> None:
        """Remove a host's leftover definition of the VM (a failed or half-cleaned migration)."""
        if copy is None:
            return
        await ctx.command(
            f"drop-leftover-{node}", node, CommandType.UNDEFINE, {"force": True},
            vm_uuid=ctx.task.vm_uuid, epoch=max(epoch, copy.epoch), cancellable=False,
        )  # fmt: skip
        await ctx.note("migration.cleanup", f"removed the leftover definition on {node}", node=node)

    async def _lost(self, ctx: Ctx, where: Location, failure: str) -> None:
        """The VM runs on neither host: ERROR, an event, and per its policy a start on its owner."""
        p = ctx.params
        vm = await ctx.vm()
        restarted = False
        if vm.on_lost == "start" and where.source is not None:
            try:
                await ctx.command(
                    "lost-start", p.source, CommandType.START,
                    vm_uuid=vm.uuid, epoch=p.epoch, cancellable=False,
                )  # fmt: skip
                restarted = True
            except BollardError as exc:
                failure += f"; the start on {p.source} failed: {exc.message}"
        message = f"VM {vm.name} runs on neither {p.source} nor {p.target} ({failure})"
        if restarted:
            message += f"; started on its owner {p.source} (on_lost: start)"

        def tx(conn: Connection) -> None:
            task = tasks.get(conn, ctx.task.id)
            tasks.set_result(
                conn, ctx.task.id, {**task.result, "lost": True, "restarted": restarted}
            )
            ctx.event(conn, "vm.lost", message, node=p.source)

        await ctx.write(tx)

    # -- end ------------------------------------------------------------------------------------

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        finish_result(conn, ctx, succeeded=True)
        fallback = bool((ctx.results.get("live_migrate") or {}).get("fallback"))
        extra = {"type": MigrationType.MIGRATION.value} if fallback else {}
        end_migration(conn, ctx, MigrationStatus.COMPLETED, **extra)
        end_vm_task(
            conn, ctx, vm_state=VmState.ACTIVE if ctx.params.was_running else VmState.STOPPED
        )

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        finish_result(conn, ctx, succeeded=False)
        task = tasks.get(conn, ctx.task.id, with_steps=True)
        done = {s.name for s in task.steps if s.state == "done"}
        moved = "commit" in done
        end_migration(
            conn, ctx, MigrationStatus.ERROR if moved or task.result.get("lost") else
            MigrationStatus.FAILED, error,
        )  # fmt: skip
        if task.result.get("lost"):
            state = VmState.ACTIVE if task.result.get("restarted") else VmState.ERROR
            if "neither" not in error:
                error += "; the VM was then found running on neither host"
            end_vm_task(conn, ctx, vm_state=state, fault=error)
            return
        done = {s.name for s in task.steps if s.state == "done"}
        if "commit" in done and "start" not in done and ctx.params.was_running:
            # Moved by shutdown and committed, but not started on the target.
            end_vm_task(conn, ctx, vm_state=VmState.STOPPED, fault=error)
            return
        fail_vm_task(conn, ctx, error)


# -- SR-IOV -------------------------------------------------------------------------------------


def _vm_in(conn: Connection, ctx: Ctx) -> Vm:
    vm = vms.find_by_uuid(conn, ctx.task.vm_uuid or "")
    if vm is None:
        raise Conflict(f"VM {ctx.task.vm_name} was removed during the migration")
    return vm


def _claim_vfs(conn: Connection, ctx: Ctx, vm: Vm) -> list[str]:
    """Claim a VF of the target for each SR-IOV NIC of the VM, with the task
    (`sriov_moves.claim_on`: InsufficientCapacity naming the physical network a NIC finds
    no free VF on, and the caller's transaction rolls back); the PCI addresses claimed."""
    p = ctx.params
    if not sriov_nics.has_sriov(vm):
        return []
    sriov_moves.claim_on(conn, vm.uuid, p.target, vm.nics, ctx.clock.now(), ctx.task.id)
    return [v.pci for v in sriov.holders(conn, vm.uuid) if v.node == p.target]


def _nics_on_target(conn: Connection, ctx: Ctx) -> list[dict[str, Any]]:
    """The `migrate` command's NICs: the VM's, each SR-IOV NIC with the VF it holds on the
    target (`sriov_nics.with_vfs`: Conflict if the claim is gone)."""
    vm = _vm_in(conn, ctx)
    return sriov_nics.with_vfs(conn, vm.uuid, ctx.params.target, nic_args(vm.nics))
