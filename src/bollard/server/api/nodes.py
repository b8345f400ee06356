"""/api/v1/nodes"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from bollard.domain.errors import BollardError
from bollard.server.api.deps import RuntimeDep
from bollard.server.api.power import power_test, store_power
from bollard.server.api.schemas import NodeCreate, NodeCreated, NodeOut, NodePage
from bollard.server.auth import hash_token, new_token
from bollard.store import nodes
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

log = logging.getLogger(__name__)

router = APIRouter(prefix="/nodes", tags=["nodes"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


@router.post("", status_code=201, response_model=NodeCreated)
async def add_node(body: NodeCreate, rt: RuntimeDep) -> NodeCreated:
    """Enroll a node; the answer holds the agent's token, shown only this once."""
    token = new_token()

    def tx() -> NodeCreated:
        with rt.db.write() as conn:
            node = nodes.create(conn, body.name, hash_token(token), rt.clock.now())
        return NodeCreated(node=NodeOut.of(node), token=token)

    created = await rt.db_call(tx)
    if body.power is not None and body.power.driver is not None:
        created.node = await rt.db_call(store_power, rt, body.name, body.power)
        try:  # tested at enrollment; a failure is a warning event, not a refusal
            await power_test(rt, body.name)
        except BollardError as exc:
            log.warning("node %s: power test at enrollment failed: %s", body.name, exc.message)
    return created


@router.get("", response_model=NodePage)
async def list_nodes(
    rt: RuntimeDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> NodePage:
    def tx() -> NodePage:
        with rt.db.read() as conn:
            page = nodes.list_page(conn, limit=limit, cursor=cursor)
        return NodePage(
            items=[NodeOut.of(n) for n in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await rt.db_call(tx)


@router.get("/{name}", response_model=NodeOut)
async def show_node(name: str, rt: RuntimeDep) -> NodeOut:
    def tx() -> NodeOut:
        with rt.db.read() as conn:
            return NodeOut.of(nodes.get(conn, name))

    return await rt.db_call(tx)
