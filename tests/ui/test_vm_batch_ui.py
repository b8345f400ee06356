"""The create-VM form's Count (issue 24): more than one posts a batch and shows the VMs
created, each a link to its page."""

from __future__ import annotations

import re

from tests.ui.browser import Page, UiCluster, expect, go, login

NAMES = ["ui-many-1", "ui-many-2", "ui-many-3"]


def test_a_count_creates_a_batch_and_lists_its_vms(page: Page, ui_cluster: UiCluster) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/vms/new")
    expect(page.locator("input[name=count]")).to_have_value("1")
    page.locator("input[name=name]").fill("ui-many")
    page.locator("input[name=vcpus]").fill("1")
    page.locator("input[name=memory_mb]").fill("128")
    page.locator("input[name=count]").fill("3")
    page.locator("[data-action=vm-create]").click()
    created = page.get_by_test_id("batch-created")
    expect(created).to_be_visible()
    links = created.locator("a")
    expect(links).to_have_text(NAMES)
    api = ui_cluster.api(ui_cluster.admin_token)
    try:
        for name in NAMES:
            assert api.get(f"/vms/{name}").status_code == 200, name
        links.nth(1).click()
        expect(page).to_have_url(re.compile(r"#/vms/ui-many-2$"))
    finally:
        for name in NAMES:
            ui_cluster.cli.ok("vm", "delete", name, "--wait")
