"""The sim copy rate option: `bollard agent --sim-copy-rate` reaches the sim driver (a copy
lasts size / rate seconds), bad rates are refused in one line, and `bollard up
--sim-copy-rate` hands it to every agent it starts."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bollard.agent.config import AgentConfig, AgentConfigError, make_driver
from bollard.agent.drivers.sim import DEFAULT_COPY_RATE, SimDriver
from bollard.agent.drivers.storage import PoolRef
from bollard.cli import agent_cmd, up_cmd, up_servers
from bollard.cli.main import app as main_app

POOL = PoolRef(name="fast", type="local", path="/srv/fast")


def _config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        "http://h:1", "n1", tmp_path / "t", tmp_path / "s", fabric_dir=tmp_path / "fabric"
    )


def _copy_duration(driver: SimDriver, size_mb: int) -> float:
    """Start a copy of a new ``size_mb`` volume on the driver's host; the job's duration."""

    async def go() -> float:
        async with asyncio.timeout(10):
            await driver.create_volume(POOL, "src", size_mb)
            await driver.copy_volume("c1", POOL, "src", POOL, "dst", target=driver.node)
        job = driver.host.jobs.get("c1")
        assert job is not None
        return job.duration

    return asyncio.run(go())


def test_make_driver_passes_the_copy_rate(tmp_path: Path) -> None:
    driver = make_driver(replace(_config(tmp_path), sim_copy_rate=8.0, sim_latency=0.0))
    assert isinstance(driver, SimDriver) and driver.copy_rate == 8.0
    assert _copy_duration(driver, 64) == 8.0  # 64 MiB at 8 MiB/s


def test_the_default_copy_rate_and_its_floor(tmp_path: Path) -> None:
    driver = make_driver(replace(_config(tmp_path), sim_latency=0.5))
    assert isinstance(driver, SimDriver) and driver.copy_rate == DEFAULT_COPY_RATE == 2048.0
    assert _copy_duration(driver, 64) == 0.5  # faster than the latency: the latency


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_rate_that_is_not_positive_is_refused(tmp_path: Path, rate: float) -> None:
    with pytest.raises(AgentConfigError, match="sim copy rate must be > 0"):
        make_driver(replace(_config(tmp_path), sim_copy_rate=rate))


@pytest.fixture
def agent_app() -> typer.Typer:
    app = typer.Typer()
    agent_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root."""

    return app


def _agent_args(tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "tok").write_text("t0ken")
    return [
        "agent", "--server", "http://127.0.0.1:9", "--node", "n1",
        "--token-file", str(tmp_path / "tok"), "--state-dir", str(tmp_path / "state"),
        "--fabric-dir", str(tmp_path / "fabric"), *extra,
    ]  # fmt: skip


def test_the_agent_option_reaches_its_config(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path, "--sim-copy-rate", "12.5"))
    assert result.exit_code == 0, result.output
    assert [c.sim_copy_rate for c in seen] == [12.5]
    seen.clear()
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert [c.sim_copy_rate for c in seen] == [DEFAULT_COPY_RATE]


def test_the_agent_refuses_a_zero_rate(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path, "--sim-copy-rate", "0"))
    assert result.exit_code != 0
    assert "--sim-copy-rate" in result.output and "Traceback" not in result.output
    assert seen == []


def test_help_lists_the_option(agent_app: typer.Typer) -> None:
    assert "--sim-copy-rate" in CliRunner().invoke(agent_app, ["agent", "--help"]).output
    assert "--sim-copy-rate" in CliRunner().invoke(main_app, ["up", "--help"]).output


def up_agent_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> list[str]:
    """The extra arguments `bollard up <flags>` gives every agent it starts (the start itself
    is replaced: only the arguments are looked at)."""
    calls: list[list[str]] = []

    def fake_start(launcher: Any, plan: up_servers.ServersPlan, *args: Any) -> list[str]:
        calls.append(plan.base.agent_extra)  # the agents' extra arguments
        return ["node1"]

    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr(up_servers, "start_servers", fake_start)
    monkeypatch.setattr(up_cmd, "_print_usage", lambda *a, **k: None)
    umask = os.umask(0o022)  # `bollard up` sets its own: the test process gets it back
    os.umask(umask)
    argv = ["up", "--detach", "--insecure-http", "--data-dir", str(tmp_path / "data"),
            "--port", str(_free_port()), *flags]  # fmt: skip
    try:
        result = CliRunner().invoke(main_app, argv)
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    [extra] = calls
    return extra


def test_up_hands_the_copy_rate_to_its_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bollard up --sim-copy-rate` passes the rate to every agent's command line, as it
    does the migration rate."""
    extra = up_agent_args(tmp_path, monkeypatch, "--sim-copy-rate", "20")
    assert extra[extra.index("--sim-copy-rate") + 1] == "20"
    assert extra[extra.index("--sim-migration-rate") + 1] == "2048"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
