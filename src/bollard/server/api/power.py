"""/api/v1/nodes/{name}/power, confirm-down, flush and unflush, and /api/v1/cluster/maintenance."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bollard.power import PowerStatus
from bollard.server.api.deps import NodeOpsDep
from bollard.server.api.node_schemas import NodeOut, PowerOut, PowerSettings
from bollard.server.api.schemas import Name, TaskOut
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


class PowerTestOut(BaseModel):
    verified: bool = Field(description="Whether the driver's test passed before it was stored.")
    detail: str = Field(description="What the test said (what answered, or why it failed).")


class PowerSetOut(NodeOut):
    power_test: PowerTestOut | None = Field(
        default=None, description="The test of the driver set (none when it was removed)."
    )


PowerSetOut.model_rebuild(_types_namespace={"PowerOut": PowerOut})


def power_config(body: PowerSettings) -> PowerConfig:
    return PowerConfig(
        driver=body.driver,
        address=body.address,
        username=body.username,
        password=body.password,
        store_untested=body.store_untested,
    )


@router.put("/nodes/{name}/power", response_model=PowerSetOut)
async def set_power(name: Name, body: PowerSettings, node_ops: NodeOpsDep) -> PowerSetOut:
    """Set the node's power (fencing) driver, address and credentials. They are tested
    first, then stored: a failed test stores nothing (422 `power-test-failed`, saying what
    the test said), unless `store_untested`, which stores them marked not verified."""
    node, tested = await node_ops.set_power(name, power_config(body))
    out = NodeOut.of(node).model_dump()
    if tested is not None:
        out["power_test"] = PowerTestOut(verified=tested.verified, detail=tested.detail)
    return PowerSetOut(**out)


@router.post("/nodes/{name}/power/{action}", response_model=PowerAnswer)
async def power_action(
    name: Name, action: Literal["status", "on", "off", "cycle", "test"], node_ops: NodeOpsDep
) -> PowerAnswer:
    """Operate a node's power: status, on, off, cycle (off then on), or test (no action)."""
    if action == "test":
        return PowerAnswer(node=name, action="test", detail=await node_ops.power_test(name))
    status = await node_ops.power_action(name, action)
    return PowerAnswer(node=name, action=action, status=status)


@router.post("/nodes/{name}/confirm-down", response_model=TaskOut)
async def confirm_down(name: Name, node_ops: NodeOpsDep) -> TaskOut:
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
async def flush_node(name: Name, node_ops: NodeOpsDep) -> TaskOut:
    """Move every VM off the node (a few at a time); it ends `flushed` and gets no new VMs.
    VMs that cannot move are shut down with autostart. An unflush under way is stopped."""
    return TaskOut.of(await node_ops.flush(name))


@router.post("/nodes/{name}/unflush", status_code=202, response_model=TaskOut)
async def unflush_node(name: Name, node_ops: NodeOpsDep) -> TaskOut:
    """Bring back the VMs migrated away from the node, start those marked autostart, and make
    it `ready`. A flush under way is stopped."""
    return TaskOut.of(await node_ops.unflush(name))
