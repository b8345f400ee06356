"""/api/v1/vms/{name}/console: the tail of a VM's serial console and how to reach its
display, asked of the host that runs it (read-only, through Inspect)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bollard.domain.errors import NodeUnavailable, NotFound
from bollard.server.api.deps import InspectorDep, WorkDep
from bollard.server.api.schemas import Name
from bollard.server.ports import UnitOfWork
from bollard.store import vms

router = APIRouter(prefix="/vms", tags=["vms"])

CONSOLE_TIMEOUT = 10.0


class ConsoleOut(BaseModel):
    vm: str
    node: str
    lines: int = Field(description="How many lines were asked for.")
    log: str = Field(description="The tail of the serial console log (undecodable bytes replaced).")
    display: dict[str, Any] | None = Field(
        description="How to reach the VM's display, e.g. VNC listen address and port."
    )


async def vm_host(work: UnitOfWork, name: str) -> tuple[str, str]:
    """The VM's uuid and the node that holds it; NotFound when it is on no node."""

    def tx() -> tuple[str, str | None]:
        with work.read() as conn:
            vm = vms.get(conn, name)
            return vm.uuid, vm.node

    uuid, node = await work.run(tx)
    if node is None:
        raise NotFound(f"VM {name!r} is on no node")
    return uuid, node


@router.get("/{name}/console", response_model=ConsoleOut)
async def console(
    name: Name,
    work: WorkDep,
    inspector: InspectorDep,
    lines: Annotated[int, Query(ge=1, le=10_000, description="Lines of the log's tail.")] = 50,
) -> ConsoleOut:
    """Ask the VM's host for the tail of its serial console log and its display address.
    404 when the host's driver has no console (e.g. sim) or the host does not have the VM;
    409 when the host is not connected or does not answer."""

    uuid, node = await vm_host(work, name)
    result = await inspector.inspect(node, uuid, CONSOLE_TIMEOUT, console_lines=lines)
    if result is None:
        raise NodeUnavailable(f"node {node} did not answer (is its agent connected?)")
    if result.vm is None:
        raise NotFound(f"node {node} does not have VM {name!r}")
    if result.console is None:
        raise NotFound(f"the driver of node {node} keeps no console log for its VMs")
    return ConsoleOut(vm=name, node=node, lines=lines, log=result.console, display=result.display)
