"""An in-process cluster for API tests: the real server (uvicorn on a free loopback port) and
real agents (sim driver), each in its own thread and event loop, talking over real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bollard.agent.config import AgentConfig
from bollard.agent.process import run_agent_async
from bollard.server.assembly import Assembly, prepare
from bollard.server.config import ServerConfig

DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class ServerThread:
    def __init__(self, data_dir: Path, db_url: str, heartbeat: float = 0.5) -> None:
        self.config = ServerConfig(
            data_dir=data_dir,
            db_url=db_url,
            port=free_port(),
            heartbeat_interval=heartbeat,
            command_timeout=10,
        )
        self.runtime: Assembly = prepare(self.config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.runtime.app(),
                host="127.0.0.1",
                port=self.config.port,
                log_level="warning",
                ws="websockets-sansio",
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, "the server to start")
        self.url = f"http://127.0.0.1:{self.config.port}"
        self.token = (data_dir / "admin.token").read_text().strip()
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=DEADLINE)
        assert not self.thread.is_alive(), "server thread did not stop"


class AgentThread:
    def __init__(
        self,
        server: ServerThread,
        node: str,
        base: Path,
        *,
        config: AgentConfig | None = None,
        **options: Any,
    ) -> None:
        """Enrol `node` and run its agent; with `config`, run an enrolled agent again."""
        if config is None:
            answer = server.client.post("/nodes", json={"name": node})
            answer.raise_for_status()
            token_file = base / f"{node}.token"
            token_file.write_text(answer.json()["token"])
            config = AgentConfig(
                server_url=server.url,
                node=node,
                token_file=token_file,
                state_dir=base / f"{node}-state",
                fabric_dir=base / "fabric",
                sim_latency=options.pop("sim_latency", 0.01),
                **options,
            )
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(DEADLINE)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await run_agent_async(self.config, self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self, deadline: float = DEADLINE) -> None:
        """Stop the agent and wait (at most ``deadline`` seconds) for it to exit; an agent whose
        host shuts down cleanly waits for the server's answer first."""
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=deadline)
        assert not self.thread.is_alive(), "agent thread did not stop"
        assert self.error is None, f"agent failed: {self.error!r}"
