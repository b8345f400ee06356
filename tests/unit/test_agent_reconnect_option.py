"""`bollard agent --reconnect-max` caps the agent's wait between two attempts to reach the
server (its reconnect backoff), bad values are refused in one line, and `bollard up
--agent-reconnect-max` hands it to every agent it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bollard.agent.config import AgentConfig
from bollard.cli.main import app as main_app
from tests.unit.test_agent_copy_rate import _agent_args, agent_app, up_agent_args

__all__ = ["agent_app"]  # (the fixture, used by name below)


def test_the_option_reaches_the_agents_config(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path, "--reconnect-max", "0.5"))
    assert result.exit_code == 0, result.output
    assert [c.backoff_max for c in seen] == [0.5]
    seen.clear()
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert [(c.backoff_initial, c.backoff_max) for c in seen] == [(0.2, 5.0)]


def test_a_cap_below_the_first_wait_is_refused(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    result = CliRunner().invoke(agent_app, _agent_args(tmp_path, "--reconnect-max", "0.1"))
    assert result.exit_code != 0
    assert "--reconnect-max" in result.output and "Traceback" not in result.output
    assert seen == []


def test_up_hands_it_to_its_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = up_agent_args(tmp_path, monkeypatch, "--agent-reconnect-max", "0.5")
    assert extra[extra.index("--reconnect-max") + 1] == "0.5"
    assert "--agent-reconnect-max" in CliRunner().invoke(main_app, ["up", "--help"]).output
