"""Running the `bollard` CLI in-process against a test server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bollard.cli.main import app
from tests.support.cluster import ServerThread


def point_cli_at(server: ServerThread, config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI talk to `server` with its admin token (no context file of the user's)."""
    monkeypatch.setenv("BOLLARD_URL", server.url)
    monkeypatch.setenv("BOLLARD_TOKEN", server.token)
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(config_dir))
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)


def bollard(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Result) -> str:
    """The one `error: ...` line a failed command printed (exit code 1)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
