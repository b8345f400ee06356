"""/api/v1/nodes/{name}/power, confirm-down, and /api/v1/cluster/maintenance."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from bollard.domain.errors import BollardError, InvalidInput, InvalidState
from bollard.domain.ids import new_id
from bollard.domain.states import NodeHealth
from bollard.power import PowerStatus
from bollard.server.api.deps import RuntimeDep
from bollard.server.api.schemas import NodeOut, PowerSettings, TaskOut
from bollard.server.health.power import driver_for
from bollard.server.runtime import Runtime
from bollard.store import events, nodes

log = logging.getLogger(__name__)

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


def store_power(rt: Runtime, name: str, body: PowerSettings) -> NodeOut:
    """Set (or, with driver null, remove) a node's power driver; credentials are sealed."""
    if body.driver is not None and not body.address:
        raise InvalidInput("power.address: needed with a power driver")
    secret = None
    if body.username is not None or body.password is not None:
        secret = rt.secrets.seal({"username": body.username or "", "password": body.password or ""})
    now = rt.clock.now()
    with rt.db.write() as conn:
        nodes.get(conn, name)  # 404 for an unknown node
        if body.driver is not None and secret is None:
            secret = nodes.power_secret(conn, name)  # keep the stored credentials
        nodes.set_power(
            conn, name, driver=body.driver, address=body.address if body.driver else None,
            secret=secret if body.driver else None, now=now,
        )  # fmt: skip
        events.add(conn, "node.power", f"node {name}: power driver {body.driver or 'removed'}"
                   + (f" at {body.address}" if body.driver else ""), now, node=name)  # fmt: skip
        return NodeOut.of(nodes.get(conn, name))


async def power_test(rt: Runtime, name: str) -> PowerAnswer:
    """Check the driver and credentials without acting; a failure is also an event."""
    try:
        driver = await rt.db_call(driver_for, rt, name)
        detail = await driver.test(float(await rt.db_call(rt.settings.get, "fencing.timeout")))
    except BollardError as exc:
        await rt.db_call(_warn, rt, name, f"power test of {name} failed: {exc.message}")
        raise
    return PowerAnswer(node=name, action="test", detail=detail)


def _warn(rt: Runtime, name: str, message: str) -> None:
    with rt.db.write() as conn:
        events.add(conn, "node.power_test_failed", message, rt.clock.now(), node=name)


@router.put("/nodes/{name}/power", response_model=NodeOut)
async def set_power(name: str, body: PowerSettings, rt: RuntimeDep) -> NodeOut:
    """Set the node's power (fencing) driver, address and credentials; they are tested."""
    node = await rt.db_call(store_power, rt, name, body)
    if body.driver is not None:
        try:
            await power_test(rt, name)
        except BollardError as exc:
            log.warning("node %s: power test failed: %s", name, exc.message)
    return node


@router.post("/nodes/{name}/power/{action}", response_model=PowerAnswer)
async def power_action(
    name: str, action: Literal["status", "on", "off", "cycle", "test"], rt: RuntimeDep
) -> PowerAnswer:
    """Operate a node's power: status, on, off, cycle (off then on), or test (no action)."""
    if action == "test":
        return await power_test(rt, name)
    driver = await rt.db_call(driver_for, rt, name)
    timeout = float(await rt.db_call(rt.settings.get, "fencing.timeout"))
    if action in ("off", "cycle"):
        await driver.power_off(timeout)
    if action in ("on", "cycle"):
        await driver.power_on(timeout)
    if action != "status":
        await rt.db_call(_note, rt, name, f"node {name}: power {action} by an operator")
    return PowerAnswer(node=name, action=action, status=await driver.status(timeout))


def _note(rt: Runtime, name: str, message: str) -> None:
    with rt.db.write() as conn:
        events.add(conn, "node.power_action", message, rt.clock.now(), node=name)


@router.post("/nodes/{name}/confirm-down", response_model=TaskOut)
async def confirm_down(name: str, rt: RuntimeDep) -> TaskOut:
    """The operator vouches that the node is off: it counts as fenced and its HA VMs are
    restarted elsewhere. Use only when you know it: a VM could otherwise run twice."""

    def tx() -> TaskOut:
        now = rt.clock.now()
        with rt.db.write() as conn:
            node = nodes.get(conn, name)
            if node.health not in (NodeHealth.DEAD, NodeHealth.FENCE_FAILED, NodeHealth.SUSPECT):
                raise InvalidState(
                    f"node {name} is {node.health}; confirm-down is for a dead node, or one "
                    "whose fence failed"
                )
            nodes.set_health(conn, name, NodeHealth.FENCED, now, expect=node.health)
            events.add(conn, "node.confirmed_down",
                       f"node {name} confirmed down by an operator (was {node.health})",
                       now, node=name)  # fmt: skip
            task_id = new_id()
            task = rt.engine.create_in(
                conn, id=task_id, type="recover", vm_uuid=None, vm_name=None, node=name, params={}
            )
            return TaskOut.of(task)

    task = await rt.db_call(tx)
    rt.engine.launch(task.id)
    rt.event_bus.touch()
    return task


@router.get("/cluster/maintenance", response_model=MaintenanceOut)
async def get_maintenance(rt: RuntimeDep) -> MaintenanceOut:
    return MaintenanceOut(
        maintenance=bool(await rt.db_call(rt.settings.get, "cluster.maintenance"))
    )


@router.put("/cluster/maintenance", response_model=MaintenanceOut)
async def set_maintenance(body: MaintenanceIn, rt: RuntimeDep) -> MaintenanceOut:
    """Maintenance mode suspends fencing and recovery (nodes still go suspect and dead)."""
    await rt.db_call(rt.settings.set, "cluster.maintenance", body.maintenance)

    def note() -> None:
        with rt.db.write() as conn:
            state = "on" if body.maintenance else "off"
            events.add(conn, "cluster.maintenance", f"maintenance mode {state}", rt.clock.now())

    await rt.db_call(note)
    rt.monitor.kick()
    return MaintenanceOut(maintenance=body.maintenance)


@router.post("/nodes/{name}/flush", status_code=202, response_model=TaskOut)
async def flush_node(name: str, rt: RuntimeDep) -> TaskOut:
    """Move every VM off the node (a few at a time); it ends `flushed` and gets no new VMs.
    VMs that cannot move are shut down with autostart. An unflush under way is stopped."""
    return TaskOut.of(await rt.drain_ops.request(name, "flush"))


@router.post("/nodes/{name}/unflush", status_code=202, response_model=TaskOut)
async def unflush_node(name: str, rt: RuntimeDep) -> TaskOut:
    """Bring back the VMs migrated away from the node, start those marked autostart, and make
    it `ready`. A flush under way is stopped."""
    return TaskOut.of(await rt.drain_ops.request(name, "unflush"))
