"""The cell's image spool over HTTP (server/images.py), and VMs exported to it or made from it
(tasks/flows/vm_images.py): how a VM's disks travel between cells.

Admins (action ``image.manage``; the API server in front of the cells calls them with the
cell's admin token):

- ``GET /api/v1/images/{image}``: ``{"image", "disks": [{"disk", "bytes", "sha256"}]}``;
- ``GET /api/v1/images/{image}/{disk}``: the disk's bytes (header ``X-Content-SHA256``);
- ``PUT /api/v1/images/{image}/{disk}``: write them (header ``X-Content-SHA256``: bytes whose
  digest is not that one are refused, 422, and nothing is kept);
- ``DELETE /api/v1/images/{image}``: 204, also when there was none;
- ``POST /api/v1/vms/{name}/export`` ``{"image"}`` and ``POST /api/v1/vms/{name}/spawn``
  ``{"image", "start"}``: 202 ``{"vm", "task"}`` (a hidden VM with ``?hidden=true``).

Agents, with their node's token (the authentication middleware lets /api/v1/agent/ through;
these routes check the token as the agents' WebSocket does): ``PUT`` and ``GET
/api/v1/agent/images/{image}/{disk}``, the same as the admins'. Bodies of any size
(``UNLIMITED_BODIES``, the body limit's exceptions) are streamed to disk and from it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute

from bollard.domain.errors import BollardError, Unauthorized
from bollard.domain.models import Task, Vm
from bollard.server.api import cell_vms
from bollard.server.api.authn import API_PREFIX
from bollard.server.api.deps import ServicesDep, require_identity
from bollard.server.api.flat_routes import flattened
from bollard.server.api.schemas import Name, TaskOut, VmTask
from bollard.server.api.vms import VmViews
from bollard.server.images import NAME, ImageSpool, check_sha256
from bollard.store import vms

AGENT_IMAGES = "/api/v1/agent/images"
SHA256_HEADER = "X-Content-SHA256"
UNLIMITED_BODIES = (
    "PUT /api/v1/images/{image}/{disk}",
    "PUT /api/v1/agent/images/{image}/{disk}",
)
BAD_TOKEN = "bad or missing node token"

router = APIRouter(tags=["images"])
vm_router = APIRouter(prefix="/vms", tags=["vms"])
agent_router = APIRouter(prefix=AGENT_IMAGES, include_in_schema=False)

ImageName = Annotated[str, Field(pattern=NAME, description="1-64 of A-Z, a-z, 0-9, _ - .")]


class UploadIncomplete(BollardError):
    code = "upload-incomplete"
    http_status = 400


class DiskOut(BaseModel):
    disk: str
    bytes: int
    sha256: str


class ImageOut(BaseModel):
    image: str
    disks: list[DiskOut]


class ExportIn(BaseModel):
    image: ImageName


class SpawnIn(BaseModel):
    image: ImageName
    start: bool = Field(default=True, description="Start the VM once it is defined.")


def routes() -> list[BaseRoute]:
    """The admins' routes under /api/v1 (authenticated and authorized as every API call; a
    hidden VM is 404 unless asked for with ?hidden=true, as on every /vms/{name} route),
    and the agents' routes."""
    identity = [Depends(require_identity)]
    return [
        *flattened(router, prefix=API_PREFIX, dependencies=identity),
        *flattened(vm_router, prefix=API_PREFIX, dependencies=[*identity, cell_vms.VisibleDep]),
        *flattened(agent_router),
    ]


# -- streams --------------------------------------------------------------------------------


async def _receive(spool: ImageSpool, image: str, disk: str, request: Request) -> DiskOut:
    sha256 = check_sha256(request.headers.get(SHA256_HEADER))
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.strip().isdigit() else None
    try:
        found = await spool.put(image, disk, sha256, request.stream(), declared=declared)
    except ClientDisconnect:
        raise UploadIncomplete(f"image {image}/{disk}: the upload ended early") from None
    return DiskOut(disk=found.disk, bytes=found.bytes, sha256=found.sha256)


