"""What the crash tests of a local cluster share: an API client of it, its server process,
and restarting that server armed with crash points (BOLLARD_CRASH_POINTS)."""

from __future__ import annotations

import os
import signal
import ssl
from typing import Any

import httpx

from bollard.cli.cluster import is_running
from tests.e2e.conftest import Cli


def api_client(cli: Cli) -> httpx.Client:
    token = (cli.data_dir / "admin.token").read_text().strip()
    return httpx.Client(
        base_url=cli.cluster().url + "/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        verify=ssl.create_default_context(cafile=str(cli.data_dir / "tls" / "ca.pem")),
    )


def server_process(cli: Cli) -> Any:
    return next(p for p in cli.cluster().processes if p.name == "server")


def every_node_connected(c: httpx.Client) -> bool:
    try:
        status = c.get("/status").json()
    except (httpx.TransportError, ValueError):
        return False
    return bool(status["nodes"]["connected"] == status["nodes"]["total"])


def restart_server(cli: Cli, crash_points: str | None) -> None:
    """Start the server again (SIGKILLing it first if it runs), armed with `crash_points`."""
    proc = server_process(cli)
    if is_running(proc.pid, proc.argv):
        os.kill(proc.pid, signal.SIGKILL)
        cli.wait_until("the old server is gone", lambda: not is_running(proc.pid, proc.argv))
    env = {"BOLLARD_CRASH_POINTS": crash_points} if crash_points else {}
    result = cli.run("up", "--restart-process", "server", "--data-dir", str(cli.data_dir), env=env)
    assert result.returncode == 0, result.stderr
    with api_client(cli) as c:
        cli.wait_until(
            "the server is up with every node connected",
            lambda: every_node_connected(c),
            timeout=30,
        )
