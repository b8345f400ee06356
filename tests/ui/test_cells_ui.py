"""Cells in the console, on a cluster of its own (`bollard up --cells 2 --nodes 1`: an API
server in front of two cells with one sim node each): the nav offers Cells, the Cells page shows
both cells up, a VM created in cell2 from the create form lands there and the VM and node lists
name each one's cell, the cell's page links to its node, whose page names the cell, and the
overview counts the cells up. Then cell2's server is stopped: the pages still draw, warn that
cell2 did not answer, and list its VM as UNKNOWN with a dash for what is not known and no link
(that test comes last: the cluster keeps one cell down after it)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import wait_until
from tests.ui.browser import (
    Browser,
    Locator,
    Page,
    Playwright,
    UiCluster,
    expect,
    go,
    login,
    node_row,
    open_browser,
    open_page,
    running_cluster,
    save_failure,
    screenshot,
    vm_row,
)

CELLS_UP_ARGS = ("--cells", "2", "--nodes", "1", "--sim-latency", "0.05", "--heartbeat", "1")
VM = "ui-cell2-vm"
TASK_MS = 30_000  # a create on a sim host takes well under a second; a loaded CI more
MISSING = "\u2013"  # (an en dash: what a list shows where a cell that did not answer left a gap)
CHECK_MS = 45_000  # until the API server has checked its cells (and again after one stops)


@pytest.fixture(scope="module")
def cells_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCluster]:
    """The API server (its URL, admin token and CA are where a plain cluster keeps them)."""
    with running_cluster(tmp_path_factory.mktemp("ui-cells"), *CELLS_UP_ARGS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cells_browser(playwright: Playwright, cells_cluster: UiCluster) -> Iterator[Browser]:
    with open_browser(playwright, cells_cluster.home) as chromium:
        yield chromium


@pytest.fixture
def page(
    cells_browser: Browser,
    cells_cluster: UiCluster,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Page]:
    """A fresh page on the cells cluster (the package's `page` is on the plain one)."""
    with open_page(cells_browser, cells_cluster.url) as fresh:
        yield fresh
        save_failure(fresh, request.node, tmp_path_factory.getbasetemp())


def _cell_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid=cell-row][data-cell="{name}"]')


