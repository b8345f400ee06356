"""The `vf_set` task: an operator's change of one SR-IOV VF's runtime settings (VLAN, MAC,
rates, trust...), applied on its host by a journaled VF_SET command (issue 22).

Why a task and not a bare command: the command id is written with the step before it is
sent, so a server that dies while the host applies the change waits for that same command's
outcome when it resumes instead of sending another; and the operator follows it (and its
failure, in one line) like every other host action.

The store changes only at the task's successful end, in the transaction that ends it: the
settings asked for are merged into the VF's recorded (desired) settings, which the agent
re-applies at every start, and what the host read back becomes its `applied` settings. A
refused change (a PF or VF the host does not have, a value its device refuses) leaves the
store as it was, as it leaves the host.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import Connection

from bollard.domain.errors import NotFound
from bollard.domain.models import Task
from bollard.domain.sriov import SriovVf, VfSettings, vf_settings
from bollard.domain.states import CommandType
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.flow import RECONNECT_RETRY, StepDef
from bollard.server.tasks.params import TaskParams
from bollard.store import sriov, tasks

TYPE = "vf_set"


class VfSetParams(TaskParams):
    """Which VF of the task's node, and the settings to change (only the fields given)."""

    pf: str
    vf: int = Field(ge=0)
    settings: dict[str, Any]

    def change(self) -> VfSettings:
        return vf_settings(self.settings)

    def command_args(self) -> dict[str, Any]:
        """The VF_SET command's arguments (domain/states.py CommandType.VF_SET)."""
        return {"pf": self.pf, "vf": self.vf, "settings": self.change().given()}


def describe(params: VfSetParams) -> str:
    """`vlan=100 trust=on` (what the change sets, as the CLI's options say it)."""
    words = []
    for key, value in params.change().given().items():
        shown = ("on" if value else "off") if isinstance(value, bool) else value
        words.append(f"{key.replace('_', '-')}={shown}")
    return " ".join(words)


class VfSetFlow:
    type = TYPE
    params_model = VfSetParams

    def steps(self, task: Task) -> list[StepDef]:
        return [StepDef("apply", self._apply, retry=RECONNECT_RETRY)]

    async def _apply(self, ctx: StepContext[VfSetParams]) -> dict[str, Any]:
        node = ctx.task.node
        assert node is not None  # a vf_set task is always a node's (operations/sriov_ops.py)
        args = ctx.params.command_args()
        return await ctx.command("vf_set", node, CommandType.VF_SET, args)

    def succeed(self, conn: Connection, ctx: StepContext[VfSetParams]) -> None:
        p, node = ctx.params, ctx.task.node
        assert node is not None
        applied = _read_back(ctx.results.get("apply") or {})
        what = f"node {node}: PF {p.pf} VF {p.vf}"
        try:
            row = sriov.set_settings(conn, node, p.pf, p.vf, p.change(), applied=applied)
        except NotFound as exc:
            # Its host stopped reporting the VF meanwhile (its PF left the configuration):
            # applied there, but nothing is left here to record it on.
            ctx.event(conn, "node.vf_set", f"{what}: set ({describe(p)}), not recorded: {exc}",
                      node=node, pf=p.pf, vf=p.vf)  # fmt: skip
            return
        summary = f"{what}: {describe(p)}"
        task = tasks.get(conn, ctx.task.id)
        tasks.set_result(conn, ctx.task.id, {**task.result, "summary": summary,
                                             "applied": row.applied.given()})  # fmt: skip
        ctx.event(conn, "node.vf_set", summary, node=node, pf=p.pf, vf=p.vf,
                  settings=p.change().given(), applied=row.applied.given())  # fmt: skip

    def fail(self, conn: Connection, ctx: StepContext[VfSetParams], error: str) -> None:
        p, node = ctx.params, ctx.task.node
        ctx.event(conn, "node.vf_set_failed",
                  f"node {node}: PF {p.pf} VF {p.vf}: not set ({describe(p)}): {error}",
                  node=node, pf=p.pf, vf=p.vf, settings=p.change().given())  # fmt: skip


def _read_back(answer: dict[str, Any]) -> VfSettings | None:
    """The VF's settings as its host read them back after the change (None: the answer
    carries none, and the applied settings stay as the host last reported them)."""
    reported = answer.get("vf")
    if not isinstance(reported, dict):
        return None
    return SriovVf.model_validate(reported).settings


FLOWS = (VfSetFlow(),)
