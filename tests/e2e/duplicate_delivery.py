"""A real `bollard agent` process, driven by a scripted server that delivers the same command
several times, before and after the agent is SIGKILLed and restarted."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bollard.domain.protocol import Ack, Command, Welcome
from bollard.domain.states import CommandType
from bollard.sim.fabric import Fabric

DEADLINE = 30.0
TOKEN = "duplicate-delivery-test-token"


@dataclass
class Report:
    answers: list[dict[str, Any]] = field(default_factory=list)
    answers_first_run: int = 0
    executions: int = 0
    answer_after_restart: dict[str, Any] | None = None
    executions_after_restart: int = 0


class ScriptedServer:
    def __init__(self) -> None:
        self.sessions: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        assert ws.request.headers.get("Authorization") == f"Bearer {TOKEN}"
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        await ws.send(Welcome(heartbeat_interval=0.3, server_time=time.time()).model_dump_json())
        await self.sessions.put(ws)
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "answer":
                await self.answers.put(msg)
            elif msg["type"] == "heartbeat" and msg["journal"]:
                entries = {e["command_id"]: e["state"] for e in msg["journal"]}
                await ws.send(Ack(entries=entries).model_dump_json())


def _agent(port: int, base: Path) -> subprocess.Popen[bytes]:
    token_file = base / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    argv = [
        sys.executable, "-m", "bollard", "agent",
        "--server", f"http://127.0.0.1:{port}", "--node", "dup1",
        "--token-file", str(token_file), "--driver", "sim",
        "--state-dir", str(base / "state"), "--fabric-dir", str(base / "fabric"),
        "--sim-latency", "0.2",
    ]  # fmt: skip
    log = (base / "agent.log").open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _executions(base: Path, command_id: str) -> int:
    host = Fabric(base / "fabric").host("dup1")
    return sum(1 for op in host.executed() if op.command_id == command_id)


async def _scenario(base: Path) -> Report:
    report = Report()
    server = ScriptedServer()
    vm_uuid = str(uuid.uuid4())
    command = Command(
        id=f"dup-{uuid.uuid4()}",
        command=CommandType.DEFINE,
        args={"name": "dup-vm", "vcpus": 1, "memory_mb": 64},
        vm_uuid=vm_uuid,
        epoch=1,
        timeout=20,
    ).model_dump_json()
    async with serve(server.handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        agent = _agent(port, base)
        try:
            ws = await asyncio.wait_for(server.sessions.get(), DEADLINE)
            await ws.send(command)  # delivered twice while it runs...
            await ws.send(command)
            report.answers.append(await asyncio.wait_for(server.answers.get(), DEADLINE))
            await ws.send(command)  # ...and once more after it finished
            report.answers.append(await asyncio.wait_for(server.answers.get(), DEADLINE))
            await ws.send(command)
            report.answers.append(await asyncio.wait_for(server.answers.get(), DEADLINE))
            report.answers_first_run = len(report.answers)
            report.executions = _executions(base, json.loads(command)["id"])

            agent.send_signal(signal.SIGKILL)
            agent.wait(DEADLINE)
            agent = _agent(port, base)
            ws = await asyncio.wait_for(server.sessions.get(), DEADLINE)
            await ws.send(command)
            report.answer_after_restart = await asyncio.wait_for(server.answers.get(), DEADLINE)
            report.executions_after_restart = _executions(base, json.loads(command)["id"])
        finally:
            agent.terminate()
            try:
                agent.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                agent.kill()
    return report


def run_duplicate_delivery(base: Path) -> Report:
    return asyncio.run(_scenario(base))
