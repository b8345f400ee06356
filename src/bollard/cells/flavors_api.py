"""/api/v1/flavors of the API server: kept in the API database, copied to every cell
(flavor_sync.py); a flavor's use is counted in the cells."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from bollard.cells.services import CellsDep
from bollard.domain.flavors import FLAVOR_NAME, Flavor
from bollard.server.api.deps import IdentityDep
from bollard.server.api.flavor_schemas import FlavorCreate, FlavorOut, FlavorUpdate
from bollard.store import flavors
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/flavors", tags=["flavors"])

FlavorPath = Annotated[str, Path(pattern=FLAVOR_NAME, description="The flavor's name.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


async def _get(s: CellsDep, name: str) -> Flavor:
    def read() -> Flavor:
        with s.work.read() as conn:
            return flavors.get(conn, name)

    return await s.work.run(read)


async def _show(s: CellsDep, name: str, identity: IdentityDep) -> dict[str, Any]:
    flavor = await _get(s, name)
    used, unreachable = await s.flavor_sync.usage(identity)
    out = FlavorOut.of(flavor, used.get(name, 0)).model_dump(mode="json")
    return {**out, "unreachable": unreachable}


@router.post("", status_code=201)
async def create_flavor(body: FlavorCreate, s: CellsDep) -> dict[str, Any]:
    """Define a flavor (in the API database, and in every cell)."""
    flavor = await s.flavor_ops.create(
        body.name, body.vcpus, body.memory_mb, body.disk_mb, body.description, body.properties
    )
    await s.flavor_sync.push(flavor)
    return FlavorOut.of(flavor, 0).model_dump(mode="json")


@router.get("")
async def list_flavors(
    s: CellsDep, identity: IdentityDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> dict[str, Any]:
    """Flavors, with the VMs of each counted in every cell (`unreachable`: the cells that did
    not answer, whose VMs are not counted)."""

    def read() -> Any:
        with s.work.read() as conn:
            return flavors.list_page(conn, limit=limit, cursor=cursor)

    page = await s.work.run(read)
    used, unreachable = await s.flavor_sync.usage(identity)
    return {
        "items": [FlavorOut.of(f, used.get(f.name, 0)).model_dump(mode="json") for f in page.items],
        "next_cursor": page.next_cursor,
        "total": page.total,
        "unreachable": unreachable,
    }


@router.get("/{name}")
async def show_flavor(name: FlavorPath, s: CellsDep, identity: IdentityDep) -> dict[str, Any]:
    return await _show(s, name, identity)


@router.patch("/{name}")
async def update_flavor(
    name: FlavorPath, body: FlavorUpdate, s: CellsDep, identity: IdentityDep
) -> dict[str, Any]:
    given = body.model_fields_set
    flavor = await s.flavor_ops.update(
        name,
        description=body.description,
        clear_description="description" in given and body.description is None,
        set_properties=body.properties,
        unset_properties=body.unset_properties,
    )
    await s.flavor_sync.push(flavor)
    return await _show(s, name, identity)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_flavor(name: FlavorPath, s: CellsDep, identity: IdentityDep) -> Response:
    """Delete a flavor no VM in any cell uses (409; 503 if a cell cannot tell)."""
    await _get(s, name)
    await s.flavor_sync.check_unused(name, identity)
    await s.flavor_ops.delete(name)
    await s.flavor_sync.remove(name)
    return Response(status_code=204)
