"""Restarting an HA VM of a fenced node on another node.

place (claim a target chosen by the scheduler) → reown (owner and epoch change: the point of
no return) → define → start. A VM that fits nowhere is left stopped, marked autostart, with an
event; it is restarted when capacity returns.

SR-IOV NICs (issue 22): the scheduler counts the target's free VFs, `place` claims them with
the task (its undo releases them and the target's room), `reown` makes them the VM's and
frees those it held on the fenced node; the target's DEFINE names the VFs claimed there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task, nic_args
from bollard.domain.scheduler import explain
from bollard.domain.states import CommandType, PowerState, TaskState, VmState
from bollard.server import scheduling, sriov_moves, sriov_nics, vm_disks
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, StepDef
from bollard.server.tasks.flows.common import (
    end_migration,
    end_vm_task,
    fail_vm_task,
    show_task_state,
)
from bollard.server.tasks.params import HaRestartParams
from bollard.store import migrations_log, nodes, tasks, vms

Ctx = StepContext[HaRestartParams]


def _placed(ctx: Ctx) -> bool:
    return "target" in ctx.results.get("place", {})


def _starts(ctx: Ctx) -> bool:
    return _placed(ctx) and ctx.params.start


def _target(ctx: Ctx) -> str:
    return str(ctx.results["place"]["target"])


class HaRestartFlow:
    type = "ha_restart"
    params_model = HaRestartParams

    def steps(self, task: Task) -> list[StepDef]:
        # Once reowned the VM is the target's: a target briefly away is waited for.
        return [
            StepDef("place", tx=self._place, undo_tx=self._unplace),
            StepDef("reown", tx=self._reown, when=_placed, commit_point=True),
            StepDef("define", self._define, when=_placed, retry=RECONNECT_RETRY),
            StepDef("start", self._start, when=_starts, retry=RECONNECT_RETRY),
        ]

    def _place(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
        request = scheduling.request_for_vm(conn, vm, leaving=p.source, vfs=True)
        settings = scheduling.read_settings(conn)
        decision = scheduling.place(conn, request, settings=settings)
        tasks.set_result(conn, ctx.task.id, {"placement": decision.to_record()})
        if decision.chosen is None or not scheduling.claim(
            conn, decision.chosen, request, settings=settings
        ):
            later = (
                "it will start when capacity returns (autostart)"
                if p.start
                else "it stays off on its fenced node"
            )
            why = explain(decision)
            ctx.event(conn, "vm.ha_deferred", f"{vm.name} cannot be restarted now: {why}; {later}")
            return {"deferred": explain(decision), "placement": decision.to_record()}
        now = ctx.clock.now()
        sriov_moves.claim_on(conn, vm.uuid, decision.chosen, vm.nics, now, ctx.task.id)
        record = migrations_log.of_task(conn, ctx.task.id)
        if record is not None:  # where it goes: its affinity partners' placements see it
            migrations_log.set_fields(conn, record.id, ctx.clock.now(), dest=decision.chosen)
        vms.set_task_state(conn, vm.uuid, ctx.task.id, TaskState.SPAWNING, now)
        return {"target": decision.chosen, "placement": decision.to_record()}

    def _unplace(self, conn: Connection, ctx: Ctx) -> None:
        """Undo of a placement (the reown failed): the target's room and the VFs this task
        claimed there are free again; the VM keeps what it held on its fenced node."""
        if not _placed(ctx):
            return
        target = _target(ctx)
        vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
        nodes.release(conn, target, vm.vcpus, vm.memory_mb)
        sriov_nics.release_claims(conn, vm.uuid, target, ctx.task.id)

    def _reown(self, conn: Connection, ctx: Ctx) -> dict[str, Any]:
        p = ctx.params
        target = _target(ctx)
        vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
        nodes.release(conn, p.source, vm.vcpus, vm.memory_mb)
        if not vms.move_owner(conn, vm.uuid, source=p.source, target=target, epoch=p.epoch,
                              previous_node=None, now=ctx.clock.now()):  # fmt: skip
            raise Conflict(f"VM {vm.name} changed owner or epoch during its recovery")
        # Its VFs: the target's claims are its own now, the fenced node's (and any other
        # node's, e.g. the source of a resize it waited to confirm there) are free.
        sriov_nics.commit_move(conn, vm.uuid, p.source, target)
        sriov_moves.keep_only(conn, vm.uuid, target)
        ctx.event(conn, "vm.recovered", f"{vm.name} now belongs to {target} (from fenced "
                  f"{p.source}), epoch {p.epoch + 1}", node=target)  # fmt: skip
        record = migrations_log.of_task(conn, ctx.task.id)
        if record is not None:
            migrations_log.set_fields(conn, record.id, ctx.clock.now(), dest=target)
        return {"owner": target, "epoch": p.epoch + 1}

    async def _define(self, ctx: Ctx) -> dict[str, Any]:
        # The target makes the VM's volumes of local pools new and empty: their data died
        # with the fenced host. Volumes of shared pools are used as they are. The NICs keep
        # their MACs.
        vm = await ctx.vm()
        disks = await ctx.read(lambda conn: vm_disks.define_args(conn, vm.uuid, remake_local=True))
        return await ctx.command(
            "define", _target(ctx), CommandType.DEFINE,
            {"name": vm.name, "vcpus": vm.vcpus, "memory_mb": vm.memory_mb,
             "disks": disks, "nics": nic_args(vm.nics)},
            vm_uuid=vm.uuid, epoch=vm.epoch,
        )  # fmt: skip

    async def _start(self, ctx: Ctx) -> dict[str, Any]:
        vm = await ctx.vm()
        await show_task_state(ctx, TaskState.POWERING_ON)
        # Its shared volumes' locks: the fenced host's are broken (its fence is confirmed).
        target = _target(ctx)
        locks = await ctx.read(lambda conn: vm_disks.lock_args(conn, vm.uuid, target, vm.epoch))
        args = {"locks": locks} if locks is not None else None
        return await ctx.command(
            "start", target, CommandType.START, args, vm_uuid=vm.uuid, epoch=vm.epoch
        )

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        now = ctx.clock.now()
        uuid = ctx.task.vm_uuid or ""
        if _placed(ctx):
            end_migration(conn, ctx, MigrationStatus.COMPLETED)
        else:
            deferred = str(ctx.results.get("place", {}).get("deferred") or "no node can take it")
            end_migration(conn, ctx, MigrationStatus.FAILED, f"not placed: {deferred}")
        if not _placed(ctx):
            vms.observe_power_now(conn, uuid, PowerState.STOPPED, now)
            if not ctx.params.start:  # meant to stay off: nothing to start when room returns
                end_vm_task(conn, ctx, vm_state=VmState.STOPPED,
                            fault=f"its node {ctx.params.source} was fenced and no node could "
                            "take it; it stays off there")  # fmt: skip
                return
            vms.set_autostart(conn, uuid, True, now)
            end_vm_task(
                conn, ctx, vm_state=VmState.STOPPED, fault="waiting for capacity (autostart)"
            )
            return
        vms.set_autostart(conn, uuid, False, now)
        end_vm_task(conn, ctx, vm_state=VmState.ACTIVE if _starts(ctx) else VmState.STOPPED)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        reowned = any(s.name == "reown" and s.state == "done" for s in ctx.task.steps)
        end_migration(conn, ctx, MigrationStatus.ERROR if reowned else MigrationStatus.FAILED,
                      error)  # fmt: skip
        if ctx.params.start:  # tried again when capacity returns; a VM meant off is not
            vms.set_autostart(conn, ctx.task.vm_uuid or "", True, ctx.clock.now())
        fail_vm_task(conn, ctx, error, desired=ctx.params.found_desired)
