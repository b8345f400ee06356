"""/api/v1/pools: storage pools (domain/storage.py, operations/pool_ops.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy import Connection

from bollard.domain.storage import POOL_NAME, Pool, PoolType
from bollard.server.api.deps import PoolOpsDep, WorkDep
from bollard.server.api.storage_schemas import PoolCreate, PoolOut, PoolPage, PoolUpdate
from bollard.store import pools

router = APIRouter(prefix="/pools", tags=["storage"])

PoolPath = Annotated[str, Path(pattern=POOL_NAME, description="The pool's name.")]


def pool_out(conn: Connection, pool: Pool) -> PoolOut:
    usage = pools.usage(conn).get(pool.name, (0, 0))
    return PoolOut.of(pool, usage, pools.hosts(conn, pool.name))


@router.post("", status_code=201, response_model=PoolOut)
async def create_pool(body: PoolCreate, pool_ops: PoolOpsDep, work: WorkDep) -> PoolOut:
    """Define a pool. Its hosts make its directory (and libvirt's dir pool) on first use and
    report its room to the server within seconds (`GET /pools/{name}` shows it per host)."""
    pool = await pool_ops.create(
        body.name, PoolType(body.type), body.path, body.nodes, body.description
    )
    return await _show(work, pool.name)


@router.get("", response_model=PoolPage)
async def list_pools(work: WorkDep) -> PoolPage:
    def tx() -> PoolPage:
        with work.read() as conn:
            usage = pools.usage(conn)
            hosts = pools.hosts(conn)
            items = [
                PoolOut.of(p, usage.get(p.name, (0, 0)), [h for h in hosts if h.pool == p.name])
                for p in pools.list_all(conn)
            ]
        return PoolPage(items=items, total=len(items))

    return await work.run(tx)


async def _show(work: WorkDep, name: str) -> PoolOut:
    def tx() -> PoolOut:
        with work.read() as conn:
            return pool_out(conn, pools.get(conn, name))

    return await work.run(tx)


@router.get("/{name}", response_model=PoolOut)
async def show_pool(name: PoolPath, work: WorkDep) -> PoolOut:
    return await _show(work, name)


@router.patch("/{name}", response_model=PoolOut)
async def update_pool(
    name: PoolPath, body: PoolUpdate, pool_ops: PoolOpsDep, work: WorkDep
) -> PoolOut:
    """Change the nodes that see the pool (null: every node) or its description. A host
    that has one of its volumes (or runs a VM using one) cannot be dropped."""
    changes = body.model_dump(exclude_unset=True)
    if "nodes" in changes:
        await pool_ops.update(name, node_names=changes["nodes"])
    if "description" in changes:
        await pool_ops.update(name, description=changes["description"])
    return await _show(work, name)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_pool(name: PoolPath, pool_ops: PoolOpsDep) -> Response:
    """Forget a pool that holds no volume (409 naming some otherwise). Its files on the
    hosts are left as they are."""
    await pool_ops.delete(name)
    return Response(status_code=204)
