"""The gateway's welcome is the first message of every session: a command sent for the node
while its session is being recorded waits for the welcome (an agent drops a session whose
first answer to its hello is anything else, which cost a reconnection mid-drain in CI)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from starlette.websockets import WebSocket, WebSocketState

from bollard.domain.protocol import Capacity, Command, CommandType, Hello
from bollard.server.clock import SystemClock
from bollard.server.gateway import AgentConnection, Gateway

DEADLINE = 5.0


class FakeSocket:
    """The server side of one agent socket: one hello, then the peer stays until told."""

    def __init__(self, hello: Hello) -> None:
        self.headers = {"authorization": "Bearer token-1"}
        self.client = ("127.0.0.1", 1)
        self.application_state = WebSocketState.CONNECTED
        self.sent: list[dict[str, Any]] = []
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.receive", "text": hello.model_dump_json()})

    async def accept(self) -> None:
        return None

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.application_state = WebSocketState.DISCONNECTED

    def hang_up(self) -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect"})


class SlowRecords:
    """Records whose `opened` waits until the test lets it finish."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.finish = asyncio.Event()
        self.fail = False

    async def node_for_token(self, token: str) -> str | None:
        return "node1" if token == "token-1" else None

    async def opened(self, connection: AgentConnection, hello: Hello) -> None:
        self.entered.set()
        await asyncio.wait_for(self.finish.wait(), DEADLINE)
        if self.fail:
            raise ConnectionError("the database is gone")

    async def closed(self, connection: AgentConnection) -> None:
        return None


def _hello() -> Hello:
    return Hello(node="node1", incarnation="inc-1", boot_id="boot-1", driver="sim",
                 capacity=Capacity(vcpus=4, memory_mb=4096))  # fmt: skip


def _command() -> Command:
    return Command(id="c1", command=CommandType.START, vm_uuid=None, timeout=10.0)


async def _send_during_opening(fail: bool) -> tuple[FakeSocket, BaseException | None]:
    records = SlowRecords()
    records.fail = fail
    gateway = Gateway(clock=SystemClock(), records=records, heartbeat_interval=1.0)
    ws = FakeSocket(_hello())
    serving = asyncio.create_task(gateway.handle(cast(WebSocket, ws)))
    await asyncio.wait_for(records.entered.wait(), DEADLINE)
    session = gateway.session("node1")
    assert session is not None, "the session is registered while it is recorded"
    sending = asyncio.create_task(session.send(_command()))
    await asyncio.sleep(0)  # the send runs up to its wait (one loop turn)
    assert ws.sent == [], "nothing may be sent before the welcome"
    records.finish.set()
    outcome: BaseException | None = None
    try:
        await asyncio.wait_for(sending, DEADLINE)
    except ConnectionError as exc:
        outcome = exc
    ws.hang_up()
    await asyncio.wait_for(serving, DEADLINE)
    return ws, outcome


def test_a_command_sent_while_the_session_is_recorded_follows_the_welcome() -> None:
    ws, outcome = asyncio.run(_send_during_opening(fail=False))
    assert outcome is None
    assert [m["type"] for m in ws.sent] == ["welcome", "command"]
    assert ws.sent[1]["id"] == "c1"


def test_a_session_that_fails_before_its_welcome_lets_its_held_sends_go() -> None:
    ws, _ = asyncio.run(_send_during_opening(fail=True))
    # The held send went out (or failed on a closed socket) instead of waiting for ever, and
    # no welcome was sent for a session that was not recorded.
    assert "welcome" not in [m["type"] for m in ws.sent]


def test_the_welcome_lists_the_live_servers() -> None:
    async def main() -> list[dict[str, Any]]:
        records = SlowRecords()
        records.finish.set()

        async def peers() -> list[str]:
            return ["https://a:8443", "https://b:8443"]

        gateway = Gateway(
            clock=SystemClock(), records=records, heartbeat_interval=1.0, servers=peers
        )
        ws = FakeSocket(_hello())
        serving = asyncio.create_task(gateway.handle(cast(WebSocket, ws)))
        await asyncio.wait_for(records.entered.wait(), DEADLINE)
        ws.hang_up()
        await asyncio.wait_for(serving, DEADLINE)
        return ws.sent

    [welcome] = asyncio.run(main())
    assert welcome["type"] == "welcome"
    assert welcome["servers"] == ["https://a:8443", "https://b:8443"]
