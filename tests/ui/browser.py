"""The browser side of the console tests: Debian's Chromium driven by Playwright (sync API).

Importing this module skips the importing test module, with the reason, where Chromium,
Playwright or certutil is missing (tests/ui/needs.py). Chromium trusts the test cluster's own
CA (`bollard up` serves HTTPS with a CA in <data-dir>/tls): each browser gets a private HOME
whose NSS database (~/.pki/nssdb, made with certutil) holds that CA as a trusted issuer, so
no certificate error is ignored anywhere.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.ui.needs import CHROMIUM, unavailable_reason

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

from playwright.sync_api import (  # noqa: E402  (after the skip: Playwright may be missing)
    Browser,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    expect,
)
from playwright.sync_api import Error as PlaywrightError  # noqa: E402

from tests.e2e.conftest import Cli, local_cluster  # noqa: E402

# What the test modules import from here (Playwright's names re-exported: importing them
# from here is what skips a test module where Playwright is missing).
__all__ = [
    "PERCENT",
    "UP_ARGS",
    "Browser",
    "Locator",
    "Page",
    "Playwright",
    "UiCluster",
    "expect",
    "go",
    "login",
    "node_row",
    "one_line",
    "open_browser",
    "open_page",
    "running_cluster",
    "save_failure",
    "screenshot",
    "shoot_failed_page",
    "vm_node",
    "vm_row",
]

# The machine's network is closed: nothing may try to reach the internet (no sync, no
# component or safe-browsing updates, no QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# `bollard up` options of the test clusters: every sim operation takes 50 ms, heartbeats
# come every second, and a sim live migration moves 256 MB of guest memory a second, so
# migrating a 3 GiB VM takes some 12 s: long enough to watch its progress.
UP_ARGS = ("--nodes", "3", "--sim-latency", "0.05", "--heartbeat", "1",
           "--sim-migration-rate", "256")  # fmt: skip
TIMEOUT_MS = 15_000  # every Playwright action and expect() gives up after this
NAVIGATION_TIMEOUT_MS = 30_000
SCREENSHOTS_ENV = "BOLLARD_SCREENSHOTS"

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class UiCluster:
    """A cluster started by `bollard up --detach` (through the e2e Cli), as the tests see it."""

    cli: Cli
    url: str
    admin_token: str
    ca_file: Path
    home: Path  # the browser's HOME, whose NSS database trusts ca_file
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.cli.data_dir

    def api(self, token: str) -> httpx.Client:
        """An HTTP client of the REST API (/api/v1) with `token`, verifying the cluster's CA."""
        client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=30.0,
        )
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


def trust_ca(home: Path, ca_file: Path) -> None:
    """Make `home`'s NSS database (which Chromium reads on Linux) trust `ca_file` to issue
    server certificates."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    db = f"sql:{nssdb}"
    for argv in (
        ["certutil", "-N", "-d", db, "--empty-password"],
        ["certutil", "-A", "-d", db, "-n", "bollard test cluster CA", "-t", "C,,", "-i",
         str(ca_file)],
    ):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"{' '.join(argv)} failed: {done.stderr.strip()}"


@contextmanager
def running_cluster(root: Path, *up_args: str) -> Iterator[UiCluster]:
    """`bollard up --detach *up_args` under `root` (`bollard down` at the end), with a HOME
    for browsers that trust its CA."""
    with local_cluster(root, *up_args) as cli:
        ca_file = cli.data_dir / "tls" / "ca.pem"
        assert ca_file.is_file(), f"bollard up made no CA at {ca_file}"
        home = root / "browser-home"
        trust_ca(home, ca_file)
        url = cli.cluster().url
        assert url.startswith("https://"), f"bollard up serves {url}, not HTTPS"
        token = (cli.data_dir / "admin.token").read_text().strip()
        cluster = UiCluster(cli=cli, url=url, admin_token=token, ca_file=ca_file, home=home)
        try:
            yield cluster
        finally:
            cluster.close()


@contextmanager
def open_browser(playwright: Playwright, home: Path) -> Iterator[Browser]:
    """Debian's Chromium, headless, with `home` as its HOME (for its NSS database)."""
    env: dict[str, str | float | bool] = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        env=env,
        timeout=NAVIGATION_TIMEOUT_MS,
    )
    try:
        yield browser
    finally:
        browser.close()


@contextmanager
def open_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A page in a new context (nothing shared with other tests: no token, no storage) at
    1280x800; uncaught errors of the page's scripts fail the test."""
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    page = context.new_page()
    thrown: list[str] = []
    page.on("pageerror", lambda exc: thrown.append(f"{exc.name}: {exc.message}"))
    try:
        yield page
    finally:
        context.close()
    assert not thrown, f"the console's scripts threw: {thrown}"


def save_failure(page: Page, item: pytest.Item, basetemp: Path) -> None:
    """After a failed test, a screenshot of its page in <basetemp>/ui-failures/."""
    report = getattr(item, "ui_report_call", None)
    if report is None or not report.failed:
        return
    shoot_failed_page(page, basetemp, item.name)


def shoot_failed_page(page: Page, basetemp: Path, name: str) -> None:
    """A screenshot of a failed test's page: <basetemp>/ui-failures/<name>.png."""
    path = basetemp / "ui-failures" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(path), timeout=5_000)
    except PlaywrightError as exc:  # the page may be gone with what broke the test
        print(f"no screenshot of the failed page: {exc.message}")
        return
    print(f"the failed page: {path} (at {page.url})")


def login(page: Page, token: str) -> None:
    """Open the console and sign in with `token`; returns once the console shows who is in."""
    page.goto("/ui/")
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("whoami")).to_be_visible()
    expect(page.get_by_test_id("error")).to_be_hidden()


def go(page: Page, route: str) -> None:
    """Follow the console's own hash route (`#/vms/web1`) as a click on a link would."""
    page.evaluate("route => { window.location.hash = route; }", route)


def screenshot(page: Page, name: str) -> Path | None:
    """Save `name` (e.g. overview.png) into $BOLLARD_SCREENSHOTS when it is set."""
    where = os.environ.get(SCREENSHOTS_ENV)
    if not where:
        return None
    directory = Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    print(f"screenshot: {path}")
    return path


def node_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid=node-row][data-node="{name}"]')


def vm_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid=vm-row][data-vm="{name}"]')


def vm_node(page: Page) -> Locator:
    """The node a VM's page says it is on (its intent: the database's owner)."""
    return page.get_by_test_id("vm-intent").locator("[data-field=node]")


def one_line(text: str) -> str:
    """`text` if it is one non-empty line, else fail saying what it was."""
    stripped = text.strip()
    assert stripped and "\n" not in stripped, f"expected one line, got {text!r}"
    return stripped


PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
