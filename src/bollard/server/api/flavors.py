"""/api/v1/flavors: named sizes for VMs (domain/flavors.py, operations/flavor_ops.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from bollard.domain.flavors import FLAVOR_NAME, Flavor
from bollard.server.api.deps import ClockDep, FlavorOpsDep, WorkDep
from bollard.server.api.flavor_schemas import (
    FlavorCreate,
    FlavorOut,
    FlavorPage,
    FlavorReplica,
    FlavorUpdate,
)
from bollard.store import flavors, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/flavors", tags=["flavors"])

FlavorPath = Annotated[str, Path(pattern=FLAVOR_NAME, description="The flavor's name.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


async def _show(work: WorkDep, name: str) -> FlavorOut:
    def tx() -> FlavorOut:
        with work.read() as conn:
            flavor = flavors.get(conn, name)
            return FlavorOut.of(flavor, vms.flavor_use_counts(conn, [flavor.id]).get(flavor.id, 0))

    return await work.run(tx)


@router.post("", status_code=201, response_model=FlavorOut)
async def create_flavor(body: FlavorCreate, flavor_ops: FlavorOpsDep, work: WorkDep) -> FlavorOut:
    """Define a flavor. Its size never changes afterwards (only its description and
    properties do); VMs keep a copy of the flavor they were given."""
    flavor = await flavor_ops.create(
        body.name, body.vcpus, body.memory_mb, body.disk_mb, body.description, body.properties
    )
    return await _show(work, flavor.name)


@router.get("", response_model=FlavorPage)
async def list_flavors(
    work: WorkDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> FlavorPage:
    def tx() -> FlavorPage:
        with work.read() as conn:
            page = flavors.list_page(conn, limit=limit, cursor=cursor)
            used = vms.flavor_use_counts(conn, [f.id for f in page.items])
            return FlavorPage.of(page, used)

    return await work.run(tx)


@router.get("/{name}", response_model=FlavorOut)
async def show_flavor(name: FlavorPath, work: WorkDep) -> FlavorOut:
    return await _show(work, name)


@router.patch("/{name}", response_model=FlavorOut)
async def update_flavor(
    name: FlavorPath, body: FlavorUpdate, flavor_ops: FlavorOpsDep, work: WorkDep
) -> FlavorOut:
    """Change the description (null clears it), set `properties`, remove `unset_properties`.
    VMs already given the flavor keep the properties they were given."""
    given = body.model_fields_set
    await flavor_ops.update(
        name,
        description=body.description,
        clear_description="description" in given and body.description is None,
        set_properties=body.properties,
        unset_properties=body.unset_properties,
    )
    return await _show(work, name)


@router.put("/{name}", response_model=FlavorOut)
async def replicate_flavor(
    name: FlavorPath, body: FlavorReplica, flavor_ops: FlavorOpsDep, work: WorkDep, clock: ClockDep
) -> FlavorOut:
    """Make flavor `name` exactly this one, its id included: how an API server in front of
    cells keeps its cells' flavors (also usable to copy flavors between clusters). 409 if a
    flavor of that id here has another size, or one of another id is in use."""
    now = clock.now()
    await flavor_ops.replicate(
        Flavor(
            id=body.id, name=name, vcpus=body.vcpus, memory_mb=body.memory_mb,
            disk_mb=body.disk_mb, description=body.description, properties=body.properties,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return await _show(work, name)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_flavor(name: FlavorPath, flavor_ops: FlavorOpsDep) -> Response:
    """Delete a flavor no VM and no unfinished resize names (409 naming them otherwise)."""
    await flavor_ops.delete(name)
    return Response(status_code=204)
