"""`bollard agent` argument handling (the agent itself is covered by test_agent_session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bollard.cli import agent_cmd


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    agent_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root."""

    return app


def invoke(app: typer.Typer, tmp_path: Path, *extra: str) -> tuple[int, str]:
    args = [
        "agent",
        "--server",
        "http://127.0.0.1:9",
        "--node",
        "n1",
        "--state-dir",
        str(tmp_path / "state"),
        "--fabric-dir",
        str(tmp_path / "fabric"),
        *extra,
    ]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_help_lists_the_options(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["agent", "--help"])
    assert result.exit_code == 0
    options = ("--server", "--token-file", "--fabric-dir", "--sim-latency", "--log-level")
    for option in (*options, "--sim-migration-rate"):
        assert option in result.output


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (None, ("--token-file", "missing"), "does not exist"),
        ("", ("--token-file", "tok"), "is empty"),
        ("t", ("--token-file", "tok", "--driver", "xen"), "unknown driver"),
        ("t", ("--token-file", "tok", "--server", "localhost:9"), "server URL"),
    ],
)
def test_bad_input_is_one_line_error(
    app: typer.Typer, tmp_path: Path, setup: str | None, extra: tuple[str, ...], message: str
) -> None:
    if setup is not None:
        (tmp_path / "tok").write_text(setup)
    extra = tuple(str(tmp_path / e) if e in ("missing", "tok") else e for e in extra)
    code, output = invoke(app, tmp_path, *extra)
    assert code != 0
    assert message in output
    assert "Traceback" not in output
