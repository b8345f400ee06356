"""Volume tasks where the console lists tasks, and disks in pools from the create-VM form.

A volume task has no VM: the task panel, the tasks page and the task's page name its volume
(a link to the volume's page) instead of the node it runs on; a copy's progress shows in the
panel as a migration's does. The create-VM form gives each disk a pool (default `local`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.ui.browser import PERCENT, Page, UiCluster, expect, go, login, screenshot

SOURCE = "ui-copy-source"
COPY = "ui-copy-target"
# The sim copies 2 GiB a second: a 32 GiB volume takes some 16 s to copy, long enough to see
# its progress grow (sim volumes are thin: nothing that big is written).
SOURCE_SIZE = "32G"
TASK_MS = 60_000

# The progress cell of the task panel's row of task `id` holds a percentage above `seen`.
PROGRESS_GREW = """([id, seen]) => {
  const row = document.querySelector(
    `[data-testid=task-panel] [data-testid=task-row][data-task="${id}"]`);
  const cell = row && row.querySelector("[data-field=progress]");
  const found = cell && cell.textContent.match(/(\\d+)\\s*%/);
  return Boolean(found) && Number(found[1]) > seen;
}"""


@pytest.fixture(scope="module")
def source_volume(ui_cluster: UiCluster) -> Iterator[str]:
    """A ready volume on node1 in the pool `local` (the CLI waits for its task)."""
    ui_cluster.cli.ok("volume", "create", SOURCE, "--size", SOURCE_SIZE, "--pool", "local",
                      "--node", "node1")  # fmt: skip
    yield SOURCE
    api = ui_cluster.api(ui_cluster.admin_token)
    for name in (COPY, SOURCE):
        if api.get(f"/volumes/{name}").status_code == 200:
            ui_cluster.cli.ok("volume", "delete", name, "--yes")


def test_a_volume_copy_names_its_volume_and_shows_its_progress(
    page: Page, ui_cluster: UiCluster, source_volume: str
) -> None:
    login(page, ui_cluster.admin_token)
    api = ui_cluster.api(ui_cluster.admin_token)
    answer = api.post(
        f"/volumes/{source_volume}/copy", json={"name": COPY, "pool": "local", "node": "node2"}
    )
    assert answer.status_code == 202, answer.text
    task = answer.json()["task"]
    assert (task["type"], task["vm"], task["params"]["volume"]) == (
        "volume_copy", None, source_volume), task  # fmt: skip

    # The panel's row names the volume (a link to its page), not the node the copy runs on.
    row = page.get_by_test_id("task-panel").locator(
        f'[data-testid=task-row][data-task="{task["id"]}"]'
    )
    subject = row.locator("[data-field=subject]")
    expect(subject).to_have_attribute("data-kind", "volume")
    expect(subject.get_by_role("link", name=source_volume)).to_have_attribute(
        "href", f"#/volumes/{source_volume}"
    )
    # Its progress, as a migration's: the step and the percentage the host reports, growing.
    progress = row.locator("[data-field=progress]")
    expect(progress).to_have_text(re.compile(r"copy.*\d+\s*%"), timeout=TASK_MS)
    first = PERCENT.search(progress.inner_text())
    assert first, progress.inner_text()
    page.wait_for_function(PROGRESS_GREW, arg=[task["id"], float(first.group(1))], timeout=TASK_MS)
    screenshot(page, "volume-copy-task.png")
    expect(row).to_have_attribute("data-state", "succeeded", timeout=TASK_MS)

    # Following the link opens the volume's page.
    subject.get_by_role("link", name=source_volume).click()
    expect(page.get_by_test_id("nav-volumes")).to_have_attribute("aria-current", "page")
    expect(page.locator("#view h1")).to_contain_text(source_volume)

    # The task's page says which volume it is of, and links it.
    go(page, f"#/tasks/{task['id']}")
    heading = page.locator("#view h1")
    expect(heading).to_contain_text(f"volume_copy of volume {source_volume}")
    expect(heading.get_by_test_id("task-subject")).to_have_attribute(
        "href", f"#/volumes/{source_volume}"
    )
    fact = page.locator("#view dd[data-field=volume]")
    expect(fact.get_by_role("link", name=source_volume)).to_have_count(1)
    expect(page.locator("#view dd[data-field=vm]")).to_have_text("\N{EN DASH}")

    # The tasks page, in its VM / volume column.
    go(page, "#/tasks")
    listed = page.locator(f'#view [data-testid=task-row][data-task="{task["id"]}"]')
    expect(listed.locator("[data-field=subject]")).to_have_text(f"volume {source_volume}")
    assert api.get(f"/volumes/{COPY}").json()["state"] == "ready"


POOLED_VM = "ui-pooled"
VM_POOL = "ui-vm-pool"


@pytest.fixture(scope="module")
def vm_pool(ui_cluster: UiCluster) -> Iterator[str]:
    """A second local pool for VM disks; the test's VM (and so its disks) goes first."""
    ui_cluster.cli.ok("pool", "create", VM_POOL, "--type", "local")
    yield VM_POOL
    if ui_cluster.api(ui_cluster.admin_token).get(f"/vms/{POOLED_VM}").status_code == 200:
        ui_cluster.cli.ok("vm", "delete", POOLED_VM, "--wait")
    ui_cluster.cli.ok("pool", "delete", VM_POOL, "--yes")


def test_create_form_puts_each_disk_in_its_pool(
    page: Page, ui_cluster: UiCluster, vm_pool: str
) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/vms/new")
    form = page.get_by_test_id("vm-create-form")
    form.locator("input[name=name]").fill(POOLED_VM)
    form.locator("input[name=memory_mb]").fill("256")
    add = form.get_by_test_id("disks-add")
    add.click()
    add.click()
    # Each row has a pool select listing the pools, starting at `local`.
    first = form.locator("select[name='disks[0].pool']")
    second = form.locator("select[name='disks[1].pool']")
    expect(first).to_have_value("local")
    expect(second).to_have_value("local")
    expect(second.locator(f'option[value="{vm_pool}"]')).to_have_count(1)
    form.locator("input[name='disks[1].size_mb']").fill("1")
    second.select_option(vm_pool)
    screenshot(page, "vm-create-disks.png")
    # The form sends each disk's size and pool.
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/api/v1/vms")
    ) as sent:
        page.locator("[data-action=vm-create]").click()
    body = sent.value.post_data_json
    assert body is not None, "the form sent no JSON"
    assert body["disks"] == [
        {"size_mb": 10240, "pool": "local"}, {"size_mb": 1024, "pool": vm_pool}]  # fmt: skip
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.locator("#view h1")).to_contain_text(POOLED_VM)

    # Its disks are volumes of those pools once its create task is done.
    disks = page.locator("[data-testid=disk-row]")
    expect(disks).to_have_count(2, timeout=TASK_MS)
    vm = ui_cluster.api(ui_cluster.admin_token).get(f"/vms/{POOLED_VM}").json()
    made = [(d["device"], d["size_mb"], d["pool"]) for d in vm["disks"]]
    assert made == [("vda", 10240, "local"), ("vdb", 1024, vm_pool)], vm["disks"]
    expect(disks.nth(0).locator("[data-field=pool]")).to_have_text("local")
    expect(disks.nth(1).locator("[data-field=pool]")).to_have_text(vm_pool)
