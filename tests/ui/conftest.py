"""Fixtures of the web console's browser tests (marker `ui`: `make test-ui`).

One real cluster for the tests here (`bollard up --nodes 3 --detach`, stopped with `bollard
down`), one headless Chromium that trusts its CA, a new browser context per test: all of
package scope, so the cluster, the browser and Playwright's driver are gone before the test
directories after this one run. Where
Chromium, Playwright or certutil is missing, every test module here is skipped with the
reason (tests/ui/browser.py); scripts/browser/install.sh installs them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.ui.browser import Browser, Page, Playwright, UiCluster

HERE = Path(__file__).parent
READER = "ui-reader"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/ui `ui` (before -m selects by marker)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.ui)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the tests here, so `page` can tell that its test failed."""
    report = yield
    if item.path.is_relative_to(HERE):
        setattr(item, f"ui_report_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def ui_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCluster]:
    """The cluster of the tests here: 3 sim nodes, all up (tests that break one bring their
    own)."""
    from tests.ui.browser import UP_ARGS, running_cluster

    with running_cluster(tmp_path_factory.mktemp("ui"), *UP_ARGS) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def browser(playwright: Playwright, ui_cluster: UiCluster) -> Iterator[Browser]:
    from tests.ui.browser import open_browser

    with open_browser(playwright, ui_cluster.home) as chromium:
        yield chromium


@pytest.fixture
def page(
    browser: Browser,
    ui_cluster: UiCluster,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Page]:
    """A fresh page (new context: no token, no storage) on the package's cluster; a failed
    test leaves a screenshot of it in <basetemp>/ui-failures/."""
    from tests.ui.browser import open_page, save_failure

    with open_page(browser, ui_cluster.url) as fresh:
        yield fresh
        save_failure(fresh, request.node, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="package")
def reader_token(ui_cluster: UiCluster) -> str:
    """A token of the user `ui-reader`, whose role is reader (every read, no action)."""
    token_file = ui_cluster.data_dir.parent / "reader.token"
    ui_cluster.cli.ok("user", "create", READER, "--role", "reader")
    ui_cluster.cli.ok("token", "create", "--user", READER, "--description", "browser tests",
                      "--token-file", str(token_file))  # fmt: skip
    token = token_file.read_text().strip()
    assert token, f"{token_file} is empty"
    return token
