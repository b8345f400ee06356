"""The real agent against a small in-test WebSocket server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from bollard.agent.config import AgentConfig
from bollard.agent.process import run_agent_async
from bollard.domain.protocol import AGENT_PATH
from bollard.domain.states import PowerState
from bollard.sim import Fabric, SimVm

TOKEN = "s3cret-token-value"
VM = "11111111-1111-4111-8111-111111111111"
Msg = dict[str, Any]


class FakeServer:
    """Accepts agents, welcomes them and queues everything they send as (conn no, msg)."""

    def __init__(self, heartbeat_interval: float = 30.0, reject_http: bool = False) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.reject_http = reject_http
        self.inbox: asyncio.Queue[tuple[int, Msg]] = asyncio.Queue()
        self.conns: list[ServerConnection] = []
        self.auth: list[str | None] = []
        self.paths: list[str] = []
        self.attempts = asyncio.Queue[int]()
        self.port = 0

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        self.auth.append(request.headers.get("Authorization"))
        self.attempts.put_nowait(len(self.auth))
        if self.reject_http:
            return Response(401, "Unauthorized", Headers(), b"bad token\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        index = len(self.conns) - 1
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "hello":
                    welcome = {
                        "type": "welcome",
                        "heartbeat_interval": self.heartbeat_interval,
                        "server_time": 0.0,
                    }
                    await ws.send(json.dumps(welcome))
                await self.inbox.put((index, msg))

    async def send(self, msg: Msg | str) -> None:
        await self.conns[-1].send(msg if isinstance(msg, str) else json.dumps(msg))

    async def expect(
        self, type_: str, where: Callable[[Msg], bool] = lambda m: True, timeout: float = 5.0
    ) -> tuple[int, Msg]:
        """The next message of this type matching ``where``; others are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                conn, msg = await self.inbox.get()
                if msg.get("type") == type_ and where(msg):
                    return conn, msg

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeServer]:
        async with serve(
            self.handler, "127.0.0.1", 0, process_request=self.process_request
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


def make_config(tmp_path: Path, port: int, **kw: Any) -> AgentConfig:
    token_file = tmp_path / "token"
    if not token_file.exists():
        token_file.write_text(TOKEN + "\n")
    config = AgentConfig(
        server_url=f"http://127.0.0.1:{port}",
        node="node-1",
        token_file=token_file,
        state_dir=tmp_path / "state",
        fabric_dir=tmp_path / "fabric",
        sim_latency=0.01,
        vcpus=8,
        memory_mb=4096,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    return replace(config, **kw)


@contextlib.asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent_async(config, stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


def command(cid: str, kind: str, **args: Any) -> Msg:
    return {
        "type": "command",
        "id": cid,
        "command": kind,
        "args": args,
        "vm_uuid": VM,
        "epoch": 4,
        "timeout": 10,
    }


def answer_to(cid: str) -> Callable[[Msg], bool]:
    return lambda m: m["command_id"] == cid


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(25):
            return await coro

    return asyncio.run(bounded())


def test_hello_welcome_heartbeat(tmp_path: Path) -> None:
    host = Fabric(tmp_path / "fabric").host("node-1")
    host.ensure_host(8, 4096)

    async def go() -> None:
        await asyncio.to_thread(
            host.put_vm,
            SimVm(uuid=VM, name="pre", vcpus=1, memory_mb=128, power=PowerState.RUNNING, epoch=2),
        )
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            _, hello = await srv.expect("hello")
            assert srv.auth[0] == f"Bearer {TOKEN}"
            assert srv.paths[0] == AGENT_PATH
            assert hello["node"] == "node-1"
            assert hello["driver"] == "sim"
            assert hello["capacity"] == {"vcpus": 8, "memory_mb": 4096}
            assert hello["boot_id"] == host.record().boot_id  # type: ignore[union-attr]
            _, beat = await srv.expect("heartbeat")
            assert beat["vms"] == [
                {
                    "uuid": VM,
                    "name": "pre",
                    "power": "running",
                    "vcpus": 1,
                    "memory_mb": 128,
                    "epoch": 2,
                }
            ]

    run(go())


def test_commands_run_and_are_answered_once_per_id(tmp_path: Path) -> None:
    host = Fabric(tmp_path / "fabric").host("node-1")

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            await srv.send(command("c1", "define", name="web", vcpus=2, memory_mb=512))
            _, first = await srv.expect("answer", answer_to("c1"))
            assert first["ok"] is True, first
            assert first["result"]["vm"]["power"] == "stopped"
            assert first["result"]["vm"]["epoch"] == 4

            await srv.send(command("c2", "start"))
            _, started = await srv.expect("answer", answer_to("c2"))
            assert started["ok"] is True and started["result"]["vm"]["power"] == "running"
            vm = await asyncio.to_thread(host.get_vm, VM)
            assert vm is not None and vm.power == PowerState.RUNNING
            # The heartbeat right after the command shows the new state (interval is 30 s).
            _, beat = await srv.expect("heartbeat", timeout=3)
            assert [v["power"] for v in beat["vms"]] == ["running"]

            # Out-of-band rename; re-executing c1 (a define) would rename the VM back.
            await asyncio.to_thread(
                host.update_vm, VM, lambda v: v.model_copy(update={"name": "renamed"})
            )
            await srv.send(command("c1", "define", name="web", vcpus=2, memory_mb=512))
            _, again = await srv.expect("answer", answer_to("c1"))
            assert again == first
            vm = await asyncio.to_thread(host.get_vm, VM)
            assert vm is not None and vm.name == "renamed"

            await srv.send(command("c3", "undefine"))
            _, refused = await srv.expect("answer", answer_to("c3"))
            assert refused["ok"] is False and refused["error"]["code"] == "invalid-state"
            await srv.send(command("c4", "shutdown", timeout=5))
            await srv.send(command("c5", "undefine"))  # serialised after c4 on the VM lock
            _, stopped = await srv.expect("answer", answer_to("c4"))
            assert stopped["ok"] is True and stopped["result"]["vm"]["power"] == "stopped"
            _, gone = await srv.expect("answer", answer_to("c5"))
            assert gone == {
                "type": "answer",
                "command_id": "c5",
                "ok": True,
                "result": {},
                "error": None,
            }
            assert await asyncio.to_thread(host.list_vms) == []

    run(go())


def test_malformed_messages_do_not_kill_the_agent(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            await srv.send("this is not json")
            await srv.send({"type": "no-such-message"})
            await srv.send({"type": "command", "id": "bad", "command": "explode", "timeout": 1})
            await srv.send({"type": "error", "code": "unauthorized", "message": "who are you"})
            await srv.send(command("c-nf", "start"))
            _, bad = await srv.expect("answer", answer_to("bad"))
            assert bad["ok"] is False and bad["error"]["code"] == "invalid-input"
            _, nf = await srv.expect("answer", answer_to("c-nf"))
            assert nf["ok"] is False and nf["error"]["code"] == "not-found"
            await srv.send(command("c-def", "define", name="x", vcpus="lots", memory_mb=1))
            _, bad_args = await srv.expect("answer", answer_to("c-def"))
            assert bad_args["error"]["code"] == "invalid-input"
            assert len(srv.conns) == 1  # still on the first connection

    run(go())


def test_reconnects_after_the_server_drops_the_connection(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            conn1, hello1 = await srv.expect("hello")
            await srv.expect("heartbeat")
            srv.conns[conn1].transport.abort()  # an abrupt drop, no close frame
            conn2, hello2 = await srv.expect("hello")
            assert conn2 > conn1
            assert hello2["incarnation"] == hello1["incarnation"]
            assert srv.auth[-1] == f"Bearer {TOKEN}"
            # The new connection works.
            await srv.send(command("after", "define", name="web", vcpus=1, memory_mb=64))
            _, answer = await srv.expect("answer", answer_to("after"))
            assert answer["ok"] is True

    run(go())


def test_seq_grows_across_agent_runs(tmp_path: Path) -> None:
    async def one_run() -> tuple[str, list[int]]:
        async with FakeServer(heartbeat_interval=0.05).running() as srv:
            async with agent(make_config(tmp_path, srv.port)):
                _, hello = await srv.expect("hello")
                seqs = [(await srv.expect("heartbeat"))[1]["seq"] for _ in range(3)]
            return hello["incarnation"], seqs

    async def go() -> None:
        inc1, seqs1 = await one_run()
        inc2, seqs2 = await one_run()
        assert inc1 != inc2
        assert seqs1 == sorted(set(seqs1))
        assert seqs2 == sorted(set(seqs2))
        assert seqs2[0] > seqs1[-1]
        assert (tmp_path / "state" / "seq").read_text().strip() == "2"

    run(go())


def test_rejected_token_is_retried_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with (
            FakeServer(reject_http=True).running() as srv,
            agent(make_config(tmp_path, srv.port)),
            asyncio.timeout(5),
        ):
            while await srv.attempts.get() < 3:
                pass

    with caplog.at_level(logging.INFO, logger="bollard"):
        run(go())
    assert "refused this node's token (HTTP 401)" in caplog.text
    assert TOKEN not in caplog.text


def test_sigterm_stops_the_agent_process_cleanly(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeServer().running() as srv:
            config = make_config(tmp_path, srv.port)
            code = (
                "import sys; from pathlib import Path\n"
                "from bollard.agent.config import AgentConfig\n"
                "from bollard.agent.process import run_agent\n"
                "a = sys.argv\n"
                "run_agent(AgentConfig(server_url=a[1], node='node-1', token_file=Path(a[2]),"
                " state_dir=Path(a[3]), fabric_dir=Path(a[4]), sim_latency=0.01))\n"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                config.server_url,
                str(config.token_file),
                str(config.state_dir),
                str(config.fabric_dir),
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                await srv.expect("heartbeat", timeout=10)
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(10):
                    _, stderr = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
            text = stderr.decode()
            assert proc.returncode == 0, text
            assert "[node-1]" in text and "agent stopped" in text
            assert TOKEN not in text

    run(go())
    assert os.path.exists(tmp_path / "state" / "seq")


def test_sessions_that_end_at_once_back_off_like_failed_dials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that drops every session as soon as it has welcomed it (overloaded, say): the
    agent's reconnect delay keeps growing to its maximum instead of starting over at every
    welcome, so a fleet does not reconnect in a storm."""
    waits: list[float] = []

    class Recording(random.Random):
        def uniform(self, a: float, b: float) -> float:
            waits.append(b)
            return super().uniform(a, b)

    monkeypatch.setattr(random, "Random", Recording)

    class Dropping(FakeServer):
        async def handler(self, ws: ServerConnection) -> None:
            self.conns.append(ws)
            with contextlib.suppress(Exception):
                async for raw in ws:
                    if json.loads(raw).get("type") == "hello":
                        welcome = {"type": "welcome", "heartbeat_interval": 30.0}
                        await ws.send(json.dumps({**welcome, "server_time": 0.0}))
                        ws.transport.abort()

    async def go() -> None:
        async with Dropping().running() as srv, agent(make_config(tmp_path, srv.port)):
            async with asyncio.timeout(10):
                while len(srv.conns) < 5:
                    await srv.attempts.get()

    run(go())
    assert waits[:4] == [0.05, 0.1, 0.2, 0.2]  # backoff_initial 0.05, backoff_max 0.2
