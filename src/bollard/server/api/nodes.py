"""/api/v1/nodes"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bollard.server.api.deps import NodeAdminDep, NodeOpsDep, WorkDep
from bollard.server.api.node_schemas import (
    AllocationOut,
    NodeCreate,
    NodeCreated,
    NodeOut,
    NodePage,
)
from bollard.server.api.node_shutdown import shutdown_setting
from bollard.server.api.power import power_config
from bollard.server.api.schemas import Name
from bollard.store import migrations_log, nodes, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/nodes", tags=["nodes"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


@router.post("", status_code=201, response_model=NodeCreated)
async def add_node(body: NodeCreate, node_ops: NodeOpsDep) -> NodeCreated:
    """Enroll a node; the answer holds the agent's token, shown only this once."""
    power = power_config(body.power) if body.power is not None else None
    node, token = await node_ops.enroll(body.name, power)
    return NodeCreated(node=NodeOut.of(node), token=token)


@router.get("", response_model=NodePage)
async def list_nodes(
    work: WorkDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> NodePage:
    def tx() -> NodePage:
        with work.read() as conn:
            page = nodes.list_page(conn, limit=limit, cursor=cursor)
            policy = shutdown_setting(conn)
        return NodePage(
            items=[NodeOut.of(n, shutdown_default=policy) for n in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{name}", response_model=NodeOut)
async def show_node(name: Name, work: WorkDep) -> NodeOut:
    def tx() -> NodeOut:
        with work.read() as conn:
            out = NodeOut.of(nodes.get(conn, name), shutdown_default=shutdown_setting(conn))
            items = [
                AllocationOut(consumer="vm", vm=v.name, vcpus=v.vcpus, memory_mb=v.memory_mb)
                for v in vms.on_node(conn, name)
            ]
            for m in migrations_log.holds_on(conn, name):
                assert m.source_hold is not None
                items.append(
                    AllocationOut(
                        consumer="migration", vm=m.vm_name, migration_id=m.id,
                        vcpus=m.source_hold.vcpus, memory_mb=m.source_hold.memory_mb,
                    )
                )  # fmt: skip
            return out.model_copy(update={"allocations": items})

    return await work.run(tx)


# -- removing a node, rotating its agent's token (operations/node_admin.py) ------------------


Force = Annotated[
    bool,
    Query(
        description="Delete it even if its agent is connected or its host still reports VMs "
        "(never while it owns VMs)."
    ),
]
Disconnect = Annotated[
    bool,
    Query(
        description="Close its agent's session now (default: keep it; the agent's next "
        "connection needs the new token)."
    ),
]


class NodeDeleted(BaseModel):
    name: str
    forced: bool
    session_closed: bool = Field(description="Its agent's session on this server was closed.")
    forgotten_vms: list[str] = Field(description="VMs its host still reported (forced).")
    commands_ended: int = Field(description="Commands still open to it, now ended.")


class NodeTokenRotated(BaseModel):
    node: str
    token: str = Field(description="The new agent token: shown only this once.")
    session: str = Field(description="none (not connected here), kept or closed.")


@router.delete("/{name}", response_model=NodeDeleted)
async def delete_node(
    name: Name,
    node_admin: NodeAdminDep,
    force: Force = False,
) -> NodeDeleted:
    """Remove a node and its agent token. Refused while it owns VMs or takes part in an
    unfinished task; without `force` also while its agent is connected or its host reports VMs."""
    done = await node_admin.delete(name, force=force)
    return NodeDeleted(
        name=done.name,
        forced=done.forced,
        session_closed=done.session_closed,
        forgotten_vms=done.forgotten_vms,
        commands_ended=done.commands_ended,
    )


@router.post("/{name}/token", response_model=NodeTokenRotated)
async def rotate_node_token(
    name: Name,
    node_admin: NodeAdminDep,
    disconnect: Disconnect = False,
) -> NodeTokenRotated:
    """A new agent token for the node; the old one is refused from now on."""
    done = await node_admin.rotate_token(name, disconnect=disconnect)
    return NodeTokenRotated(node=done.node, token=done.token, session=done.session)
