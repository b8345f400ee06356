"""Bytes between a TCP stream and a WebSocket, both ways, until either side closes: the
graphical console's two ends (the agent beside the host's VNC display, `bollard vm vnc`
beside a desktop viewer). Imports nothing else of Bollard."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

CHUNK = 64 * 1024  # bytes read from the stream at a time (one binary frame each at most)


async def relay(
    ws: ClientConnection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    ended: str,
) -> None:
    """Relay until either side closes, then close the other: the WebSocket with reason
    `ended` when the stream ended first (a WebSocket the server closed is closed already).
    A closed connection or a socket error ends the relay; anything else is raised."""

    async def stream_to_ws() -> None:
        while data := await reader.read(CHUNK):
            await ws.send(data)

    async def ws_to_stream() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                writer.write(frame.encode() if isinstance(frame, str) else frame)
                await writer.drain()

    pumps = [
        asyncio.create_task(stream_to_ws(), name="stream-to-websocket"),
        asyncio.create_task(ws_to_stream(), name="websocket-to-stream"),
    ]
    try:
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    for pump in done:
        exc = pump.exception()
        if exc is not None and not isinstance(exc, (ConnectionClosed, OSError)):
            raise exc
    if pumps[0] in done:
        await ws.close(1000, ended)
