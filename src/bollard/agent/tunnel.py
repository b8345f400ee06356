"""Console tunnels, the agent's side: a VM's VNC display, carried to the server.

The server asks over the agent's session (``TunnelOpen``: a tunnel id and a VM). The agent
asks its driver where the VM's display listens, which is on this host only (libvirt's
``<graphics listen='127.0.0.1'>``), connects to it, then dials a new WebSocket to the server
at ``AGENT_TUNNEL_PATH`` with the tunnel's id, authenticated as its session is (the node's
token, the same TLS options), and relays bytes both ways as binary frames until either side
closes. The address comes from the driver, never from the server: the server names a VM, not
where to connect. When it cannot serve a tunnel (a driver without a graphical console, a VM
that is not here or not running, a display that refuses) it answers ``TunnelRefused`` with a
one-line reason, which the server shows the person at the console.

Each tunnel runs in its own task: nothing here blocks the session (its heartbeats and
commands). At most ``MAX_TUNNELS`` run at once; more are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

import bollard
from bollard.agent.config import AgentConfig, ws_url
from bollard.agent.drivers.base import ConsoleSource, HypervisorDriver
from bollard.byte_relay import relay
from bollard.domain.errors import DriverError, DriverNotFound
from bollard.domain.protocol import AGENT_PATH, AGENT_TUNNEL_PATH, TunnelOpen, TunnelRefused

log = logging.getLogger(__name__)

MAX_TUNNELS = 32  # tunnels open at once on this host
MAX_FRAME = 16 * 1024 * 1024  # the largest frame taken from the server (> what it takes)
CLOSE_WAIT = 2.0  # seconds to close a socket cleanly

Send = Callable[[BaseModel], Awaitable[bool]]


class Refused(Exception):
    """A tunnel that cannot be served; the message is the reason, one line."""


def tunnel_url(server_url: str, tunnel: str) -> str:
    """The WebSocket URL of one tunnel: the agent's own URL with AGENT_TUNNEL_PATH."""
    parts = urlsplit(ws_url(server_url))
    base = parts.path[: -len(AGENT_PATH)]
    path = base + AGENT_TUNNEL_PATH.format(tunnel=tunnel)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def display_address(display: dict[str, Any] | None, node: str) -> tuple[str, int]:
    """Where to connect for a VNC display the driver described; Refused if there is none. A
    display listening on every address (0.0.0.0, ::) is reached on the loopback."""
    if display is None:
        raise Refused("the VM has no graphical display now (is it running?)")
    kind = str(display.get("type") or "")
    if kind != "vnc":
        raise Refused(f"the VM's display on node {node} is {kind or 'unknown'}, not VNC")
    port = display.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise Refused("the VM's display has no port yet (is it running?)")
    listen = str(display.get("listen") or "127.0.0.1")
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        raise Refused(f"the VM's display listens on {listen!r}, not an IP address") from None
    if address.is_unspecified:
        listen = "::1" if address.version == 6 else "127.0.0.1"
    return listen, port


class Tunnels:
    """The tunnels of one agent (see the module docstring). ``send`` sends a message over the
    agent's session (False: not sent)."""

    def __init__(
        self,
        config: AgentConfig,
        headers: dict[str, str],
        driver: HypervisorDriver,
        send: Send,
        tls: ssl.SSLContext | None,
        *,
        max_tunnels: int = MAX_TUNNELS,
        current_server: Callable[[], str] | None = None,
    ) -> None:
        """`current_server()`: the URL of the server holding the agent's session now (a
        tunnel is dialled there unless its TunnelOpen names another server)."""
        self.config = config
        self.current_server = current_server
        self.headers = headers
        self.driver = driver
        self.send = send
        self.tls = tls
        self.max_tunnels = max_tunnels
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def open(self, msg: TunnelOpen) -> None:
        """Serve a TunnelOpen in a task of its own (returns at once)."""
        if msg.tunnel in self._tasks:
            log.warning("tunnel %s: already open; the second request is ignored", msg.tunnel)
            return
        task = asyncio.create_task(self._serve(msg), name=f"tunnel-{msg.tunnel[:8]}")
        self._tasks[msg.tunnel] = task
        task.add_done_callback(lambda _: self._tasks.pop(msg.tunnel, None))

    async def aclose(self) -> None:
        """End every tunnel (the agent stops)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT * 2)

    async def _serve(self, msg: TunnelOpen) -> None:
        try:
            if len(self._tasks) > self.max_tunnels:
                raise Refused(
                    f"node {self.config.node} has {self.max_tunnels} console tunnels open"
                    " already; close one and try again"
                )
            reader, writer = await self._connect_display(msg.vm_uuid)
        except Refused as exc:
            log.info("tunnel %s to VM %s refused: %s", msg.tunnel[:8], msg.vm_uuid, exc)
            await self.send(TunnelRefused(tunnel=msg.tunnel, reason=str(exc)[:200]))
            return
        try:
            await self._dial_and_relay(msg, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await writer.wait_closed()

    async def _connect_display(
        self, vm_uuid: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        node = self.config.node
        if not isinstance(self.driver, ConsoleSource):
            raise Refused(
                f"the driver of node {node} ({self.driver.name}) has no graphical console"
            )
        try:
            display = await self.driver.display(vm_uuid)
        except DriverNotFound:
            raise Refused(f"node {node} does not have the VM") from None
        except DriverError as exc:
            raise Refused(f"cannot read the VM's display on node {node}: {exc}") from None
        host, port = display_address(display, node)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                return await asyncio.open_connection(host, port)
        except TimeoutError:
            raise Refused(f"the VM's display on node {node} did not answer in time") from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise Refused(f"cannot connect to the VM's display on node {node}: {why}") from None

    async def _dial_and_relay(
        self, msg: TunnelOpen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        own = self.config.server_url if self.current_server is None else self.current_server()
        url = tunnel_url(msg.server or own, msg.tunnel)
        tls: dict[str, Any] = {} if self.tls is None else {"ssl": self.tls}
        try:
            async with connect(
                url,
                additional_headers=self.headers,
                open_timeout=self.config.connect_timeout,
                close_timeout=CLOSE_WAIT,
                proxy=None,
                max_size=MAX_FRAME,
                user_agent_header=f"bollard-agent/{bollard.__version__}",
                **tls,
            ) as ws:
                log.info("tunnel %s to VM %s open", msg.tunnel[:8], msg.vm_uuid)
                await relay(ws, reader, writer, ended="the VM's display closed the connection")
        except (OSError, WebSocketException, TimeoutError) as exc:
            # The server waits for this tunnel: tell it (over the session) why it will not come.
            problem = (
                f"HTTP {exc.response.status_code}" if isinstance(exc, InvalidStatus) else str(exc)
            )
            log.warning("tunnel %s: cannot reach the server: %s", msg.tunnel[:8], problem)
            why = f"the agent of node {self.config.node} cannot reach the server for the tunnel"
            await self.send(TunnelRefused(tunnel=msg.tunnel, reason=why))
            return
        log.info("tunnel %s to VM %s closed", msg.tunnel[:8], msg.vm_uuid)
