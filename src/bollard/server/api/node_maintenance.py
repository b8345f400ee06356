"""/api/v1/nodes/{name}/maintenance: per-node maintenance on or off
(operations/maintenance_ops.py)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from bollard.server.api.deps import MaintenanceOpsDep
from bollard.server.api.schemas import Name, TaskOut

router = APIRouter(tags=["power"])


class NodeMaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: bool = Field(
        description="true: drain the node (as a flush does; VMs HA ignores stay) and never "
        "fence it while it is in maintenance; false: end it, bring its VMs back."
    )


@router.post("/nodes/{name}/maintenance", status_code=202, response_model=TaskOut)
async def node_maintenance(
    name: Name, body: NodeMaintenanceIn, maintenance_ops: MaintenanceOpsDep
) -> TaskOut:
    """Per-node maintenance. On: the node is drained (its VMs are moved away by the
    scheduler; ignored and HA-error VMs stay) and ends in the scheduling state
    `maintenance`; it is not fenced while it is in maintenance. Off: its VMs come back (an
    unflush) and it is ready again. Answers the drain task (`flush` or `unflush`); 409 if
    the node is already so, or busy with a plain flush."""
    return TaskOut.of(await maintenance_ops.request(name, body.on))
