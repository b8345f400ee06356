"""A clean shutdown of the agent's host (agent/host_shutdown.py): how the agent learns of it
(systemd with a fake `systemctl`, the sim fabric's mark), and what the agent does when it is
stopped then: with a fake session (`announce_shutdown`), and the real agent against a small
in-test WebSocket server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bollard.agent.config import AgentConfig
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.host_shutdown import (
    CommandResult,
    DriverShutdown,
    NoShutdown,
    ShutdownNotice,
    SystemdShutdown,
    announce_shutdown,
    detector_for,
    kind_from_jobs,
    run_command,
)
from bollard.agent.process import run_agent_async
from bollard.domain.ha import ShutdownKind
from bollard.domain.protocol import ErrorMsg, Hello, HostShutdown, HostShutdownReady
from bollard.sim import Fabric
from bollard.sim.host_shutdown import mark_shutdown
from tests.unit.test_agent_session import FakeServer, make_config, run

# What `systemctl list-jobs --no-legend --no-pager` prints during a shutdown.
REBOOT_JOBS = """\
 1234 reboot.target                start   waiting
 1301 libvirtd.service             stop    running
 1288 bollard-agent.service        stop    running
"""
POWEROFF_JOBS = """\
  912 poweroff.target              start   waiting
  930 systemd-poweroff.service     start   waiting
  955 bollard-agent.service        stop    running
