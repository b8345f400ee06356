"""The graphical console (VNC) of a VM through the API server in front of cells: the ticket is
asked of the VM's cell through the API server, and the WebSocket the browser opens on the API
server is relayed to that cell's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from bollard.agent import process
from bollard.agent.config import AgentConfig
from bollard.server.api.console_vnc import BAD_TICKET
from tests.api.test_api_vms import _wait
from tests.api.test_console_vnc import BYE, GREETING, DisplayDriver, FakeDisplay, closed, read
from tests.support.cells import ApiServerThread
from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import SchemaTemplates

DEADLINE = 10.0


@pytest.fixture
def deployment(
    schema_templates: SchemaTemplates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ApiServerThread, FakeDisplay]]:
    """An API server in front of one cell, whose node `gfx` gives its VMs a display (the
    stand-in of test_console_vnc.py); VM `desk` runs there."""
    display = FakeDisplay()
    make_driver = process.make_driver

    def make(config: AgentConfig) -> Any:
        assert config.fabric_dir is not None
        driver = DisplayDriver(config.fabric_dir, config.node, latency=config.sim_latency)
        driver.address = ("127.0.0.1", display.port)
        return driver if config.node == "gfx" else make_driver(config)

    monkeypatch.setattr(process, "make_driver", make)
    (tmp_path / "cell").mkdir()
    cell = ServerThread(tmp_path / "cell" / "server", schema_templates.sqlite(tmp_path / "cell"))
    agent = AgentThread(cell, "gfx", tmp_path / "cell")
    wait_until(lambda: cell.client.get("/nodes/gfx").json()["connected"], "gfx")
    (tmp_path / "api").mkdir()
    api = ApiServerThread(tmp_path / "api" / "server", schema_templates.sqlite(tmp_path / "api"))
    try:
        added = api.client.post("/cells", json={"name": "c1", "url": cell.url, "token": cell.token})
        assert added.status_code == 201, added.text
        body = {"name": "desk", "vcpus": 1, "memory_mb": 128, "start": True, "cell": "c1"}
        assert _wait(api.client, api.client.post("/vms", json=body))["state"] == "succeeded"
        yield api, display
    finally:
        api.stop()
        agent.stop()
        cell.stop()
        display.close()


def _open(api: ApiServerThread, path: str, **options: Any) -> ClientConnection:
    url = api.url.replace("http://", "ws://", 1) + path
    return connect(url, open_timeout=DEADLINE, close_timeout=5, **options)


def test_the_console_is_relayed_through_the_api_server(
    deployment: tuple[ApiServerThread, FakeDisplay],
) -> None:
    api, display = deployment
    answer = api.client.post("/vms/desk/console/vnc")
    assert answer.status_code == 201, answer.text
    ticket = answer.json()
    assert ticket["cell"] == "c1" and ticket["path"].startswith("/console/vnc?ticket=")
    with _open(api, ticket["path"], subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
        assert read(ws, len(GREETING)) == GREETING
        payload = bytes(range(256)) * 100
        ws.send(payload)
        assert read(ws, len(payload)) == payload
        ws.send(BYE)
        code, _ = closed(ws)
        assert code == 1000
    assert display.accepted == 1
    # Used once: the same ticket again is refused, as by the cell itself.
    with _open(api, ticket["path"]) as ws:
        assert closed(ws) == (4401, BAD_TICKET)
    with _open(api, "/console/vnc?ticket=made-up") as ws:
        assert closed(ws) == (4401, BAD_TICKET)
