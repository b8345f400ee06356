"""The graphical console (VNC): single-use tickets, and the tunnel from a browser (or `bollard
vm vnc`) through the server and the node's agent to the VM's display, which is a plain TCP
server on 127.0.0.1 here, standing in for the host's VNC (a test double of the sim driver
says the VM's display listens there)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bollard.agent import process
from bollard.agent.config import AgentConfig
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.tunnel import Tunnels
from bollard.cli.client import Client
from bollard.cli.vnc_cmd import VncRelay
from bollard.domain.errors import DriverNotFound
from bollard.domain.protocol import AGENT_TUNNEL_PATH, TunnelOpen
from bollard.server.api.console_vnc import BAD_TICKET
from tests.api.test_api_roles import add_user, as_token
from tests.api.test_api_vms import _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until

GREETING = b"RFB 003.008\n"  # what a VNC server says first
BYE = b"BYE!"  # makes the stand-in display close the connection
DEADLINE = 10.0


class FakeDisplay:
    """A TCP server on 127.0.0.1 that greets like a VNC server, then echoes what it gets (and
    closes on `BYE`). `ended` is set whenever a connection it accepted has ended."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            conn.sendall(GREETING)
            while data := conn.recv(65536):
                if data == BYE:
                    break
                conn.sendall(data)
        self.ended.set()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing it would not)
        self.sock.close()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()


class DisplayDriver(SimDriver):
    """The sim driver, with a VNC display at `address` for each of its VMs."""

    address: tuple[str, int] = ("127.0.0.1", 0)

    async def console_log(self, uuid: str, lines: int = 100) -> str:
        return ""

    async def display(self, uuid: str) -> dict[str, Any] | None:
        if uuid not in {vm.uuid for vm in await self.list_vms()}:
            raise DriverNotFound(f"no VM {uuid} here")
        return {"type": "vnc", "listen": self.address[0], "port": self.address[1]}


@dataclass
class Consoles:
    server: ServerThread
    display: FakeDisplay
    olga: httpx.Client  # an operator
    olga_token: str
    agents: dict[str, AgentThread]
    drivers: list[DisplayDriver] = field(default_factory=list)

    def ticket(self, vm: str = "desk") -> dict[str, Any]:
        answer = self.olga.post(f"/vms/{vm}/console/vnc")
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def ws_url(self, path: str) -> str:
        return self.server.url.replace("http://", "ws://", 1) + path

    def open(self, path: str, **options: Any) -> ClientConnection:
        return connect(self.ws_url(path), open_timeout=DEADLINE, close_timeout=5, **options)

    def token_of(self, node: str) -> str:
        return self.agents[node].config.token_file.read_text().strip()


def give_gfx_a_display(
    monkeypatch: pytest.MonkeyPatch, display: FakeDisplay
) -> list[DisplayDriver]:
    """Agents started from now on for node `gfx` get a DisplayDriver whose VMs' display is
    `display`; the drivers made (the other nodes' agents keep the plain sim driver)."""
    drivers: list[DisplayDriver] = []
    make_driver = process.make_driver

    def make(config: AgentConfig) -> Any:
        if config.node != "gfx":
            return make_driver(config)
        assert config.fabric_dir is not None
        driver = DisplayDriver(config.fabric_dir, config.node, latency=config.sim_latency)
        driver.address = ("127.0.0.1", display.port)
        drivers.append(driver)
        return driver

    monkeypatch.setattr(process, "make_driver", make)
    return drivers


@pytest.fixture
def consoles(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Consoles]:
    """Node `gfx`, whose VMs have a display (the stand-in), with VM `desk` running, and node
    `sim1` (plain sim: no display) with VM `plain`; operator `olga`."""
    display = FakeDisplay()
    drivers = give_gfx_a_display(monkeypatch, display)
    agents = {n: AgentThread(server, n, tmp_path) for n in ("gfx", "sim1")}
    for name in agents:
        wait_until(lambda n=name: server.client.get(f"/nodes/{n}").json()["connected"], name)
    for vm, node in (("desk", "gfx"), ("plain", "sim1")):
        body = {"name": vm, "vcpus": 1, "memory_mb": 128, "node": node, "start": True}
        assert _wait(server.client, server.client.post("/vms", json=body))["state"] == "succeeded"
    _, token = add_user(server, "olga", "operator")
    found = Consoles(server, display, as_token(server, token), token, agents, drivers)
    yield found
    found.olga.close()
    for agent in agents.values():
        agent.stop()
    display.close()


def read(ws: ClientConnection, size: int) -> bytes:
    """`size` bytes from the tunnel, however they were cut into frames."""
    data = b""
    while len(data) < size:
        frame = ws.recv(timeout=DEADLINE)
        assert isinstance(frame, bytes), f"a text frame: {frame!r}"
        data += frame
    return data