"""


def test_the_queued_target_tells_a_reboot_from_a_poweroff() -> None:
    assert kind_from_jobs(REBOOT_JOBS) is ShutdownKind.REBOOT
    assert kind_from_jobs(POWEROFF_JOBS) is ShutdownKind.POWEROFF
    assert kind_from_jobs(" 7 kexec.target start waiting\n") is ShutdownKind.REBOOT
    assert kind_from_jobs(" 7 halt.target start waiting\n") is ShutdownKind.POWEROFF
    assert kind_from_jobs(" 7 nginx.service restart running\n") is None
    assert kind_from_jobs("") is None


class FakeSystemctl:
    """Answers `systemctl is-system-running` and `systemctl list-jobs` as told."""

    def __init__(self, state: str, jobs: str = "", fail: BaseException | None = None) -> None:
        self.state = state
        self.jobs = jobs
        self.fail = fail
        self.calls: list[list[str]] = []

    async def __call__(self, argv: list[str], timeout: float) -> CommandResult:
        self.calls.append(argv)
        if self.fail is not None:
            raise self.fail
        if argv[1] == "is-system-running":
            return CommandResult(0 if self.state == "running" else 1, self.state + "\n")
        assert argv[1] == "list-jobs"
        return CommandResult(0, self.jobs)


def _systemd(tmp_path: Path, fake: FakeSystemctl, booted: bool = True) -> SystemdShutdown:
    runtime = tmp_path / "run-systemd-system"
    if booted:
        runtime.mkdir(exist_ok=True)
    return SystemdShutdown(run=fake, runtime_dir=runtime)


@pytest.mark.parametrize(
    ("state", "jobs", "expected"),
    [
        ("running", REBOOT_JOBS, None),  # the agent alone is stopped (systemctl stop)
        ("degraded", POWEROFF_JOBS, None),
        ("stopping", REBOOT_JOBS, ShutdownKind.REBOOT),
        ("stopping", POWEROFF_JOBS, ShutdownKind.POWEROFF),
        ("stopping", "", ShutdownKind.POWEROFF),  # going down, no target seen: a power-off
    ],
)
def test_systemd_says_whether_and_how_the_host_goes_down(
    tmp_path: Path, state: str, jobs: str, expected: ShutdownKind | None
) -> None:
    fake = FakeSystemctl(state, jobs)
    assert asyncio.run(_systemd(tmp_path, fake).pending()) is expected
    asked = [argv[1] for argv in fake.calls]
    assert asked == (["is-system-running", "list-jobs"] if state == "stopping" else
                     ["is-system-running"])  # fmt: skip


def test_without_systemd_or_a_working_systemctl_there_is_no_shutdown(tmp_path: Path) -> None:
    fake = FakeSystemctl("stopping", REBOOT_JOBS)
    assert asyncio.run(_systemd(tmp_path, fake, booted=False).pending()) is None
    assert fake.calls == []  # not booted with systemd: not asked
    for failure in (FileNotFoundError("systemctl"), TimeoutError()):
        broken = FakeSystemctl("stopping", REBOOT_JOBS, fail=failure)
        assert asyncio.run(_systemd(tmp_path, broken).pending()) is None


def test_the_command_runner_runs_a_real_process_with_a_deadline() -> None:
    done = asyncio.run(run_command(["sh", "-c", "echo stopping; exit 1"], 5.0))
    assert done == CommandResult(1, "stopping\n")
    with pytest.raises(TimeoutError):
        asyncio.run(run_command(["sleep", "5"], 0.2))
    with pytest.raises(OSError):
        asyncio.run(run_command(["/nonexistent/systemctl"], 1.0))


def test_a_sim_host_is_shutting_down_when_its_fabric_says_so(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "fabric")
    driver = SimDriver(fabric.root, "node-1", latency=0.0)
    fabric.host("node-1").ensure_host(8, 4096)
    detector = detector_for(driver)
    assert isinstance(detector, DriverShutdown)
    assert asyncio.run(detector.pending()) is None
    mark_shutdown(fabric, "node-1", ShutdownKind.REBOOT)
    assert asyncio.run(detector.pending()) is ShutdownKind.REBOOT
    # The boot that ends a reboot clears the mark.
    host = fabric.host("node-1")
    host.power_off()
    host.power_on()
    assert asyncio.run(detector.pending()) is None
    assert isinstance(detector_for(MemoryDriver(MemoryFabric(), "node-2")), NoShutdown)


class FakeSession:
    """What `announce_shutdown` talks to: a send that may fail, and the server's answer
    (delivered as the session's receive loop would)."""

    def __init__(self, connected: bool = True, answer: BaseModel | None = None) -> None:
        self.connected = connected
        self.answer = answer
        self.notice = ShutdownNotice()
        self.sent: list[BaseModel] = []

    async def send(self, msg: BaseModel) -> bool:
        if not self.connected:
            return False
        self.sent.append(msg)
        if isinstance(self.answer, HostShutdownReady):
            asyncio.get_running_loop().call_later(0.05, self.notice.on_ready, self.answer)
        elif isinstance(self.answer, ErrorMsg):
            asyncio.get_running_loop().call_later(0.05, self.notice.on_error, self.answer)
        return True


class Fixed:
    def __init__(self, kind: ShutdownKind | None) -> None:
        self.kind = kind

    async def pending(self) -> ShutdownKind | None:
        return self.kind


def _announce(session: FakeSession, kind: ShutdownKind | None, wait: float = 5.0) -> Any:
    async def go() -> tuple[Any, float]:
        began = asyncio.get_running_loop().time()
        answer = await announce_shutdown(Fixed(kind), session.notice, session.send, wait=wait)
        return answer, asyncio.get_running_loop().time() - began

    return asyncio.run(go())


def test_no_shutdown_tells_the_server_nothing() -> None:
    session = FakeSession(answer=HostShutdownReady(ok=True))
    assert _announce(session, None)[0] is None
    assert session.sent == [] and session.notice.kind is None


def test_a_shutdown_is_announced_and_the_agent_waits_for_the_answer() -> None:
    ready = HostShutdownReady(ok=True, action="migrate", message="drained")
    session = FakeSession(answer=ready)
    answer, took = _announce(session, ShutdownKind.POWEROFF)
    assert answer == ready
    assert session.sent == [HostShutdown(kind=ShutdownKind.POWEROFF)]
    assert took >= 0.04  # it waited for the answer
    assert session.notice.message() is None  # answered: not sent again after a reconnect


def test_the_wait_ends_at_its_deadline_or_when_the_server_does_not_know_the_message() -> None:
    silent = FakeSession(answer=None)
    answer, took = _announce(silent, ShutdownKind.REBOOT, wait=0.3)
    assert answer is None and 0.3 <= took < 3.0
    # Unanswered: a new session would be told again.
    assert silent.notice.message() == HostShutdown(kind=ShutdownKind.REBOOT)
    old = ErrorMsg(code="malformed", message="message refused: unknown message type "
                   "'host_shutdown'")  # fmt: skip
    answer, took = _announce(FakeSession(answer=old), ShutdownKind.REBOOT, wait=30.0)
    assert answer is None and took < 3.0


def test_not_connected_the_agent_does_not_wait() -> None:
    session = FakeSession(connected=False, answer=HostShutdownReady(ok=True))
    answer, took = _announce(session, ShutdownKind.POWEROFF, wait=30.0)
    assert answer is None and took < 3.0


# -- the real agent against an in-test server -------------------------------------------------


class RunningAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(run_agent_async(config, self.stop_event))

    async def stop(self) -> None:
        """Stop it (as SIGTERM does) and wait until it has exited."""
        self.stop_event.set()
        await asyncio.shield(self.task)


@contextlib.asynccontextmanager
async def agent(config: AgentConfig) -> AsyncIterator[RunningAgent]:
    running = RunningAgent(config)
    try:
        yield running
    finally:
        running.stop_event.set()
        async with asyncio.timeout(15):
            await running.task


def _config(tmp_path: Path, port: int, **kw: Any) -> AgentConfig:
    return make_config(tmp_path, port, shutdown_wait=kw.pop("shutdown_wait", 8.0), **kw)


def _ready(**kw: Any) -> dict[str, Any]:
    return {"type": "host_shutdown_ready", "ok": True, "action": "migrate", "message": ""} | kw


def test_a_stopped_agent_of_a_host_going_down_waits_for_the_server(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "fabric")

    async def go() -> None:
        async with FakeServer().running() as srv, agent(_config(tmp_path, srv.port)) as running:
            _, hello = await srv.expect("hello")
            assert hello.get("shutting_down") is None
            await srv.expect("heartbeat")
            await asyncio.to_thread(mark_shutdown, fabric, "node-1", ShutdownKind.POWEROFF)
            # Stopped (as by SIGTERM): it announces the shutdown and does not exit yet.
            stopping = asyncio.create_task(running.stop())
            _, said = await srv.expect("host_shutdown")
            assert said["kind"] == "poweroff"
            await asyncio.sleep(0.3)  # a window in which it must still wait for the answer
            assert not running.task.done()
            # The session drops: the agent dials again, says so in its hello, and tells the
            # new session.
            await srv.conns[-1].close()
            _, again = await srv.expect("hello")
            assert again["shutting_down"] == "poweroff"
            _, resent = await srv.expect("host_shutdown")
            assert resent["kind"] == "poweroff"
            assert not running.task.done()
            await srv.send(_ready(message="drained"))
            async with asyncio.timeout(10):
                await stopping
            assert running.task.exception() is None

    run(go())


def test_an_agent_stopped_while_its_host_stays_up_tells_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with FakeServer().running() as srv:
            async with agent(_config(tmp_path, srv.port)) as running:
                await srv.expect("heartbeat")
                async with asyncio.timeout(10):
                    await running.stop()
            sent = [msg["type"] for _, msg in _drain(srv)]
            assert "host_shutdown" not in sent

    run(go())


def test_a_silent_server_holds_the_agent_no_longer_than_its_wait(tmp_path: Path) -> None:
    fabric = Fabric(tmp_path / "fabric")

    async def go() -> None:
        async with FakeServer().running() as srv:
            config = _config(tmp_path, srv.port, shutdown_wait=0.5)
            async with agent(config) as running:
                await srv.expect("heartbeat")
                await asyncio.to_thread(mark_shutdown, fabric, "node-1", ShutdownKind.REBOOT)
                began = asyncio.get_running_loop().time()
                async with asyncio.timeout(10):
                    await running.stop()
                took = asyncio.get_running_loop().time() - began
            _, said = await srv.expect("host_shutdown")
            assert said["kind"] == "reboot"
            assert 0.5 <= took < 5.0

    run(go())


def _drain(srv: FakeServer) -> list[tuple[int, dict[str, Any]]]:
    out = []
    while not srv.inbox.empty():
        out.append(srv.inbox.get_nowait())
    return out


def test_the_hello_of_an_older_agent_still_parses() -> None:
    hello = Hello.model_validate_json(
        '{"type": "hello", "node": "n", "incarnation": "i", "boot_id": "b", "driver": "sim",'
        ' "capacity": {"vcpus": 1, "memory_mb": 1}}'
    )
    assert hello.shutting_down is None
