"""The graphical console (VNC) of a VM: a ticket from the API, then a WebSocket that carries
the display's bytes from the VM's host (server/consoles.py says how).

- `POST /api/v1/vms/{name}/console/vnc` (permission vm.console): a single-use ticket, valid 30
  seconds, and the path of the WebSocket to open with it.
- WebSocket `/console/vnc?ticket=...`: outside /api/v1, since a browser cannot send an
  Authorization header with a WebSocket; the ticket is the credential, consumed at once. A
  client offering the `binary` subprotocol (noVNC) gets it. A bad, used or expired ticket is
  closed with code 4401; a tunnel that cannot be opened with 4409; both with a one-line reason.
- WebSocket `AGENT_TUNNEL_PATH`: where agents dial the tunnels they are asked for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from pydantic import BaseModel, Field

from bollard.domain.errors import NodeUnavailable
from bollard.domain.protocol import AGENT_TUNNEL_PATH
from bollard.server.api.access_log import ACTOR_SCOPE_KEY
from bollard.server.api.console import vm_host
from bollard.server.api.deps import IdentityDep, WorkDep
from bollard.server.api.schemas import Name
from bollard.server.consoles import (
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    Consoles,
    TunnelUnavailable,
    close,
    pipe,
)

CONSOLE_VNC_PATH = "/console/vnc"
SUBPROTOCOL = "binary"  # what noVNC offers (older versions by default)
BAD_TICKET = "the console ticket is unknown, used or expired: ask for a new one"

router = APIRouter(prefix="/vms", tags=["vms"])


def _consoles(request: Request) -> Consoles:
    found: Consoles = request.app.state.consoles
    return found


ConsolesDep = Annotated[Consoles, Depends(_consoles)]


class VncTicketOut(BaseModel):
    vm: str
    node: str = Field(description="The node that runs the VM, whose agent carries the tunnel.")
    ticket: str = Field(description="Single use; the credential of the WebSocket.")
    path: str = Field(
        description="The WebSocket to open (ws:// or wss://, on this server) with the ticket."
    )
    expires_at: datetime = Field(description="Unused after this, the ticket is worthless.")


@router.post("/{name}/console/vnc", response_model=VncTicketOut, status_code=201)
async def vnc_ticket(
    name: Name, work: WorkDep, me: IdentityDep, consoles: ConsolesDep
) -> VncTicketOut:
    """A ticket for the VM's graphical console (VNC), carried from its host by the node's
    agent: the host's VNC port is never opened to the network. 404 when the VM is on no node;
    409 when its node is not connected."""

    uuid, node = await vm_host(work, name)
    if not consoles.connected(node):
        raise NodeUnavailable(
            f"node {node} is not connected: the console of {name} is out of reach"
        )
    ticket = consoles.tickets.issue(vm=name, vm_uuid=uuid, node=node, actor=me.actor)
    return VncTicketOut(
        vm=name,
        node=node,
        ticket=ticket.value,
        path=f"{CONSOLE_VNC_PATH}?ticket={ticket.value}",
        expires_at=ticket.expires_at,
    )


async def vnc_endpoint(ws: WebSocket) -> None:
    """The browser's end of a tunnel (see the module docstring)."""
    consoles: Consoles = ws.app.state.consoles
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    ticket = consoles.tickets.take(ws.query_params.get("ticket", ""))
    if ticket is None:
        await close(ws, CLOSE_UNAUTHORIZED, BAD_TICKET)
        return
    ws.scope[ACTOR_SCOPE_KEY] = ticket.actor  # for the access log
    try:
        async with consoles.tunnel(ticket) as agent:
            await pipe(ws, agent)
    except TunnelUnavailable as exc:
        await close(ws, CLOSE_UNAVAILABLE, exc.reason)


async def agent_tunnel_endpoint(ws: WebSocket, tunnel: str) -> None:
    consoles: Consoles = ws.app.state.consoles
    await consoles.agent_endpoint(ws, tunnel)


def install(app: FastAPI, consoles: Consoles) -> None:
    """The console's WebSocket routes (the ticket's route is `router`, under /api/v1)."""
    app.state.consoles = consoles
    app.add_api_websocket_route(CONSOLE_VNC_PATH, vnc_endpoint)
    app.add_api_websocket_route(AGENT_TUNNEL_PATH, agent_tunnel_endpoint)
