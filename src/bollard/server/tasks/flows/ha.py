"""Restarting an HA VM of a fenced node on another node.

place (claim a target chosen by the scheduler) → reown (owner and epoch change: the point of
no return) → define → start. A VM that fits nowhere is left stopped, marked autostart, with an
event; it is restarted when capacity returns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict
from bollard.domain.models import Task, disk_args, nic_args
from bollard.domain.scheduler import PlacementRequest, explain, parse_selector, select_target
from bollard.domain.states import CommandType, PowerState, TaskState, VmState
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.engine import StepDef
from bollard.server.tasks.flows.common import end_vm_task, fail_vm_task
from bollard.server.tasks.migrate_ops import node_facts
from bollard.store import nodes, vms


def _placed(ctx: StepContext) -> bool:
    return "target" in ctx.results.get("place", {})


def _starts(ctx: StepContext) -> bool:
    return _placed(ctx) and bool(ctx.params.get("start", True))


def _target(ctx: StepContext) -> str:
    return str(ctx.results["place"]["target"])


class HaRestartFlow:
    type = "ha_restart"

    def steps(self, task: Task) -> list[StepDef]:
        return [
            StepDef("place", tx=self._place),
            StepDef("reown", tx=self._reown, when=_placed, commit_point=True),
            StepDef("define", self._define, when=_placed),
            StepDef("start", self._start, when=_starts),
        ]

    def _place(self, conn: Connection, ctx: StepContext) -> dict[str, Any]:
        p = ctx.params
        vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
        settings = {
            k: ctx.rt.settings.get(k)
            for k in ("scheduler.selector", "scheduler.vcpu_allocation_ratio")
        }
        request = PlacementRequest(
            vcpus=vm.vcpus,
            memory_mb=vm.memory_mb,
            exclude=frozenset({p["from"]}),
            node_limit=vm.node_limit,
            selector=parse_selector(vm.node_selector) if vm.node_selector else None,
            current_node=p["from"],
        )
        decision = select_target(
            node_facts(conn),
            request,
            vcpu_allocation_ratio=float(settings["scheduler.vcpu_allocation_ratio"]),
            default_selector=parse_selector(str(settings["scheduler.selector"])),
        )
        if decision.chosen is None or not nodes.claim(
            conn, decision.chosen, vm.vcpus, vm.memory_mb
        ):
            ctx.event(conn, "vm.ha_deferred",
                      f"{vm.name} cannot be restarted now: {explain(decision)}; it will start when "
                      "capacity returns (autostart)")  # fmt: skip
            return {"deferred": explain(decision), "placement": decision.to_record()}
        vms.set_task_state(conn, vm.uuid, ctx.task.id, TaskState.SPAWNING, ctx.rt.clock.now())
        return {"target": decision.chosen, "placement": decision.to_record()}

    def _reown(self, conn: Connection, ctx: StepContext) -> dict[str, Any]:
        p = ctx.params
        target = _target(ctx)
        vm = vms.get_by_uuid(conn, ctx.task.vm_uuid or "")
        nodes.release(conn, p["from"], vm.vcpus, vm.memory_mb)
        if not vms.move_owner(conn, vm.uuid, source=p["from"], target=target, epoch=p["epoch"],
                              previous_node=None, now=ctx.rt.clock.now()):  # fmt: skip
            raise Conflict(f"VM {vm.name} changed owner or epoch during its recovery")
        ctx.event(conn, "vm.recovered", f"{vm.name} now belongs to {target} (from fenced "
                  f"{p['from']}), epoch {p['epoch'] + 1}", node=target)  # fmt: skip
        return {"owner": target, "epoch": p["epoch"] + 1}

    async def _define(self, ctx: StepContext) -> dict[str, Any]:
        # The target creates the VM's local disks new and empty: their data died with the
        # fenced host. The NICs keep their MACs.
        vm = await ctx.vm()
        return await ctx.command(
            "define", _target(ctx), CommandType.DEFINE,
            {"name": vm.name, "vcpus": vm.vcpus, "memory_mb": vm.memory_mb,
             "disks": disk_args(vm.disks), "nics": nic_args(vm.nics)},
            vm_uuid=vm.uuid, epoch=vm.epoch,
        )  # fmt: skip

    async def _start(self, ctx: StepContext) -> dict[str, Any]:
        vm = await ctx.vm()
        await ctx.db(_powering_on, ctx)
        return await ctx.command(
            "start", _target(ctx), CommandType.START, vm_uuid=vm.uuid, epoch=vm.epoch
        )

    def succeed(self, conn: Connection, ctx: StepContext) -> None:
        now = ctx.rt.clock.now()
        uuid = ctx.task.vm_uuid or ""
        if not _placed(ctx):
            vms.set_autostart(conn, uuid, True, now)
            vms.observe_power_now(conn, uuid, PowerState.STOPPED, now)
            end_vm_task(
                conn, ctx, vm_state=VmState.STOPPED, fault="waiting for capacity (autostart)"
            )
            return
        vms.set_autostart(conn, uuid, False, now)
        end_vm_task(conn, ctx, vm_state=VmState.ACTIVE if _starts(ctx) else VmState.STOPPED)

    def fail(self, conn: Connection, ctx: StepContext, error: str) -> None:
        vms.set_autostart(conn, ctx.task.vm_uuid or "", True, ctx.rt.clock.now())
        fail_vm_task(conn, ctx, error)


def _powering_on(ctx: StepContext) -> None:
    with ctx.rt.db.write() as conn:
        vms.set_task_state(
            conn, ctx.task.vm_uuid or "", ctx.task.id, TaskState.POWERING_ON, ctx.rt.clock.now()
        )
