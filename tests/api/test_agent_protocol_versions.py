"""The agent protocol's version, negotiated (domain/protocol.py): the agent offers every version
it speaks, the server chooses the newest both speak and says so in its welcome, so agents and
servers of two consecutive releases talk during a rolling upgrade. Hellos of agents from before
negotiation (one ``protocol``) and welcomes of servers from before it (none) still work."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bollard.agent import session as agent_session
from bollard.domain.protocol import Capacity, Hello, Welcome
from bollard.server import gateway
from tests.api.test_gateway_abuse import Keeper, LoopThread, RawAgent
from tests.support.cluster import AgentThread, ServerThread, wait_until


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def keeper(server: ServerThread, tmp_path: Path) -> Iterator[Keeper]:
    kept = Keeper(server, tmp_path)
    yield kept
    kept.stop()


def test_an_agent_from_before_negotiation_gets_its_only_version(
    server: ServerThread, loop: LoopThread
) -> None:
    raw = RawAgent(server, loop, "old")
    hello = raw.hello()
    hello.pop("protocols", None)
    welcome = raw.connect(**hello)
    assert (welcome["type"], welcome["protocol"]) == ("welcome", 1)
    assert server.runtime.gateway.sessions["old"].protocol == 1


def test_the_server_chooses_the_newest_version_both_speak(
    server: ServerThread, loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "SUPPORTED_PROTOCOLS", frozenset({1, 2, 3}))
    newer = RawAgent(server, loop, "newer")
    welcome = newer.connect(protocol=2, protocols=[2, 3, 4])  # speaks 2..4: 3 is shared
    assert (welcome["type"], welcome["protocol"]) == ("welcome", 3)
    assert server.runtime.gateway.sessions["newer"].protocol == 3


def test_no_version_in_common_is_refused_naming_both(
    server: ServerThread, loop: LoopThread, keeper: Keeper
) -> None:
    raw = RawAgent(server, loop, "future")
    first = raw.connect(protocol=4, protocols=[4, 5])
    assert (first["type"], first["code"]) == ("error", "protocol-version")
    assert "agent protocol 4 or 5 is not supported" in first["message"]
    assert "this server speaks agent protocol 1" in first["message"]
    assert "future" not in server.runtime.gateway.sessions
    keeper.assert_unharmed()


def test_a_real_agent_and_server_settle_on_their_newest_shared_version(
    server: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(gateway, "SUPPORTED_PROTOCOLS", frozenset({1, 2}))
    monkeypatch.setattr(agent_session, "AGENT_PROTOCOLS", (1, 2, 3))
    agent = AgentThread(server, "node1", tmp_path)
    try:
        session = wait_until(lambda: server.runtime.gateway.sessions.get("node1"), "node1")
        assert session.protocol == 2
        said = wait_until(
            lambda: [r.getMessage() for r in caplog.records
                     if r.name == "bollard.agent.session" and "connected to" in r.getMessage()],
            "the agent's connected line",
        )  # fmt: skip
        assert "protocol 2)" in said[0]
    finally:
        agent.stop()


def _hello(protocol: int, protocols: list[int]) -> Hello:
    return Hello(node="n", incarnation="i", boot_id="b", driver="sim", protocol=protocol,
                 protocols=protocols, capacity=Capacity(vcpus=1, memory_mb=1))  # fmt: skip


def test_the_agent_takes_a_welcome_without_a_version_for_its_oldest(
    tmp_path: Path, server: ServerThread
) -> None:
    agent = agent_session.AgentSession.__new__(agent_session.AgentSession)
    old_server = Welcome(heartbeat_interval=1.0, server_time=0.0)
    agent._negotiate(old_server, _hello(1, [1, 2]))
    assert agent.protocol == 1
    agent._negotiate(old_server.model_copy(update={"protocol": 2}), _hello(1, [1, 2]))
    assert agent.protocol == 2
    with pytest.raises(agent_session._VersionRefused, match="chose agent protocol 7"):
        agent._negotiate(old_server.model_copy(update={"protocol": 7}), _hello(1, [1, 2]))
