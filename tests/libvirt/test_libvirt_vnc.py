"""The graphical console on a real libvirt host: the VNC display of a QEMU guest, which
listens on the host's loopback only, comes through the tunnel (server <-> agent <-> host VNC)
to a WebSocket client, to `bollard vm vnc`, and to noVNC in the web console (Debian's
Chromium, marker `ui` too: `make test-ui` runs it, skipped with the reason where Chromium or
Playwright is missing)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.libvirt.bollard_cluster import LibvirtCluster
from tests.libvirt.test_libvirt_e2e import cluster  # noqa: F401 - the module's cluster fixture
from tests.ui.needs import unavailable_reason

if TYPE_CHECKING:  # Playwright is imported by the browser test only (it may be missing)
    from playwright.sync_api import Page

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600)]

RFB_VERSION = re.compile(rb"RFB 003\.00[0-9]\n")  # the first 12 bytes a VNC server sends
DEADLINE = 30.0
SCREEN = "screen"  # the module's running QEMU guest, on host "a"
# Read before any fixture runs: without a browser, the browser test is skipped before the
# libvirt cluster is started for it (the other tests here run regardless).
BROWSER_MISSING = unavailable_reason()


def _read(ws: ClientConnection, size: int) -> bytes:
    data = b""
    while len(data) < size:
        frame = ws.recv(timeout=DEADLINE)
        assert isinstance(frame, bytes)
        data += frame
    return data


def _ticket(c: LibvirtCluster, vm: str) -> dict[str, Any]:
    answer = c.api.post(f"/vms/{vm}/console/vnc")
    assert answer.status_code == 201, answer.text
    ticket: dict[str, Any] = answer.json()
    return ticket


def _openings(c: LibvirtCluster, vm: str) -> list[str]:
    """The nodes of the VM's `console.opened` events, oldest first."""
    events = c.api.get("/events", params={"vm": vm, "limit": 1000}).json()["items"]
    return [e["node"] for e in events if e["kind"] == "console.opened"]


@pytest.fixture(scope="module")
def screen(cluster: LibvirtCluster) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    """A running QEMU guest on host "a" (its display: VNC on the host's loopback), shared by
    the tests here and deleted after them."""
    body = {"name": SCREEN, "vcpus": 1, "memory_mb": 128, "node": "a", "start": True}
    assert cluster.wait_task(cluster.api.post("/vms", json=body))["state"] == "succeeded"
    yield SCREEN
    assert cluster.wait_task(cluster.api.delete(f"/vms/{SCREEN}"))["state"] == "succeeded"


