"""Relocating an HA VM whose start failed on its node (reconcile/ha_restarts.py): the
migration's steps for a stopped VM (check, claim, move, commit), then a start on the target.

It is a cold move (the VM is not running) to the node the scheduler chose among those it has
not failed on, followed by a start there. Before the commit a failure rolls the move back (the
VM stays, stopped, on its node); after it the VM is the target's: a start that fails there
leaves it stopped on the target with the fault, and the state reconciler counts that as a
failed start on the target (retry there, or relocate again, or the HA error state).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Connection

from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Task
from bollard.domain.states import VmState
from bollard.server.tasks.flow import StepDef
from bollard.server.tasks.flows.common import end_migration, end_vm_task
from bollard.server.tasks.flows.migrate import Ctx, MigrateFlow
from bollard.server.tasks.flows.migrate_progress import finish_result
from bollard.server.tasks.params import MigrateParams
from bollard.store import tasks

TYPE = "ha_relocate"


class HaRelocateParams(MigrateParams):
    """A migration's parameters (mode move, method shutdown, was_running false), and the
    nodes its start had failed on (excluded from the placement; kept for the record)."""

    failed_on: tuple[str, ...] = ()


def _always(ctx: Ctx) -> bool:
    return True


class HaRelocateFlow(MigrateFlow):
    type = TYPE
    params_model = HaRelocateParams

    def steps(self, task: Task) -> list[StepDef]:
        # The migration's steps; its start on the target (after the commit, a target briefly
        # away waited for) always runs: the VM is relocated to run there.
        return [replace(s, when=_always) if s.name == "start" else s for s in super().steps(task)]

    def succeed(self, conn: Connection, ctx: Ctx) -> None:
        finish_result(conn, ctx, succeeded=True)
        end_migration(conn, ctx, MigrationStatus.COMPLETED)
        end_vm_task(conn, ctx, vm_state=VmState.ACTIVE)

    def fail(self, conn: Connection, ctx: Ctx, error: str) -> None:
        task = tasks.get(conn, ctx.task.id, with_steps=True)
        done = {s.name for s in task.steps if s.state == "done"}
        if "commit" not in done or task.result.get("lost"):
            super().fail(conn, ctx, error)  # rolled back: still on its node, stopped
            return
        # Moved, not started: the target's now, stopped, with the start's error.
        finish_result(conn, ctx, succeeded=False)
        end_migration(conn, ctx, MigrationStatus.ERROR, error)
        end_vm_task(conn, ctx, vm_state=VmState.STOPPED, fault=f"relocated, then {error}")
