"""Moving a VM between cells from the console, on a cluster of its own (`bollard up --cells 2
--nodes 1`: an API server in front of two cells with one sim node each, the settings
policy.vm_resize_cross_cell and policy.vm_migrate_cross_cell set to operator): the resize form
offers the other cell's node and says what it means; the VM page shows the move (RESIZE, with
its task's progress), then VERIFY_RESIZE naming both cells; confirm leaves it ACTIVE in the
other cell. The migrate form sets the method to shutdown for a node of another cell, shows the
server's refusal while the policy says nobody, and a revert brings the VM back. A cell's page
shows and sets its weight multiplier."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.ui.browser import (
    Browser,
    Page,
    Playwright,
    UiCluster,
    expect,
    go,
    login,
    one_line,
    open_browser,
    open_page,
    running_cluster,
    save_failure,
    screenshot,
    vm_row,
)

# A sim operation takes 100 ms: a move (stop, export, transfer, spawn, grow, start) lasts a
# few seconds, and the page shows it under way.
UP_ARGS = ("--cells", "2", "--nodes", "1", "--sim-latency", "0.1", "--heartbeat", "1")
VM = "ui-mover"
SMALL = "ui-move-small"
BIG = "ui-move-big"
TASK_MS = 60_000  # a move on sim hosts takes a few seconds; a loaded CI more
NODE = {"cell1": "cell1-node1", "cell2": "cell2-node1"}
POLICIES = ("policy.vm_resize_cross_cell", "policy.vm_migrate_cross_cell")

# Records what the VM page shows as it changes (a move may pass between two of Playwright's
# polls): its status, its progress line and the move's progress in the resize panel.
RECORD = """() => {
  window.__seen = [];
  const text = (id) => document.querySelector(`[data-testid=${id}]`)?.textContent ?? "";
  const note = () => {
    const now = {status: text("vm-status"), progress: text("vm-progress"),
                 move: text("resize-move-progress")};
    const last = window.__seen[window.__seen.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(now)) window.__seen.push(now);
  };
  new MutationObserver(note).observe(document.getElementById("view"),
    {subtree: true, childList: true, characterData: true});
  note();
}"""


@pytest.fixture(scope="module")
def move_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCluster]:
    """The API server, with moves between cells allowed to operators, two flavors with a root
    disk, and the VM running in cell1."""
    with running_cluster(tmp_path_factory.mktemp("ui-cells-move"), *UP_ARGS) as cluster:
        for key in POLICIES:
            cluster.cli.ok("settings", "set", key, "operator")
        api = cluster.api(cluster.admin_token)
        for name, vcpus, memory_mb, disk_mb in ((SMALL, 1, 256, 1024), (BIG, 2, 512, 2048)):
            flavor = {"name": name, "vcpus": vcpus, "memory_mb": memory_mb, "disk_mb": disk_mb}
            made = api.post("/flavors", json=flavor)
            assert made.status_code == 201, made.text
        made = api.post("/vms", json={"name": VM, "flavor": SMALL, "cell": "cell1", "start": True})
        assert made.status_code in (200, 201, 202), made.text
        _wait_vm(api, "ACTIVE")
        yield cluster


@pytest.fixture(scope="module")
def move_browser(playwright: Playwright, move_cluster: UiCluster) -> Iterator[Browser]:
    with open_browser(playwright, move_cluster.home) as chromium:
        yield chromium


@pytest.fixture
def page(
    move_browser: Browser,
    move_cluster: UiCluster,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Page]:
    """A fresh page on this module's cluster (the package's `page` is on the plain one)."""
    with open_page(move_browser, move_cluster.url) as fresh:
        yield fresh
        save_failure(fresh, request.node, tmp_path_factory.getbasetemp())


def _vm(api: httpx.Client) -> dict[str, Any]:
    response = api.get(f"/vms/{VM}")
    assert response.status_code == 200, response.text
    vm: dict[str, Any] = response.json()
    return vm


def _wait_vm(api: httpx.Client, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        vm = _vm(api)
        return vm if vm["status"] == status and not vm["task_state"] else None

    return wait_until(f"{VM} is {status}", probe, timeout=TASK_MS / 1000)


def _other(cell: str) -> str:
    return "cell2" if cell == "cell1" else "cell1"


def _seen(page: Page) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = page.evaluate("() => window.__seen")
    return seen


def _no_error(page: Page) -> None:
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_resize_into_the_other_cell_then_confirm(page: Page, move_cluster: UiCluster) -> None:
    api = move_cluster.api(move_cluster.admin_token)
    source = _wait_vm(api, "ACTIVE")["cell"]
    target = _other(source)
    login(page, move_cluster.admin_token)
    go(page, f"#/vms/{VM}")
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE")

    # The form: its own cell's candidates (none: one node a cell) and the other cell's node.
    page.locator("[data-action=vm-resize]").click()
    form = page.get_by_test_id("resize-form")
    expect(form.locator(f"[data-testid=target-cell][data-cell={source}]")).to_contain_text(
        "No other node of its cell can take it now"
    )
    expect(form.get_by_test_id("resize-cross-policy")).to_contain_text("You may (role admin)")
    form.locator("select[name=flavor]").select_option(BIG)
    form.locator(f"input[name=to][value={NODE[target]}]").check()
    expect(form.get_by_test_id("resize-cross-note")).to_contain_text(
        f"{NODE[target]} is in cell {target}: the VM moves between cells"
    )

    # Submitted: RESIZE with the move's progress, then VERIFY_RESIZE naming both cells.
    page.evaluate(RECORD)
    page.locator("[data-action=vm-resize-submit]").click()
    expect(page.get_by_test_id("resize-form")).to_have_count(0)
    _no_error(page)
    expect(page.get_by_test_id("vm-status")).to_have_text("VERIFY_RESIZE", timeout=TASK_MS)
    seen = _seen(page)
    moving = [s for s in seen if s["status"] == "RESIZE"]
    assert moving, f"the page never showed RESIZE: {seen}"
    assert any(s["move"].startswith("cross_cell_move: ") for s in moving), seen
    assert any(s["progress"].startswith("cross_cell_move: ") for s in moving), seen
    panel = page.get_by_test_id("resize-verify")
    expect(panel.locator("h2")).to_have_text("Move between cells waiting for confirmation")
    cross = panel.get_by_test_id("resize-cross-cell")
    expect(cross).to_contain_text(
        f"from cell {source} ({NODE[source]}) to cell {target} ({NODE[target]})"
    )
    expect(cross).to_have_attribute("data-source", source)
    expect(cross).to_have_attribute("data-target", target)
    verify_text = panel.get_by_test_id("resize-verify-text")
    expect(verify_text).to_contain_text(f"to {BIG} on {NODE[target]}")
    vm = _vm(api)
    assert vm["resize"]["cross_cell"] and vm["cell"] == target, vm

    confirm = page.locator("[data-action=vm-resize-confirm]")
    expect(confirm).to_be_enabled(timeout=TASK_MS)
    screenshot(page, "cells-move.png")
    confirm.click()
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    expect(page.get_by_test_id("resize-verify")).to_have_count(0)
    expect(page.get_by_test_id("vm-cell").locator("[data-field=cell]")).to_have_text(target)
    _no_error(page)

    # ACTIVE in the other cell's column of the VM list, at its new size.
    go(page, "#/vms")
    row = vm_row(page, VM)
    expect(row).to_have_attribute("data-status", "ACTIVE")
    expect(row.locator("[data-field=cell]")).to_have_text(target)
    vm = _wait_vm(api, "ACTIVE")
    assert (vm["cell"], vm["node"], vm["flavor"]["name"]) == (target, NODE[target], BIG), vm


def test_migrate_by_shutdown_refused_then_allowed_then_reverted(
    page: Page, move_cluster: UiCluster
) -> None:
    api = move_cluster.api(move_cluster.admin_token)
    home = _wait_vm(api, "ACTIVE")["cell"]
    target = _other(home)
    login(page, move_cluster.admin_token)
    go(page, f"#/vms/{VM}")
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE")

    # A node of the other cell: the method is set to shutdown; live is not offered.
    page.locator("[data-action=vm-migrate]").click()
    form = page.get_by_test_id("migrate-form")
    method = form.locator("select[name=method]")
    form.locator("select[name=method]").select_option("live")
    form.locator(f"input[name=to][value={NODE[target]}]").check()
    expect(method).to_have_value("shutdown")
    expect(method.locator("option[value=live]")).to_be_disabled()
    expect(form.locator("input[name=force_live]")).to_be_disabled()
    expect(form.get_by_test_id("migrate-cross-note")).to_contain_text("shutdown migration only")

    # While the policy says nobody, the server refuses: its line is shown, the form stays.
    move_cluster.cli.ok("settings", "set", "policy.vm_migrate_cross_cell", "nobody")
    try:
        page.locator("[data-action=vm-migrate-submit]").click()
        error = page.get_by_test_id("error")
        expect(error).to_contain_text("vm:migrate:cross_cell")
        assert "policy.vm_migrate_cross_cell" in one_line(error.inner_text())
        expect(form).to_be_visible()
        assert _vm(api)["cell"] == home
    finally:
        move_cluster.cli.ok("settings", "set", "policy.vm_migrate_cross_cell", "operator")

    page.locator("[data-action=vm-migrate-submit]").click()
    expect(page.get_by_test_id("migrate-form")).to_have_count(0)
    _no_error(page)
    expect(page.get_by_test_id("vm-status")).to_have_text("VERIFY_RESIZE", timeout=TASK_MS)
    cross = page.get_by_test_id("resize-verify").get_by_test_id("resize-cross-cell")
    expect(cross).to_contain_text(f"from cell {home} ({NODE[home]}) to cell {target}")
    moved = _vm(api)
    assert moved["cell"] == target and moved["resize"]["cross_cell"], moved

    # Revert: back in its cell, where it was.
    revert = page.locator("[data-action=vm-resize-revert]")
    expect(revert).to_be_enabled(timeout=TASK_MS)
    revert.click()
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    expect(page.get_by_test_id("vm-cell").locator("[data-field=cell]")).to_have_text(home)
    _no_error(page)
    go(page, "#/vms")
    expect(vm_row(page, VM).locator("[data-field=cell]")).to_have_text(home)
    vm = _wait_vm(api, "ACTIVE")
    assert (vm["cell"], vm["node"]) == (home, NODE[home]), vm
    record = api.get(f"/migrations/{moved['resize']['migration_id']}")
    assert record.status_code == 200, record.text
    got = record.json()
    assert (got["type"], got["status"]) == ("migration", "reverted"), got


def test_a_cells_weight_multiplier(page: Page, move_cluster: UiCluster) -> None:
    api = move_cluster.api(move_cluster.admin_token)
    login(page, move_cluster.admin_token)
    go(page, "#/cells/cell2")
    weight = page.get_by_test_id("cell-facts").locator("[data-field=weight_multiplier]")
    expect(weight).to_have_text("default")

    page.locator("[data-action=cell-edit]").click()
    form = page.get_by_test_id("cell-edit-form")
    form.locator("input[name=weight_multiplier]").fill("-1000000")
    page.locator("[data-action=cell-save]").click()
    expect(page.get_by_test_id("cell-edit-form")).to_have_count(0)
    _no_error(page)
    expect(weight).to_have_text("-1000000")
    assert api.get("/cells/cell2").json()["weight_multiplier"] == -1_000_000

    page.locator("[data-action=cell-edit]").click()
    form = page.get_by_test_id("cell-edit-form")
    expect(form.locator("input[name=weight_multiplier]")).to_have_value("-1000000")
    form.locator("input[name=weight_multiplier]").fill("")
    page.locator("[data-action=cell-save]").click()
    expect(weight).to_have_text("default")
    assert api.get("/cells/cell2").json()["weight_multiplier"] is None
    expect(page.locator("#view h1")).to_have_text(re.compile(r"^Cell cell2"))