def closed(ws: ClientConnection) -> tuple[int, str]:
    """How the server closed the socket (code, reason); fails if it sends data instead."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=DEADLINE)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def test_the_tunnel_carries_the_display_both_ways_and_either_side_ends_it(
    consoles: Consoles,
) -> None:
    c = consoles
    ticket = c.ticket()
    assert (ticket["vm"], ticket["node"]) == ("desk", "gfx")
    assert ticket["path"] == f"/console/vnc?ticket={ticket['ticket']}"
    assert len(ticket["ticket"]) >= 40  # 32 random bytes
    with c.open(ticket["path"], subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
        assert read(ws, len(GREETING)) == GREETING
        payload = bytes(range(256)) * 300  # binary, and more than one read of the relays
        ws.send(payload)
        assert read(ws, len(payload)) == payload
    # The browser went: the tunnel ends, and so does the connection to the display.
    assert c.display.ended.wait(DEADLINE), "the display's connection stayed open"

    # The display ends the connection: the browser's socket is closed, saying so.
    c.display.ended.clear()
    with c.open(c.ticket()["path"]) as ws:
        assert ws.subprotocol is None  # none offered, none chosen
        assert read(ws, len(GREETING)) == GREETING
        ws.send(BYE)
        assert closed(ws) == (1000, "the VM's display closed the connection")
    assert c.display.accepted == 2

    opened = c.server.client.get("/events", params={"vm": "desk", "limit": 1000}).json()["items"]
    opened = [e for e in opened if e["kind"] == "console.opened"]
    assert len(opened) == 2
    assert {(e["actor"], e["node"], e["vm"]) for e in opened} == {("olga", "gfx", "desk")}


def test_a_ticket_is_used_once_and_expires(consoles: Consoles) -> None:
    c = consoles
    ticket = c.ticket()
    with c.open(ticket["path"]) as ws:
        assert read(ws, len(GREETING)) == GREETING
    with c.open(ticket["path"]) as ws:  # again
        assert closed(ws) == (4401, BAD_TICKET)
    for path in ("/console/vnc", "/console/vnc?ticket=", "/console/vnc?ticket=not-a-ticket"):
        with c.open(path) as ws:
            assert closed(ws) == (4401, BAD_TICKET), path
    tickets = c.server.runtime.consoles.tickets
    tickets.ttl = 0.0  # every ticket issued now has expired at once
    try:
        late = c.ticket()
    finally:
        tickets.ttl = 30.0
    with c.open(late["path"]) as ws:
        assert closed(ws) == (4401, BAD_TICKET)
    assert c.display.accepted == 1  # only the first reached the display
    assert len(tickets) == 0  # used and expired ones are gone


def test_who_may_ask_for_a_ticket_and_when(consoles: Consoles) -> None:
    c = consoles
    _, reader_token = add_user(c.server, "rita", "reader")
    with as_token(c.server, reader_token) as rita:
        refused = rita.post("/vms/desk/console/vnc")
    assert refused.status_code == 403
    assert "vm.console" in refused.json()["error"]["message"]
    assert c.olga.post("/vms/nope/console/vnc").status_code == 404
    assert c.server.client.post("/vms/desk/console/vnc").status_code == 201  # the admin
    c.agents.pop("gfx").stop()
    wait_until(lambda: not c.server.client.get("/nodes/gfx").json()["connected"], "gfx to go")
    gone = c.olga.post("/vms/desk/console/vnc")
    assert gone.status_code == 409, gone.text
    assert gone.json()["error"]["message"] == (
        "node gfx is not connected: the console of desk is out of reach"
    )


def test_a_console_that_cannot_be_reached_is_closed_with_the_reason(consoles: Consoles) -> None:
    c = consoles
    with c.open(c.ticket("plain")["path"]) as ws:  # a sim VM: no display
        assert closed(ws) == (4409, "the driver of node sim1 (sim) has no graphical console")
    with socket.create_server(("127.0.0.1", 0)) as spare:
        free = spare.getsockname()[1]
    c.drivers[0].address = ("127.0.0.1", free)  # nothing listens there now
    with c.open(c.ticket()["path"]) as ws:
        code, reason = closed(ws)
    assert code == 4409
    assert reason == "cannot connect to the VM's display on node gfx: Connection refused"


def test_the_server_pairs_a_tunnel_only_with_the_node_asked_once(
    consoles: Consoles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's side played by the test: the tunnel id it is sent, then its dials."""
    c = consoles
    asked: queue.Queue[TunnelOpen] = queue.Queue()
    monkeypatch.setattr(Tunnels, "open", lambda self, msg: asked.put(msg))

    def dial(tunnel: str, token: str | None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        path = AGENT_TUNNEL_PATH.format(tunnel=tunnel)
        return c.open(path, additional_headers=headers)

    with c.open(c.ticket()["path"]) as browser:
        msg = asked.get(timeout=DEADLINE)
        desk = c.server.client.get("/vms/desk").json()
        assert (msg.vm_uuid, msg.kind) == (desk["uuid"], "vnc")
        for token in (None, "not-a-node-token"):
            with dial(msg.tunnel, token) as ws:
                assert closed(ws) == (4401, "bad or missing node token")
        with dial(msg.tunnel, c.token_of("sim1")) as ws:  # not the node asked
            assert closed(ws) == (4404, "no such tunnel (each is used once)")
        with dial(msg.tunnel, c.token_of("gfx")) as agent:
            agent.send(GREETING)
            assert read(browser, len(GREETING)) == GREETING
            browser.send(b"key")
            assert agent.recv(timeout=DEADLINE) == b"key"
            with dial(msg.tunnel, c.token_of("gfx")) as again:  # single use
                assert closed(again) == (4404, "no such tunnel (each is used once)")
        assert closed(browser) == (1000, "the VM's display closed the connection")

    # An agent that never dials: the browser is told, once the server stops waiting.
    monkeypatch.setattr(c.server.runtime.consoles, "pair_timeout", 0.5)
    with c.open(c.ticket()["path"]) as browser:
        code, reason = closed(browser)
    assert (code, reason) == (4409, "the agent of node gfx did not open the tunnel within 0.5 s")
    assert c.display.accepted == 0


def test_the_ticket_reaches_no_log(consoles: Consoles) -> None:
    c = consoles
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    uvicorn_log = logging.getLogger("uvicorn.error")
    keep, level = Keep(level=logging.INFO), uvicorn_log.level
    uvicorn_log.addHandler(keep)
    uvicorn_log.setLevel(logging.INFO)  # where uvicorn names each WebSocket, query included
    try:
        ticket = c.ticket()
        with c.open(ticket["path"]) as ws:
            assert read(ws, len(GREETING)) == GREETING
        with c.open(ticket["path"]) as ws:
            assert closed(ws)[0] == 4401
    finally:
        uvicorn_log.removeHandler(keep)
        uvicorn_log.setLevel(level)
        c.server.stop()  # flushes the access log
    lines = [r.getMessage() for r in records]
    assert any("/console/vnc?ticket=[redacted]" in line for line in lines), lines
    assert not any(ticket["ticket"] in line for line in lines), lines
    access = (c.server.config.data_dir / "access.log").read_text()
    assert " WS /console/vnc 101 actor=olga " in access, access
    assert " POST /api/v1/vms/desk/console/vnc 201 actor=olga " in access, access
    assert ticket["ticket"] not in access


def test_bollard_vm_vnc_relays_a_local_viewer(consoles: Consoles) -> None:
    c = consoles
    said: list[str] = []
    listening: queue.Queue[tuple[str, int]] = queue.Queue()
    running: queue.Queue[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = queue.Queue()

    def run(relay: VncRelay) -> None:
        async def main() -> None:
            running.put((asyncio.get_running_loop(), asyncio.current_task()))  # type: ignore[arg-type]
            await relay.serve(listening.put)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())

    with Client(c.server.url, c.olga_token) as client:
        relay = VncRelay(client, "desk", ("127.0.0.1", 0), tls=None, say=said.append)
        thread = threading.Thread(target=run, args=(relay,), daemon=True)
        thread.start()
        loop, serving = running.get(timeout=DEADLINE)
        try:
            address = listening.get(timeout=DEADLINE)
            for _ in range(2):  # each connection gets its own ticket and tunnel
                with socket.create_connection(address, timeout=DEADLINE) as viewer:
                    assert viewer.recv(len(GREETING), socket.MSG_WAITALL) == GREETING
                    viewer.sendall(b"\x03\x00hello")
                    assert viewer.recv(7, socket.MSG_WAITALL) == b"\x03\x00hello"
                    viewer.sendall(BYE)
                    assert viewer.recv(1) == b""  # the display closed: so does the relay
            wait_until(lambda: len([s for s in said if "ended" in s]) == 2, "both to end")
        finally:
            loop.call_soon_threadsafe(serving.cancel)
            thread.join(DEADLINE)
    assert not thread.is_alive(), "the relay did not stop"
    assert c.display.accepted == 2
    assert any("console of desk (node gfx) open" in line for line in said), said
    assert any("ended: the VM's display closed the connection" in line for line in said), said