async def _send(spool: ImageSpool, image: str, disk: str) -> StreamingResponse:
    found, chunks = await spool.read(image, disk)
    headers = {SHA256_HEADER: found.sha256, "Content-Length": str(found.bytes)}
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


# -- agents ---------------------------------------------------------------------------------


async def _node(request: Request, s: ServicesDep) -> str:
    """The node whose token the call carries (401 without one)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    node = None
    if scheme.lower() == "bearer" and token.strip():
        node = await s.node_for_token(token.strip())
    if node is None:
        raise Unauthorized(BAD_TOKEN)
    return node


NodeDep = Annotated[str, Depends(_node)]


@agent_router.put("/{image}/{disk}", response_model=DiskOut)
async def agent_put(image: str, disk: str, request: Request, s: ServicesDep, _: NodeDep) -> DiskOut:
    return await _receive(s.images, image, disk, request)


@agent_router.get("/{image}/{disk}")
async def agent_get(image: str, disk: str, s: ServicesDep, _: NodeDep) -> StreamingResponse:
    return await _send(s.images, image, disk)


# -- admins ---------------------------------------------------------------------------------


@router.get("/images/{image}", response_model=ImageOut)
async def show_image(image: str, s: ServicesDep) -> ImageOut:
    """The image's disks in the spool (404: no such image)."""
    disks = await asyncio.to_thread(s.images.disks, image)
    return ImageOut(
        image=image, disks=[DiskOut(disk=d.disk, bytes=d.bytes, sha256=d.sha256) for d in disks]
    )


@router.get(
    "/images/{image}/{disk}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_disk(image: str, disk: str, s: ServicesDep) -> StreamingResponse:
    """The disk's bytes, with their SHA-256 in the header X-Content-SHA256."""
    return await _send(s.images, image, disk)


@router.put("/images/{image}/{disk}", response_model=DiskOut)
async def upload_disk(image: str, disk: str, request: Request, s: ServicesDep) -> DiskOut:
    """Write the disk from the request's bytes (any size, streamed to disk), whose SHA-256
    the header X-Content-SHA256 gives: other bytes are refused (422) and nothing is kept."""
    return await _receive(s.images, image, disk, request)


@router.delete("/images/{image}", status_code=204)
async def delete_image(image: str, s: ServicesDep) -> Response:
    """Remove the image and its disks (204 also when there was none)."""
    await s.images.remove(image)
    return Response(status_code=204)


# -- VMs ------------------------------------------------------------------------------------


async def _answer(s: ServicesDep, vm: Vm, task: Task) -> VmTask:
    views = VmViews(s.settings, s.clock, s.heartbeat_interval)

    def tx() -> VmTask:
        with s.work.read() as conn:
            current = vms.find_by_uuid(conn, vm.uuid) or vm
            return VmTask(vm=views.out(current, views.seen(conn, [current])), task=TaskOut.of(task))

    return await s.work.run(tx)


@vm_router.post("/{name}/export", status_code=202, response_model=VmTask)
async def export_vm(name: Name, body: ExportIn, s: ServicesDep) -> VmTask:
    """Export the stopped VM's disks to the cell's image spool as image `image` (disk names:
    their devices). The task's result lists each disk's SHA-256 and length."""
    return await _answer(s, *await s.image_ops.export(name, body.image))


@vm_router.post("/{name}/spawn", status_code=202, response_model=VmTask)
async def spawn_vm(name: Name, body: SpawnIn, s: ServicesDep) -> VmTask:
    """Make the VM's reserved volumes from spool image `image` (each from the disk named by
    its device), define the VM on its node and start it (unless `start` is false)."""
    return await _answer(s, *await s.image_ops.spawn(name, body.image, body.start))
