"""HA policies in the console: make an HA group from the HA page and edit it, put a stopped
VM in it from the VM's page with HA state started (which starts it) and a restart limit, see
its HA fields on its page and on the HA page; a group in use cannot be deleted (the server's
one line is shown), and once the VM leaves it, it can."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.ui.browser import Page, UiCluster, expect, go, login, one_line, screenshot

GROUP = "ui-ha"
VM = "ui-ha-vm"
TASK_MS = 30_000


@pytest.fixture
def cleanup(ui_cluster: UiCluster) -> Iterator[None]:
    """The VM, then the group, go at the end whatever happened."""
    yield
    api = ui_cluster.api(ui_cluster.admin_token)
    if api.get(f"/vms/{VM}").status_code == 200:
        ui_cluster.cli.ok("vm", "delete", VM, "--wait")
    answer = api.delete(f"/ha/groups/{GROUP}")
    assert answer.status_code in (204, 404), answer.text


def _wait_task(api: httpx.Client, answer: httpx.Response) -> None:
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    for _ in range(6):
        task = api.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            assert task["state"] == "succeeded", task
            return
    raise AssertionError(f"task {task_id} did not end")


def _confirm(page: Page) -> None:
    expect(page.get_by_test_id("confirm")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()


def test_ha_groups_page_and_a_vms_ha_fields(
    page: Page, ui_cluster: UiCluster, cleanup: None
) -> None:
    api = ui_cluster.api(ui_cluster.admin_token)
    _wait_task(api, api.post("/vms", json={"name": VM, "vcpus": 1, "memory_mb": 256}))
    login(page, ui_cluster.admin_token)

    # A group from the form: its row says its nodes by priority and its flags.
    go(page, "#/ha")
    expect(page.get_by_test_id("nav-ha")).to_have_attribute("aria-current", "page")
    page.locator("[data-action=ha-group-create-open]").click()
    form = page.get_by_test_id("ha-group-create-form")
    form.locator("input[name=name]").fill(GROUP)
    form.locator("input[name=nodes]").fill("node3:1, node2:2")
    form.locator("input[name=restricted]").check()
    page.locator("[data-action=ha-group-create]").click()
    expect(page.get_by_test_id("ha-group-create-form")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_be_hidden()
    row = page.locator(f'[data-testid=ha-group-row][data-group="{GROUP}"]')
    expect(row.locator("[data-field=nodes]")).to_have_text("node2:2, node3:1")
    expect(row.locator("[data-field=restricted]")).to_have_text("yes")
    expect(row.locator("[data-field=failback]")).to_have_text("yes")

    # Edited: no failback (only that is sent).
    row.locator("[data-action=ha-group-edit]").click()
    page.get_by_test_id("ha-group-edit-form").locator("input[name=nofailback]").check()
    page.locator("[data-action=ha-group-save]").click()
    expect(page.get_by_test_id("ha-group-edit-form")).to_have_count(0)
    expect(row.locator("[data-field=failback]")).to_have_text("no")
    group = api.get(f"/ha/groups/{GROUP}").json()
    assert (group["nodes"], group["restricted"], group["nofailback"]) == (
        {"node2": 2, "node3": 1}, True, True,
    )  # fmt: skip

    # The stopped VM joins it from its page, HA state started: it starts.
    go(page, f"#/vms/{VM}")
    expect(page.get_by_test_id("vm-status")).to_have_text("SHUTOFF")
    ha = page.get_by_test_id("vm-ha")
    expect(ha.locator("[data-field=ha_state]")).to_have_text("disabled")
    page.locator("[data-action=vm-meta-edit]").click()
    meta = page.get_by_test_id("meta-form")
    meta.locator("select[name=ha_group]").select_option(GROUP)
    meta.locator("select[name=ha_state]").select_option("started")
    meta.locator("input[name=max_restart]").fill("2")
    page.locator("[data-action=vm-meta-save]").click()
    expect(page.get_by_test_id("meta-form")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(ha.locator("[data-field=ha_state]")).to_have_text("started")
    expect(ha.locator("[data-field=ha_group]")).to_have_text(GROUP)
    expect(ha.locator("[data-field=ha_restarts]")).to_have_text("0 (limit 2)")
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    vm = api.get(f"/vms/{VM}").json()
    assert (vm["ha_group"], vm["ha_state"], vm["max_restart"]) == (GROUP, "started", 2), vm

    # The HA page: the group counts it; deleting the group is refused with the server's line.
    go(page, "#/ha")
    expect(row.locator("[data-field=vms]")).to_have_text("1")
    status = page.locator(f'[data-testid=ha-vm-row][data-vm="{VM}"]')
    expect(status.locator("[data-field=ha_state]")).to_have_text("started")
    expect(status.locator("[data-field=ha_group]")).to_have_text(GROUP)
    screenshot(page, "ha.png")
    row.locator("[data-action=ha-group-delete]").click()
    _confirm(page)
    error = page.get_by_test_id("error")
    expect(error).to_contain_text(f"HA group {GROUP} has 1 VM(s): {VM}")
    one_line(error.inner_text())
    expect(row).to_have_count(1)

    # Out of the group (on its page), the group goes.
    go(page, f"#/vms/{VM}")
    page.locator("[data-action=vm-meta-edit]").click()
    page.get_by_test_id("meta-form").locator("select[name=ha_group]").select_option("")
    page.locator("[data-action=vm-meta-save]").click()
    expect(page.get_by_test_id("vm-ha").locator("[data-field=ha_group]")).to_have_text("none")
    go(page, "#/ha")
    row.locator("[data-action=ha-group-delete]").click()
    _confirm(page)
    expect(row).to_have_count(0)
    assert api.get(f"/ha/groups/{GROUP}").status_code == 404
