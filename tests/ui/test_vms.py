"""VMs in the console: create one from the form and watch it become ACTIVE live; migrate one
and watch the migration's phase and progress in the task panel."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.ui.browser import (
    PERCENT,
    Page,
    UiCluster,
    expect,
    go,
    login,
    one_line,
    screenshot,
    vm_node,
    vm_row,
)

# Set in the page by the test; a reload would lose it.
MARK_NO_RELOAD = "() => { window.__notReloaded = true; }"
NOT_RELOADED = "() => window.__notReloaded === true"


def test_create_vm_from_form_becomes_active_live(page: Page, ui_cluster: UiCluster) -> None:
    """One tab watches the VM list while another creates a VM with the form: the new row
    appears and turns ACTIVE in the first tab, which is never reloaded."""
    name = "ui-created"
    login(page, ui_cluster.admin_token)
    go(page, "#/vms")
    expect(page.get_by_test_id("nav-vms")).to_have_attribute("aria-current", "page")
    expect(vm_row(page, name)).to_have_count(0)
    page.evaluate(MARK_NO_RELOAD)

    form_tab = page.context.new_page()
    login(form_tab, ui_cluster.admin_token)
    go(form_tab, "#/vms/new")
    form_tab.locator("input[name=name]").fill(name)
    form_tab.locator("input[name=vcpus]").fill("2")
    form_tab.locator("input[name=memory_mb]").fill("512")
    form_tab.locator("input[name=start]").check()
    form_tab.locator("[data-action=vm-create]").click()
    expect(form_tab.get_by_test_id("error")).to_be_hidden()

    row = vm_row(page, name)
    expect(row).to_have_count(1)
    expect(row.locator("[data-field=status]")).to_have_text("ACTIVE", timeout=30_000)
    assert page.evaluate(NOT_RELOADED), "the VM list was reloaded"
    vm = ui_cluster.api(ui_cluster.admin_token).get(f"/vms/{name}").json()
    assert (vm["vcpus"], vm["memory_mb"], vm["status"]) == (2, 512, "ACTIVE"), vm
    expect(row.locator("[data-field=node]")).to_have_text(vm["node"])
    form_tab.close()


def test_create_form_refuses_a_bad_value_with_one_line(page: Page, ui_cluster: UiCluster) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/vms/new")
    page.locator("input[name=name]").fill("ui-too-small")
    page.locator("input[name=vcpus]").fill("1")
    page.locator("input[name=memory_mb]").fill("8")  # the API's minimum is 16 MiB
    page.locator("[data-action=vm-create]").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    assert re.search(r"memory", one_line(error.inner_text()), re.IGNORECASE), error.inner_text()
    assert ui_cluster.api(ui_cluster.admin_token).get("/vms/ui-too-small").status_code == 404


MOVER = "ui-mover"


@pytest.fixture
def mover(ui_cluster: UiCluster) -> Iterator[str]:
    """A running VM of 3 GiB on node1: its live migration takes some 12 s on this cluster."""
    ui_cluster.cli.ok("vm", "create", MOVER, "--vcpus", "1", "--memory", "3072", "--node",
                      "node1", "--start", "--wait")  # fmt: skip
    yield MOVER
    ui_cluster.cli.ok("vm", "delete", MOVER, "--wait")


# The migration's progress cell in the task panel holds a percentage above `seen`.
PROGRESS_GREW = """([id, seen]) => {
  const row = document.querySelector(
    `[data-testid=task-panel] [data-testid=task-row][data-task="${id}"]`);
  const cell = row && row.querySelector("[data-field=progress]");
  const found = cell && cell.textContent.match(/(\\d+)\\s*%/);
  return Boolean(found) && Number(found[1]) > seen;
}"""


def test_migrate_from_the_ui_shows_its_progress(
    page: Page, ui_cluster: UiCluster, mover: str
) -> None:
    login(page, ui_cluster.admin_token)
    go(page, f"#/vms/{mover}")
    node = vm_node(page)
    expect(node).to_have_text("node1")
    page.evaluate(MARK_NO_RELOAD)

    page.locator("[data-action=vm-migrate]").click()
    # The target picker lists the scheduler's candidates: pick node2.
    page.get_by_test_id("migrate-form").locator("input[name=to][value=node2]").check()
    page.locator("[data-action=vm-migrate-submit]").click()
    expect(page.get_by_test_id("migrate-form")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_be_hidden()

    panel = page.get_by_test_id("task-panel")
    row = panel.locator("[data-testid=task-row]").filter(has_text=mover).filter(has_text="migrate")
    expect(row).to_have_count(1)
    task_id = row.get_attribute("data-task")
    assert task_id, "the task row has no data-task"
    progress = row.locator("[data-field=progress]")
    # The phase (the transfer step) and its percentage, while it runs.
    expect(progress).to_have_text(re.compile(r"live_migrate.*\d+\s*%"), timeout=30_000)
    first = PERCENT.search(progress.inner_text())
    assert first, progress.inner_text()
    page.wait_for_function(PROGRESS_GREW, arg=[task_id, float(first.group(1))], timeout=30_000)
    screenshot(page, "migration.png")

    expect(row).to_have_attribute("data-state", "succeeded", timeout=60_000)
    expect(row.locator("[data-field=outcome]")).to_contain_text("node2")
    expect(node).to_have_text("node2")
    assert page.evaluate(NOT_RELOADED), "the VM page was reloaded"
    task = ui_cluster.api(ui_cluster.admin_token).get(f"/tasks/{task_id}").json()
    assert (task["type"], task["state"], task["vm"]) == ("migrate", "succeeded", mover), task


def test_vm_detail_page(page: Page, ui_cluster: UiCluster, mover: str) -> None:
    """The VM page as the README shows it (screenshot vm.png): intent and observation."""
    login(page, ui_cluster.admin_token)
    go(page, f"#/vms/{mover}")
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE")
    expect(vm_node(page)).to_have_text("node1")
    expect(page.get_by_test_id("vm-intent").locator("[data-field=memory_mb]")).to_have_text("3 GiB")
    expect(page.locator("#view h1")).to_contain_text(mover)
    screenshot(page, "vm.png")


# The noVNC console (a real QEMU guest's canvas connects and draws) is tested with the
# libvirt test hosts by the console's own test module, which comes with the VNC work.
