"""PATCH /api/v1/nodes/{name}: a node's own settings; today its shutdown policy (what a clean
shutdown or reboot of its host does, server/health/shutdown.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput
from bollard.domain.ha import ShutdownPolicy
from bollard.server.api.deps import ClockDep, WorkDep
from bollard.server.api.node_schemas import NodeOut
from bollard.server.api.schemas import Name
from bollard.server.ports import UnitOfWork
from bollard.server.settings import stored_value
from bollard.store import events, nodes
from bollard.store import settings as stored_settings

router = APIRouter(prefix="/nodes", tags=["nodes"])

SETTING = "ha.shutdown_policy"


def shutdown_setting(conn: Connection) -> str:
    """The setting ha.shutdown_policy (the policy of nodes without one of their own)."""
    return str(stored_value(SETTING, stored_settings.get(conn, SETTING)))


class NodeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shutdown_policy: ShutdownPolicy | None = Field(
        default=None,
        description="What a clean shutdown or reboot of its host does: freeze (its VMs wait, "
        "no fence, no recovery), failover (fenced and recovered once it reads off), migrate "
        "(drained first, back afterwards), conditional (freeze on a reboot, failover on a "
        "power-off); null: the setting ha.shutdown_policy.",
    )


@router.patch("/{name}", response_model=NodeOut)
async def change_node(name: Name, body: NodeChange, work: WorkDep, clock: ClockDep) -> NodeOut:
    """Change a node's own settings (only the fields given)."""
    if "shutdown_policy" not in body.model_fields_set:
        raise InvalidInput("nothing to change: give shutdown_policy (null: the setting)")
    policy = None if body.shutdown_policy is None else body.shutdown_policy.value
    return await work.run(_set_policy, work, clock.now(), name, policy)


def _set_policy(work: UnitOfWork, now: datetime, name: str, policy: str | None) -> NodeOut:
    with work.write() as conn:
        before = nodes.get(conn, name)
        setting = shutdown_setting(conn)
        if before.shutdown_policy != policy:
            nodes.set_shutdown_policy(conn, name, policy, now)
            shown = policy or f"the setting ({setting})"
            events.add(conn, "node.shutdown_policy",
                       f"node {name}: shutdown policy {before.shutdown_policy or 'the setting'} "
                       f"-> {shown}", now, node=name,
                       data={"old": before.shutdown_policy, "new": policy})  # fmt: skip
        return NodeOut.of(nodes.get(conn, name), shutdown_default=setting)
