"""/api/v1/nodes/{name}/power, confirm-down, flush and unflush, and /api/v1/cluster/maintenance."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from bollard.power import PowerStatus
from bollard.server.api.deps import NodeOpsDep
from bollard.server.api.schemas import NodeOut, PowerSettings, TaskOut
from bollard.server.operations.node_ops import PowerConfig

router = APIRouter(tags=["power"])


class PowerAnswer(BaseModel):
    node: str
    action: str
    status: PowerStatus | None = None
    detail: str = ""


class MaintenanceOut(BaseModel):
    maintenance: bool


class MaintenanceIn(BaseModel):
    maintenance: bool


def power_config(body: PowerSettings) -> PowerConfig:
    return PowerConfig(
        driver=body.driver, address=body.address, username=body.username, password=body.password
    )


@router.put("/nodes/{name}/power", response_model=NodeOut)
async def set_power(name: str, body: PowerSettings, node_ops: NodeOpsDep) -> NodeOut:
    """Set the node's power (fencing) driver, address and credentials; they are tested."""
    return NodeOut.of(await node_ops.set_power(name, power_config(body)))


@router.post("/nodes/{name}/power/{action}", response_model=PowerAnswer)
async def power_action(
    name: str, action: Literal["status", "on", "off", "cycle", "test"], node_ops: NodeOpsDep
) -> PowerAnswer:
    """Operate a node's power: status, on, off, cycle (off then on), or test (no action)."""
    if action == "test":
        return PowerAnswer(node=name, action="test", detail=await node_ops.power_test(name))
    status = await node_ops.power_action(name, action)
    return PowerAnswer(node=name, action=action, status=status)


@router.post("/nodes/{name}/confirm-down", response_model=TaskOut)
async def confirm_down(name: str, node_ops: NodeOpsDep) -> TaskOut:
    """The operator vouches that the node is off: it counts as fenced and its HA VMs are
    restarted elsewhere. Use only when you know it: a VM could otherwise run twice."""
    return TaskOut.of(await node_ops.confirm_down(name))


@router.get("/cluster/maintenance", response_model=MaintenanceOut)
async def get_maintenance(node_ops: NodeOpsDep) -> MaintenanceOut:
    return MaintenanceOut(maintenance=await node_ops.maintenance())


@router.put("/cluster/maintenance", response_model=MaintenanceOut)
async def set_maintenance(body: MaintenanceIn, node_ops: NodeOpsDep) -> MaintenanceOut:
    """Maintenance mode suspends fencing and recovery (nodes still go suspect and dead)."""
    return MaintenanceOut(maintenance=await node_ops.set_maintenance(body.maintenance))


@router.post("/nodes/{name}/flush", status_code=202, response_model=TaskOut)
async def flush_node(name: str, node_ops: NodeOpsDep) -> TaskOut:
    """Move every VM off the node (a few at a time); it ends `flushed` and gets no new VMs.
    VMs that cannot move are shut down with autostart. An unflush under way is stopped."""
    return TaskOut.of(await node_ops.flush(name))


@router.post("/nodes/{name}/unflush", status_code=202, response_model=TaskOut)
async def unflush_node(name: str, node_ops: NodeOpsDep) -> TaskOut:
    """Bring back the VMs migrated away from the node, start those marked autostart, and make
    it `ready`. A flush under way is stopped."""
    return TaskOut.of(await node_ops.unflush(name))
