"""`bollard vm vnc NAME`: a VM's graphical console (VNC) for a desktop VNC viewer.

A local TCP listener (127.0.0.1:5900 by default). Each connection a viewer makes gets a new
single-use ticket from the API (`POST /vms/{name}/console/vnc`, with the CLI's token) and a
WebSocket to the server (`/console/vnc?ticket=...`, verified with the same CA and client
certificate as the rest of the CLI), which the server joins, through the agent of the VM's
node, to the VM's display on its host. Bytes are relayed both ways until either side closes.
Ctrl-C stops the listener.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import typer

from bollard.cli.client import Client, CliError, resolve_target, resolve_tls, ssl_context
from bollard.cli.output import err_console
from bollard.cli.vm_common import NAME_ARGUMENT, vm_path

# asyncio and websockets are imported where they are used: every `bollard` command imports
# this module (the `vm` group registers `vnc`), and they cost it start-up time (issue 24).
if TYPE_CHECKING:
    import asyncio

    from websockets.typing import Subprotocol

DEFAULT_LISTEN = "127.0.0.1:5900"
SUBPROTOCOL = cast("Subprotocol", "binary")
MAX_FRAME = 4 * 1024 * 1024
OPEN_TIMEOUT = 20.0  # seconds for the WebSocket (the server waits up to 10 s for the agent)
CLOSE_WAIT = 2.0

Say = Callable[[str], None]


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or PORT (on 127.0.0.1); a bad value is a usage error."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use HOST:PORT with an IP address, e.g. 127.0.0.1:5900"
        ) from None
    if not 0 <= number < 65536:
        raise typer.BadParameter(f"{value!r}: the port is 0 to 65535 (0: any free port)")
    return host, number


def _ws_base(base_url: str) -> str:
    """The server's URL as a WebSocket URL (ws:// or wss://), keeping a path prefix."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class VncRelay:
    """The listener and its relays (see the module docstring). `client` asks the API for
    tickets; `tls` is its TLS context (None for http)."""

    def __init__(
        self,
        client: Client,
        vm: str,
        listen: tuple[str, int],
        *,
        tls: ssl.SSLContext | None,
        say: Say,
    ) -> None:
        self.client = client
        self.vm = vm
        self.listen = listen
        self.tls = tls
        self.say = say
        self.ws_base = _ws_base(client.base_url)
        self.address: tuple[str, int] | None = None  # where it listens, once it does

    async def serve(self, ready: Callable[[tuple[str, int]], None] | None = None) -> None:
        """Listen and relay until cancelled; `ready(address)` once listening."""
        import asyncio

        host, port = self.listen
        try:
            server = await asyncio.start_server(self._connection, host, port)
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        sockname = server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        if ready is not None:
            ready(self.address)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        peer = writer.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a viewer"
        try:
            await self._relay(reader, writer, who)
        except CliError as exc:
            self.say(f"{who}: {exc.message}")
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await writer.wait_closed()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: str
    ) -> None:
        import asyncio

        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        from bollard.byte_relay import relay

        answer: dict[str, Any] = await asyncio.to_thread(
            self.client.post, f"{vm_path(self.vm)}/console/vnc"
        )
        url = self.ws_base + str(answer["path"])
        tls: dict[str, Any] = {} if self.tls is None else {"ssl": self.tls}
        try:
            async with connect(
                url,
                subprotocols=[SUBPROTOCOL],
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_WAIT,
                proxy=None,
                max_size=MAX_FRAME,
                **tls,
            ) as ws:
                self.say(f"{who}: console of {self.vm} (node {answer.get('node')}) open")
                await relay(ws, reader, writer, ended="the viewer closed the connection")
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise CliError(f"the server refused the console (HTTP {status})") from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise CliError(f"cannot open the console: {exc or type(exc).__name__}") from None
        reason = ws.close_reason or "closed"
        code = f" ({ws.close_code})" if ws.close_code not in (None, 1000) else ""
        self.say(f"{who}: console of {self.vm} ended: {reason}{code}")


def register(app: typer.Typer) -> None:
    app.command("vnc")(vnc)


def vnc(
    name: str = NAME_ARGUMENT,
    listen: str = typer.Option(
        DEFAULT_LISTEN,
        "--listen",
        metavar="HOST:PORT",
        help="Where the local VNC viewer connects (port 0: any free port). Anyone who can "
        "reach it gets the console without a token: keep it on 127.0.0.1.",
    ),
) -> None:
    """Open a VM's graphical console (VNC) for a desktop VNC viewer.

    Listens on 127.0.0.1:5900 (--listen) and prints where to point the viewer, e.g.
    `vncviewer 127.0.0.1::5900`. Each connection gets a single-use console ticket from the
    server, which carries the display from the VM's host through the node's agent (the
    host's VNC port is never opened to the network). Needs permission vm.console (operator or
    admin). Ctrl-C stops.
    """
    import asyncio

    host, port = parse_listen(listen)
    url, token = resolve_target()
    tls = resolve_tls(url)
    with Client(url, token, tls=tls) as client:
        relay = VncRelay(client, name, (host, port), tls=ssl_context(url, tls), say=_say)
        if not ipaddress.ip_address(host).is_loopback:
            _say(f"warning: listening on {host}: anyone who can reach it gets the console")

        def ready(address: tuple[str, int]) -> None:
            where = f"[{address[0]}]" if ":" in address[0] else address[0]
            typer.echo(
                f"console of VM {name}: point a VNC viewer at {where}:{address[1]} (Ctrl-C stops)"
            )

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay.serve(ready))
    _say("stopped")


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True)
