"""Storage in the console: create a pool and a volume from the forms, watch the volume become
ready, attach it to a VM, snapshot it, detach it and delete it (each change a task in the
task panel), then delete the pool; a reader sees the storage pages without any action."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ui.browser import Locator, Page, UiCluster, expect, go, login, screenshot

VM = "ui-disk-host"  # the VM the volume is attached to (stopped: nothing has the disk open)
POOL = "ui-pool"
VOLUME = "ui-data"
NODE = "node1"
TASK_MS = 30_000  # a storage task on the sim hosts takes well under a second; a loaded CI more


@pytest.fixture(scope="module")
def stopped_vm(ui_cluster: UiCluster) -> Iterator[str]:
    ui_cluster.cli.ok("vm", "create", VM, "--vcpus", "1", "--memory", "256", "--node", NODE,
                      "--wait")  # fmt: skip
    yield VM
    ui_cluster.cli.ok("vm", "delete", VM, "--wait")


def _state(page: Page) -> Locator:
    return page.get_by_test_id("volume-state")


def _confirm(page: Page) -> None:
    """OK in the confirmation dialog the last click opened."""
    expect(page.get_by_test_id("confirm")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()


def _task_succeeds(page: Page) -> str:
    """The task the last action started (named in the page's result line) is a row of the
    task panel and succeeds there; returns its id."""
    started = page.get_by_test_id("action-task")
    expect(started).to_have_count(1)
    task_id = started.get_attribute("data-task")
    assert task_id, "the result line names no task"
    panel = page.get_by_test_id("task-panel")
    row = panel.locator(f'[data-testid=task-row][data-task="{task_id}"]')
    expect(row).to_have_attribute("data-state", "succeeded", timeout=TASK_MS)
    return task_id


def test_pool_and_volume_from_create_to_delete(
    page: Page, ui_cluster: UiCluster, stopped_vm: str
) -> None:
    api = ui_cluster.api(ui_cluster.admin_token)
    login(page, ui_cluster.admin_token)

    # A local pool (each host's default directory, every node) from the pools page's form.
    go(page, "#/pools")
    expect(page.get_by_test_id("nav-pools")).to_have_attribute("aria-current", "page")
    page.locator("[data-action=pool-create-open]").click()
    form = page.get_by_test_id("pool-create-form")
    form.locator("input[name=name]").fill(POOL)
    form.locator("select[name=type]").select_option("local")
    page.locator("[data-action=pool-create]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.locator("#view h1")).to_have_text(f"Pool {POOL}")
    expect(page.get_by_test_id("pool-facts").locator("[data-field=type]")).to_have_text("local")
    assert api.get(f"/pools/{POOL}").json()["type"] == "local"

    # A 1 GiB volume on node1 from the volumes page's form: its page shows it become ready.
    go(page, "#/volumes")
    page.locator("[data-action=volume-create-open]").click()
    form = page.get_by_test_id("volume-create-form")
    form.locator("input[name=name]").fill(VOLUME)
    form.locator("input[name=size_mb]").fill("1")
    form.locator("select[name=size_mb_unit]").select_option("GiB")
    form.locator("select[name=pool]").select_option(POOL)
    form.locator("select[name=node]").select_option(NODE)
    page.locator("[data-action=volume-create]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.locator("#view h1")).to_contain_text(VOLUME)
    expect(_state(page)).to_have_text("ready", timeout=TASK_MS)
    facts = page.get_by_test_id("volume-facts")
    expect(facts.locator("[data-field=size]")).to_have_text("1 GiB")
    expect(facts.locator("[data-field=node]")).to_have_text(NODE)
    volume = api.get(f"/volumes/{VOLUME}").json()
    assert (volume["pool"], volume["node"], volume["size_mb"], volume["format"]) == (
        POOL, NODE, 1024, "qcow2"), volume  # fmt: skip

    # Attach it to the VM (on its node), chosen in the attach form.
    page.locator("[data-action=volume-attach]").click()
    page.get_by_test_id("attach-vm").select_option(stopped_vm)
    page.locator("[data-action=volume-attach-submit]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    _task_succeeds(page)
    expect(_state(page)).to_have_text("attached", timeout=TASK_MS)
    attachment = page.get_by_test_id("volume-attachment").locator("[data-field=vm]")
    expect(attachment).to_contain_text(stopped_vm)
    device = api.get(f"/volumes/{VOLUME}").json()["device"]
    assert device, "the attached volume has no device"
    screenshot(page, "volume.png")

    # The VM's disks table links the volume, with its pool and state.
    attachment.get_by_role("link", name=stopped_vm).click()
    disk = page.locator(f'[data-testid=disk-row][data-volume="{VOLUME}"]')
    expect(disk.locator("[data-field=device]")).to_have_text(device)
    expect(disk.locator("[data-field=pool]")).to_have_text(POOL)
    expect(disk.locator("[data-field=state]")).to_have_text("attached")
    disk.get_by_role("link", name=VOLUME).click()
    expect(_state(page)).to_have_text("attached")

    # A snapshot of it.
    page.locator("[data-action=snapshot-create]").click()
    page.get_by_test_id("snapshot-name").fill("ui-snap")
    page.locator("[data-action=snapshot-create-submit]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    _task_succeeds(page)
    expect(page.locator("[data-testid=snapshot-row][data-snapshot=ui-snap]")).to_have_count(1)
    snapshots = api.get(f"/volumes/{VOLUME}/snapshots").json()["items"]
    assert [s["name"] for s in snapshots] == ["ui-snap"], snapshots

    # Detach (after the confirmation).
    page.locator("[data-action=volume-detach]").click()
    _confirm(page)
    _task_succeeds(page)
    expect(_state(page)).to_have_text("ready", timeout=TASK_MS)
    assert api.get(f"/volumes/{VOLUME}").json()["vm"] is None

    # Delete: back on the volume list, its row goes once the deletion is done.
    page.locator("[data-action=volume-delete]").click()
    _confirm(page)
    expect(page.get_by_test_id("nav-volumes")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("volumes-table")).to_be_visible()  # the list has loaded
    expect(page.locator(f'[data-testid=volume-row][data-volume="{VOLUME}"]')).to_have_count(
        0, timeout=TASK_MS
    )
    assert api.get(f"/volumes/{VOLUME}").status_code == 404

    # The pool, empty now, is deleted from its page.
    go(page, f"#/pools/{POOL}")
    expect(page.get_by_test_id("pool-facts").locator("[data-field=volumes]")).to_have_text("0")
    page.locator("[data-action=pool-delete]").click()
    _confirm(page)
    expect(page.get_by_test_id("nav-pools")).to_have_attribute("aria-current", "page")
    expect(page.get_by_test_id("pools-table")).to_be_visible()  # the list has loaded
    expect(page.locator(f'[data-testid=pool-row][data-pool="{POOL}"]')).to_have_count(0)
    assert api.get(f"/pools/{POOL}").status_code == 404


def test_create_volume_refuses_a_bad_size_next_to_the_field(
    page: Page, ui_cluster: UiCluster
) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/volumes")
    page.locator("[data-action=volume-create-open]").click()
    form = page.get_by_test_id("volume-create-form")
    form.locator("input[name=name]").fill("ui-too-small")
    form.locator("input[name=size_mb]").fill("0")
    form.locator("select[name=pool]").select_option("local")
    page.locator("[data-action=volume-create]").click()
    expect(page.get_by_test_id("error")).to_contain_text("size_mb")
    expect(form.locator("[data-error-for=size_mb]")).to_be_visible()
    assert ui_cluster.api(ui_cluster.admin_token).get("/volumes/ui-too-small").status_code == 404


READ_POOL = "ui-read-pool"
READ_VOLUME = "ui-read-data"


@pytest.fixture(scope="module")
def readable_volume(ui_cluster: UiCluster) -> Iterator[str]:
    """A ready volume of a pool of its own, made with the CLI (which waits for its task)."""
    ui_cluster.cli.ok("pool", "create", READ_POOL, "--type", "local")
    ui_cluster.cli.ok("volume", "create", READ_VOLUME, "--size", "512", "--pool", READ_POOL,
                      "--node", NODE)  # fmt: skip
    yield READ_VOLUME
    ui_cluster.cli.ok("volume", "delete", READ_VOLUME, "--yes")
    ui_cluster.cli.ok("pool", "delete", READ_POOL, "--yes")


PAGES = {
    "pools": "#/pools",
    "pool": f"#/pools/{READ_POOL}",
    "volumes": "#/volumes",
    "volume": f"#/volumes/{READ_VOLUME}",
}


def _drawn(page: Page, name: str) -> None:
    """Wait until the storage page `name` shows the reader's pool or volume."""
    if name == "pools":
        expect(page.locator(f'[data-testid=pool-row][data-pool="{READ_POOL}"]')).to_have_count(1)
    elif name == "pool":
        expect(
            page.locator(f'[data-testid=volume-row][data-volume="{READ_VOLUME}"]')
        ).to_have_count(1)
    elif name == "volumes":
        row = page.locator(f'[data-testid=volume-row][data-volume="{READ_VOLUME}"]')
        expect(row.locator("[data-field=state]")).to_have_text("ready")
    else:
        expect(_state(page)).to_have_text("ready")


@pytest.mark.parametrize("name", list(PAGES))
def test_reader_sees_no_storage_action(
    page: Page, ui_cluster: UiCluster, reader_token: str, readable_volume: str, name: str
) -> None:
    login(page, reader_token)
    expect(page.get_by_test_id("whoami")).to_contain_text("reader")
    go(page, PAGES[name])
    _drawn(page, name)
    actions = page.locator("[data-action]")
    assert actions.count() == 0, f"a reader sees actions on {PAGES[name]}: " + ", ".join(
        str(actions.nth(i).get_attribute("data-action")) for i in range(actions.count())
    )


def test_admin_sees_the_storage_actions_a_reader_does_not(
    page: Page, ui_cluster: UiCluster, readable_volume: str
) -> None:
    """The same pages as an admin have their actions (so the reader test can fail)."""
    login(page, ui_cluster.admin_token)
    expected = {
        "pools": ["pool-create-open"],
        "pool": ["pool-delete"],
        "volumes": ["volume-create-open"],
        "volume": ["volume-attach", "volume-grow", "snapshot-create", "volume-delete"],
    }
    for name, route in PAGES.items():
        go(page, route)
        _drawn(page, name)
        for action in expected[name]:
            expect(page.locator(f"[data-action={action}]")).to_be_visible()


def test_server_refuses_a_readers_storage_changes(
    ui_cluster: UiCluster, reader_token: str, readable_volume: str
) -> None:
    reader = ui_cluster.api(reader_token)
    assert reader.get(f"/volumes/{READ_VOLUME}").status_code == 200
    refused = {
        "pool create": reader.post("/pools", json={"name": "ui-no-pool", "type": "local"}),
        "pool delete": reader.delete(f"/pools/{READ_POOL}"),
        "volume create": reader.post(
            "/volumes", json={"name": "ui-no-vol", "size_mb": 16, "pool": READ_POOL, "node": NODE}
        ),
        "volume grow": reader.post(f"/volumes/{READ_VOLUME}/grow", json={"size_mb": 1024}),
        "volume delete": reader.delete(f"/volumes/{READ_VOLUME}"),
    }
    wrong = {what: r.status_code for what, r in refused.items() if r.status_code != 403}
    assert not wrong, f"not refused with 403: {wrong}"
    admin = ui_cluster.api(ui_cluster.admin_token)
    assert admin.get(f"/volumes/{READ_VOLUME}").json()["size_mb"] == 512
    assert admin.get("/pools/ui-no-pool").status_code == 404