def _no_error(page: Page) -> None:
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_cells_pages_and_a_vm_created_in_cell2(page: Page, cells_cluster: UiCluster) -> None:
    api = cells_cluster.api(cells_cluster.admin_token)
    status = api.get("/status").json()
    assert status["mode"] == "cells", status
    login(page, cells_cluster.admin_token)

    # The nav offers Cells on an API server; both cells are up, one node each.
    nav = page.get_by_test_id("nav-cells")
    expect(nav).to_be_visible()
    nav.click()
    expect(nav).to_have_attribute("aria-current", "page")
    expect(page.locator("[data-testid=cell-row]")).to_have_count(2)
    for name in ("cell1", "cell2"):
        row = _cell_row(page, name)
        expect(row).to_have_attribute("data-state", "up", timeout=CHECK_MS)
        expect(row.locator("[data-field=state] .badge")).to_have_class(re.compile(r"\bgood\b"))
        expect(row.locator("[data-field=nodes]")).to_have_text("1")
        expect(row.locator("[data-field=latency]")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
        expect(row.locator("[data-field=error]")).to_have_text("")
    expect(page.get_by_test_id("cell-count")).to_have_text("2 cells, 2 up")
    expect(page.get_by_test_id("cells-unreachable")).to_be_hidden()
    _no_error(page)

    # A VM created in cell2 from the form: it runs there, and its page names its cell.
    go(page, "#/vms/new")
    page.locator("input[name=name]").fill(VM)
    page.locator("input[name=vcpus]").fill("1")
    page.locator("input[name=memory_mb]").fill("256")
    page.get_by_test_id("create-cell").select_option("cell2")
    page.locator("[data-action=vm-create]").click()
    expect(page).to_have_url(re.compile(rf"#/vms/{VM}$"))  # (the form opens the VM's page)
    vm = wait_until(
        f"{VM} is ACTIVE",
        lambda: (got := api.get(f"/vms/{VM}").json()).get("status") == "ACTIVE" and got,
        timeout=TASK_MS / 1000,
    )
    assert (vm["cell"], vm["node"]) == ("cell2", "cell2-node1"), vm

    # The VM list and the node list have a Cell column.
    go(page, "#/vms")
    headers = page.get_by_test_id("vm-table").locator("th")
    expect(headers.nth(2)).to_have_text("Cell")  # (after the checkboxes and the name)
    expect(vm_row(page, VM).locator("[data-field=cell]")).to_have_text("cell2")
    expect(vm_row(page, VM).locator("[data-field=cell] a")).to_have_attribute(
        "href", "#/cells/cell2"
    )
    go(page, "#/nodes")
    for cell in ("cell1", "cell2"):
        expect(node_row(page, f"{cell}-node1").locator("[data-field=cell]")).to_have_text(cell)

    # A cell's page: its facts and counts, its node linking to the node's page.
    go(page, "#/cells/cell2")
    expect(page.get_by_test_id("cell-state")).to_have_attribute("data-state", "up")
    facts = page.get_by_test_id("cell-facts")
    expect(facts.locator("[data-field=vms]")).to_have_text("1")
    counts = page.get_by_test_id("cell-status")
    expect(counts.locator("[data-field=nodes-connected]")).to_have_text("1 / 1")
    expect(counts.locator("li[data-status=ACTIVE]")).to_have_text("ACTIVE 1")
    page.get_by_test_id("cell-nodes").get_by_role("link", name="cell2-node1").click()
    expect(page.locator("#view h1")).to_have_text("Node cell2-node1")
    expect(page.get_by_test_id("node-state").locator("[data-field=cell]")).to_have_text("cell2")

    # The overview counts the cells up.
    go(page, "#/")
    cells_card = page.get_by_test_id("card-cells")
    expect(cells_card.locator("[data-field=cells-up]")).to_have_text("2 / 2")
    expect(cells_card.locator("li[data-cell=cell2]")).to_have_attribute("data-state", "up")
    _no_error(page)

    go(page, "#/cells")
    expect(_cell_row(page, "cell2").locator("[data-field=vms]")).to_have_text("1")
    screenshot(page, "cells.png")

    # The VM's page names its cell.
    go(page, f"#/vms/{VM}")
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE")
    expect(page.get_by_test_id("vm-cell").locator("[data-field=cell]")).to_have_text("cell2")
    _no_error(page)


def test_a_cell_that_does_not_answer(page: Page, cells_cluster: UiCluster) -> None:
    """Runs last: cell2's server is stopped for the rest of the module."""
    api = cells_cluster.api(cells_cluster.admin_token)
    if api.get(f"/vms/{VM}").status_code == 404:  # (run alone: the VM the first test makes)
        made = api.post("/vms", json={"name": VM, "vcpus": 1, "memory_mb": 256, "cell": "cell2"})
        assert made.status_code in (200, 201, 202), made.text
    server = cells_cluster.cli.cluster().find("cell2")
    assert server is not None, "no process cell2 in the cluster's record"
    os.kill(server.pid, signal.SIGTERM)
    wait_until(
        "the API server says cell2 did not answer",
        lambda: any(u["cell"] == "cell2" for u in api.get("/vms").json()["unreachable"]) or None,
        timeout=CHECK_MS / 1000,
    )

    login(page, cells_cluster.admin_token)
    go(page, "#/vms")
    warning = page.get_by_test_id("cells-unreachable")
    expect(warning.locator("li[data-cell=cell2]")).to_be_visible(timeout=CHECK_MS)
    expect(warning.locator("li[data-cell=cell1]")).to_have_count(0)
    row = vm_row(page, VM)
    expect(row).to_have_attribute("data-status", "UNKNOWN")
    expect(row.locator("[data-field=cell]")).to_have_text("cell2")
    expect(row.locator("[data-field=node]")).to_have_text(MISSING)
    expect(row.locator("[data-field=memory]")).to_have_text(MISSING)
    expect(row.locator("[data-field=name] a")).to_have_count(0)

    go(page, "#/nodes")
    expect(warning.locator("li[data-cell=cell2]")).to_be_visible(timeout=CHECK_MS)
    partial = node_row(page, "cell2-node1")
    expect(partial).to_have_attribute("data-health", "unknown")
    expect(partial.locator("[data-field=vcpus]")).to_have_text(MISSING)
    expect(node_row(page, "cell1-node1").locator("[data-field=name] a")).to_have_count(1)

    go(page, "#/cells")
    down = _cell_row(page, "cell2")
    expect(down).to_have_attribute("data-state", "unreachable", timeout=CHECK_MS)
    expect(down.locator("[data-field=state] .badge")).to_have_class(re.compile(r"\bbad\b"))
    expect(down.locator("[data-field=error]")).not_to_have_text("")
    expect(_cell_row(page, "cell1")).to_have_attribute("data-state", "up")

    # A page of the stopped cell's VM says why in one line; it does not break.
    go(page, f"#/vms/{VM}")
    expect(page.get_by_test_id("error")).to_contain_text("cell2")
