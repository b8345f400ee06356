"""An agent given several servers: the addresses it dials in turn (the configured ones, then
those the last welcome named), its backoff across a round of them, and `--server` repeated."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection

from bollard.agent import process
from bollard.agent.config import AgentConfig, AgentConfigError, validate
from bollard.agent.servers import ServerRotation
from bollard.agent.session import AgentSession
from bollard.domain.protocol import MAX_WELCOME_SERVERS, Welcome, server_message
from tests.unit.test_agent_copy_rate import _agent_args, agent_app
from tests.unit.test_agent_session import FakeServer, agent, make_config, run

__all__ = ["agent_app"]  # (the fixture, used by name below)

A, B, C, D = (f"http://10.0.0.{n}:8700" for n in range(1, 5))


def rotation(*urls: str, initial: float = 0.2, maximum: float = 5.0) -> ServerRotation:
    return ServerRotation(urls, initial=initial, maximum=maximum)


def dial_order(servers: ServerRotation, attempts: int) -> list[str]:
    """The servers dialled by ``attempts`` attempts that all fail."""
    order = []
    for _ in range(attempts):
        order.append(servers.current)
        servers.failed()
    return order


def test_the_configured_servers_are_dialled_in_turn() -> None:
    servers = rotation(A, B, C)
    assert dial_order(servers, 7) == [A, B, C, A, B, C, A]
    assert servers.position() == (2, 3)


def test_a_server_given_twice_is_dialled_once() -> None:
    servers = rotation(A, B, A + "/", B.replace("http", "ws"))
    assert servers.urls == (A, B)
    assert dial_order(servers, 3) == [A, B, A]


def test_the_welcome_adds_its_servers_after_the_configured_ones() -> None:
    servers = rotation(A, B)
    servers.learn([C, A, D, C])
    assert servers.urls == (A, B, C, D)
    assert dial_order(servers, 5) == [A, B, C, D, A]


def test_a_welcome_list_replaces_the_one_before() -> None:
    servers = rotation(A)
    servers.learn([B, C])
    servers.learn([D])
    assert servers.urls == (A, D)
    servers.learn([])  # a server that names none (an older one, or the only one)
    assert servers.learned == () and servers.configured == (A,)


def test_after_a_learned_server_was_left_out_the_first_one_comes_next() -> None:
    servers = rotation(A)
    servers.learn([B, C])
    assert dial_order(servers, 1) == [A]
    servers.learn([C])  # B is gone while the agent is connected to it
    assert servers.current == B and servers.position() == (0, 2)
    assert dial_order(servers, 3) == [B, A, C]


def test_unusable_addresses_from_the_welcome_are_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers = rotation(A)
    with caplog.at_level(logging.WARNING, logger="bollard.agent.servers"):
        servers.learn(["10.0.0.9:8700", "https://10.0.0.8:8443", B])
    assert servers.urls == (A, B)
    assert "'10.0.0.9:8700' is not a server URL" in caplog.text
    assert "https://10.0.0.8:8443 is not http" in caplog.text


def test_a_full_round_of_failures_doubles_the_wait() -> None:
    servers = rotation(A, B, C, initial=0.2, maximum=1.0)
    waits = [servers.failed() for _ in range(12)]
    # within a round the short first wait; after each round the delay, then doubled
    assert waits == [0.2, 0.2, 0.2, 0.2, 0.2, 0.4, 0.2, 0.2, 0.8, 0.2, 0.2, 1.0]


def test_one_server_backs_off_at_every_attempt() -> None:
    servers = rotation(A, initial=0.05, maximum=0.2)
    assert [servers.failed() for _ in range(4)] == [0.05, 0.1, 0.2, 0.2]


def test_a_stable_session_starts_the_backoff_over() -> None:
    servers = rotation(A, B, initial=0.2, maximum=5.0)
    for _ in range(6):
        servers.failed()
    assert servers.delay == 1.6
    assert servers.failed(stable=True) == 0.2  # the session lost: the next server at once
    assert [servers.failed() for _ in range(3)] == [0.2, 0.2, 0.4]


def test_a_round_counts_the_servers_learned_meanwhile() -> None:
    servers = rotation(A, initial=0.2, maximum=5.0)
    servers.learn([B, C])
    assert [servers.failed() for _ in range(3)] == [0.2, 0.2, 0.2]
    servers.learn([])  # fewer servers than failures in this round: the round is over
    assert servers.failed() == 0.4


def test_a_refusal_of_the_version_waits_longest_after_the_round() -> None:
    servers = rotation(A, B, initial=0.2, maximum=5.0)
    servers.slow()
    assert [servers.failed(), servers.failed(), servers.failed()] == [0.2, 5.0, 0.2]


# -- configuration and command line ----------------------------------------------------------


def _config(tmp_path: Path, *urls: str) -> AgentConfig:
    base = AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s", fabric_dir=tmp_path)
    return replace(base, server_url=urls[0], extra_server_urls=urls[1:])


def test_every_configured_server_is_checked(tmp_path: Path) -> None:
    config = _config(tmp_path, A, B)
    assert config.server_urls == (A, B)
    validate(config)
    with pytest.raises(AgentConfigError, match=r"server URL must look like .*'10\.0\.0\.2:1'"):
        validate(_config(tmp_path, A, "10.0.0.2:1"))
    with pytest.raises(AgentConfigError, match="mix http and https"):
        validate(replace(_config(tmp_path, A, "https://10.0.0.2:1"), ca_file="system"))
    with pytest.raises(AgentConfigError, match="needs --ca-file"):
        validate(_config(tmp_path, "https://10.0.0.1:1", "https://10.0.0.2:1"))


def test_server_repeated_on_the_command_line(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    args = _agent_args(tmp_path, "--server", B, "--server", C)
    result = CliRunner().invoke(agent_app, args)
    assert result.exit_code == 0, result.output
    assert [c.server_urls for c in seen] == [("http://127.0.0.1:9", B, C)]
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path, "--server", "localhost:9"))
    assert result.exit_code != 0
    assert "server URL" in result.output and "Traceback" not in result.output
    assert len(seen) == 1
    help_text = CliRunner().invoke(agent_app, ["agent", "--help"]).output
    assert "Repeat it" in help_text and "Several servers" in help_text


def test_the_welcome_names_servers_within_bounds() -> None:
    old = server_message.validate_json(
        '{"type": "welcome", "heartbeat_interval": 10, "server_time": 0}'
    )
    assert isinstance(old, Welcome) and old.servers == []
    welcome = {"type": "welcome", "heartbeat_interval": 10, "server_time": 0, "servers": [A, B]}
    parsed = server_message.validate_json(json.dumps(welcome))
    assert isinstance(parsed, Welcome) and parsed.servers == [A, B]
    for servers in ([A] * (MAX_WELCOME_SERVERS + 1), ["http://" + "h" * 250]):
        with pytest.raises(ValidationError):
            Welcome(heartbeat_interval=10, server_time=0, servers=servers)


# -- the agent between real (small, in-test) servers -----------------------------------------


class Naming(FakeServer):
    """A FakeServer whose welcome names other servers."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    async def handler(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        index = len(self.conns) - 1
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "hello":
                    welcome = {"type": "welcome", "heartbeat_interval": 30.0, "server_time": 0.0}
                    await ws.send(json.dumps({**welcome, "servers": self.names}))
                await self.inbox.put((index, msg))


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on which nothing listens (held, so no one else takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_the_agent_moves_on_to_the_next_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Dead first server: the agent reaches the second, which names a third; when the second
    drops the session, the agent dials the third, and sends its console tunnels and image
    transfers there."""
    sessions: list[AgentSession] = []

    class Recorded(AgentSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sessions.append(self)

    monkeypatch.setattr(process, "AgentSession", Recorded)
    caplog.set_level(logging.INFO, logger="bollard.agent")

    async def go() -> None:
        third = FakeServer()
        async with third.running():
            c = f"http://127.0.0.1:{third.port}"
            second = Naming([c])
            async with second.running():
                b = f"http://127.0.0.1:{second.port}"
                with closed_port() as dead:
                    a = f"http://127.0.0.1:{dead}"
                    config = replace(make_config(tmp_path, dead), extra_server_urls=(b,))
                    async with agent(config):
                        await second.expect("heartbeat", timeout=10)  # after the welcome
                        (session,) = sessions
                        assert session.servers.urls == (a, b, c)
                        assert session.tunnels.config.server_url == b
                        await second.conns[-1].close()
                        _, hello = await third.expect("hello", timeout=10)
                        assert hello["node"] == "node-1"
                        assert session.tunnels.config.server_url == c
                        assert session.executor.images is not None
                        assert session.executor.images.base == c
        messages = [r.getMessage() for r in caplog.records if "connecting to" in r.getMessage()]
        assert messages == [f"connecting to {a} (1 of 2)", f"connecting to {b} (2 of 2)",
                            f"connecting to {c} (3 of 3)"]  # fmt: skip

    run(go())
