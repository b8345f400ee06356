"""/api/v1/nodes"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bollard.server.api.deps import NodeOpsDep, WorkDep
from bollard.server.api.power import power_config
from bollard.server.api.schemas import NodeCreate, NodeCreated, NodeOut, NodePage
from bollard.store import nodes
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
        return NodePage(
            items=[NodeOut.of(n) for n in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{name}", response_model=NodeOut)
async def show_node(name: str, work: WorkDep) -> NodeOut:
    def tx() -> NodeOut:
        with work.read() as conn:
            return NodeOut.of(nodes.get(conn, name))

    return await work.run(tx)
