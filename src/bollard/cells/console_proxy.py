"""The graphical console (VNC) of a VM through the API server.

The ticket is asked of the VM's cell like any call (`POST /vms/{name}/console/vnc`, routed by
the proxy), which answers the path of the cell's WebSocket with the ticket. The browser opens
that path on the API server (it talks to nothing else): the API server remembers which cell
issued each ticket until it expires, and relays the WebSocket to that cell's, byte for byte.
The ticket stays the credential and is consumed by the cell; the API server only routes it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from bollard.cells.directory import CellDirectory, tls_context
from bollard.server.api.console_vnc import BAD_TICKET, CONSOLE_VNC_PATH, SUBPROTOCOL
from bollard.server.consoles import CLOSE_UNAUTHORIZED, CLOSE_UNAVAILABLE, close

TICKET_GRACE = 5.0  # seconds a ticket is remembered past its expiry (clocks differ a little)


class ConsoleRoutes:
    """Which cell issued each console ticket still valid."""

    def __init__(self, directory: CellDirectory) -> None:
        self._cells = directory
        self._tickets: dict[str, tuple[str, float]] = {}

    def issued(self, ticket: str, cell: str, expires_at: datetime) -> None:
        now = time.monotonic()
        self._tickets = {t: v for t, v in self._tickets.items() if v[1] > now}
        left = max(0.0, expires_at.timestamp() - time.time()) + TICKET_GRACE
        self._tickets[ticket] = (cell, now + left)

    def take(self, ticket: str) -> str | None:
        found = self._tickets.pop(ticket, None)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def endpoint(self, ws: WebSocket) -> None:
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        ticket = ws.query_params.get("ticket", "")
        cell = self.take(ticket)
        client = None if cell is None else self._cells.find(cell)
        if client is None:
            await close(ws, CLOSE_UNAUTHORIZED, BAD_TICKET)
            return
        url = client.cell.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        tls = tls_context(client.cell.ca_pem) if url.startswith("wss://") else None
        try:
            async with connect(
                f"{url}{CONSOLE_VNC_PATH}?ticket={ticket}",
                ssl=tls,
                subprotocols=[Subprotocol(SUBPROTOCOL)] if SUBPROTOCOL in offered else None,
                open_timeout=client.deadline,
                max_size=None,
            ) as cell_ws:
                await _relay(ws, cell_ws)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            await close(ws, CLOSE_UNAVAILABLE, f"cell {cell} did not open the console: {exc}")


async def _relay(browser: WebSocket, cell: ClientConnection) -> None:
    async def up() -> None:
        with contextlib.suppress(WebSocketDisconnect, ConnectionClosed, RuntimeError, OSError):
            while True:
                message = await browser.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                await cell.send(data if data is not None else str(message.get("text") or ""))

    async def down() -> None:
        with contextlib.suppress(WebSocketDisconnect, ConnectionClosed, RuntimeError, OSError):
            async for data in cell:
                if isinstance(data, bytes):
                    await browser.send_bytes(data)
                else:
                    await browser.send_text(data)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        code = cell.close_code or 1000
        reason = cell.close_reason or "the console ended"
        await cell.close()
        await close(browser, code if code >= 1000 else 1000, reason)