def test_a_qemu_guests_vnc_handshake_comes_through_the_tunnel(
    cluster: LibvirtCluster,  # noqa: F811 - the fixture imported above
    screen: str,
) -> None:
    c = cluster
    display = c.console(screen)["display"]
    assert display["type"] == "vnc" and display["listen"] == "127.0.0.1"  # host only
    before = _openings(c, screen)

    ticket = _ticket(c, screen)
    url = c.url.replace("http://", "ws://", 1) + ticket["path"]
    with connect(url, subprotocols=["binary"], open_timeout=DEADLINE) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "binary"
        version = _read(ws, 12)
        assert RFB_VERSION.fullmatch(version), version
        ws.send(b"RFB 003.008\n")  # the client's version: QEMU lists its security types
        types = _read(ws, 1)
        assert types[0] > 0, "the server offered no security type"
    assert _openings(c, screen) == [*before, "a"]

    # `bollard vm vnc`, as a desktop viewer would use it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_URL=c.url, BOLLARD_TOKEN=str(c.api.headers["authorization"])[7:])
    cli = subprocess.Popen(
        [sys.executable, "-m", "bollard", "vm", "vnc", screen, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert cli.stdout is not None
        line = cli.stdout.readline().decode()
        where = re.search(r"point a VNC viewer at 127\.0\.0\.1:(\d+) ", line)
        assert where, line
        with socket.create_connection(("127.0.0.1", int(where[1])), timeout=DEADLINE) as viewer:
            version = viewer.recv(12, socket.MSG_WAITALL)
        assert RFB_VERSION.fullmatch(version), version
    finally:
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=DEADLINE)
    assert cli.returncode == 0, err.decode()
    assert b"stopped" in err
    # Each connection of a viewer is a tunnel of its own, recorded before a byte flows.
    assert _openings(c, screen) == [*before, "a", "a"]


# What noVNC's canvas shows, measured in the page: its size, how many pixels are not black,
# on how many pixel rows, and how many different colours it holds (up to 16 counted). Null
# while there is no canvas.
CANVAS_PIXELS = """() => {
  const canvas = document.querySelector("[data-testid=vnc-screen] canvas");
  if (!(canvas instanceof HTMLCanvasElement) || !canvas.width || !canvas.height) return null;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  const rows = new Set();
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    const rgb = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    if (rgb !== 0) {
      lit += 1;
      rows.add(Math.floor(i / 4 / canvas.width));
    }
    if (colours.size < 16) colours.add(rgb);
  }
  return {width: canvas.width, height: canvas.height, lit, rows: rows.size, colours: colours.size};
}"""
# The canvas holds a picture: more than one colour, and lit pixels on more rows than one line
# of VGA text is high (16): the guest's text on several lines, not just its blinking cursor.
TEXT_LINE_PX = 16
CANVAS_DRAWN = f"""() => {{
  const m = ({CANVAS_PIXELS})();
  return m !== null && m.colours > 1 && m.rows > {TEXT_LINE_PX};
}}"""
# The console's graphical status has settled: connected, or disconnected with its reason.
VNC_SETTLED = """() => {
  const state = document.querySelector("[data-testid=vnc-status]")?.dataset.state;
  return state === "connected" || state === "disconnected";
}"""
DRAW_DEADLINE_MS = 60_000  # the guest's firmware and kernel under TCG draw within seconds


@pytest.mark.ui
@pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")
def test_the_novnc_console_of_a_qemu_guest_connects_and_draws(
    cluster: LibvirtCluster,  # noqa: F811 - the fixture imported above
    screen: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Signed in to the web console in Chromium, the VM's console page connects noVNC
    through the tunnel and the guest's screen (SeaBIOS's and the kernel's text) is drawn."""
    # Imported here: this module's other tests need no browser (the skip above says why).
    from playwright.sync_api import sync_playwright

    from tests.ui.browser import open_browser, open_page, shoot_failed_page

    token = (cluster.root / "server" / "admin.token").read_text().strip()
    home = tmp_path_factory.mktemp("browser-home")
    with (
        sync_playwright() as driver,
        open_browser(driver, home) as browser,
        open_page(browser, cluster.url) as page,
    ):
        try:
            _connect_and_see_the_screen(page, token, screen)
        except BaseException:
            shoot_failed_page(page, tmp_path_factory.getbasetemp(), "novnc-console")
            raise


def _connect_and_see_the_screen(page: Page, token: str, vm: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.ui.browser import expect, login, screenshot

    login(page, token)
    page.goto(f"/ui/#/vms/{vm}/console")
    status = page.get_by_test_id("vnc-status")
    expect(status).to_have_attribute("data-state", "idle")
    page.locator("[data-action=vnc-connect]").click()
    page.wait_for_function(VNC_SETTLED, timeout=DRAW_DEADLINE_MS)
    assert status.get_attribute("data-state") == "connected", (
        f"the graphical console did not connect: {status.inner_text()!r}"
        f" (error line: {_error_line(page)!r})"
    )
    expect(status).to_contain_text(f"connected to {vm} on a")

    try:
        page.wait_for_function(CANVAS_DRAWN, timeout=DRAW_DEADLINE_MS)
    except PlaywrightTimeout as exc:  # say what the canvas held
        raise AssertionError(
            f"noVNC's canvas stayed blank: {page.evaluate(CANVAS_PIXELS)}"
        ) from exc
    measured = page.evaluate(CANVAS_PIXELS)
    assert measured["width"] >= 320 and measured["height"] >= 200, measured
    assert measured["lit"] > 0 and measured["colours"] > 1, measured
    assert status.get_attribute("data-state") == "connected", status.inner_text()

    # The README's picture: the graphical console's heading, controls and screen.
    page.locator("#vnc-title").evaluate("e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "console.png")


def _error_line(page: Page) -> str:
    error = page.get_by_test_id("error")
    return error.inner_text() if error.is_visible() else ""
