"""Flavors and resizes in the console: make two flavors from the flavors page, create a VM with
one from the create form, resize it from its page and confirm, resize it again and revert
(the source node's page shows the resize hold meanwhile), then read its actions (opening one
to its events) and the migrations page; a flavor in use cannot be deleted, and a reader sees
none of the controls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ui.browser import Locator, Page, UiCluster, expect, go, login, one_line, screenshot

SMALL = "ui-small"
LARGE = "ui-large"
VM = "ui-resized"
TASK_MS = 30_000  # a resize on the sim hosts takes about a second; a loaded CI more


def _gone(response: httpx.Response) -> None:
    assert response.status_code in (204, 404), f"{response.status_code}: {response.text}"


@pytest.fixture
def cleanup(ui_cluster: UiCluster) -> Iterator[None]:
    """Whatever the test made goes at the end: the VM, then its flavors."""
    yield
    api = ui_cluster.api(ui_cluster.admin_token)
    if api.get(f"/vms/{VM}").status_code == 200:
        ui_cluster.cli.ok("vm", "delete", VM, "--wait")
    for name in (SMALL, LARGE):
        _gone(api.delete(f"/flavors/{name}"))


def _confirm(page: Page) -> None:
    expect(page.get_by_test_id("confirm")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()


def _create_flavor(page: Page, name: str, vcpus: int, memory_mb: int, properties: str) -> None:
    go(page, "#/flavors")
    expect(page.get_by_test_id("nav-flavors")).to_have_attribute("aria-current", "page")
    page.locator("[data-action=flavor-create-open]").click()
    form = page.get_by_test_id("flavor-create-form")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=vcpus]").fill(str(vcpus))
    form.locator("input[name=memory_mb]").fill(str(memory_mb))
    form.locator("input[name=disk_mb]").fill("0")
    form.locator("textarea[name=properties]").fill(properties)
    page.locator("[data-action=flavor-create]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.locator("#view h1")).to_have_text(f"Flavor {name}")
    expect(page.get_by_test_id("flavor-facts").locator("[data-field=vcpus]")).to_have_text(
        str(vcpus)
    )


def _vm(api: httpx.Client) -> dict[str, Any]:
    response = api.get(f"/vms/{VM}")
    assert response.status_code == 200, response.text
    vm: dict[str, Any] = response.json()
    return vm


def _resize_to(page: Page, flavor: str) -> None:
    """Resize the VM shown to `flavor` from its page (the scheduler's choice of node); the
    page shows it waiting for confirm or revert."""
    page.locator("[data-action=vm-resize]").click()
    form = page.get_by_test_id("resize-form")
    form.locator("select[name=flavor]").select_option(flavor)
    expect(form.locator("input[name=to][value='']")).to_be_checked()
    page.locator("[data-action=vm-resize-submit]").click()
    expect(page.get_by_test_id("resize-form")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("vm-status")).to_have_text("VERIFY_RESIZE", timeout=TASK_MS)


def _verify_text(page: Page) -> Locator:
    return page.get_by_test_id("resize-verify-text")


def test_flavors_resize_confirm_and_revert(
    page: Page, ui_cluster: UiCluster, cleanup: None
) -> None:
    api = ui_cluster.api(ui_cluster.admin_token)
    login(page, ui_cluster.admin_token)

    # Two flavors from the form; their rows on the list.
    _create_flavor(page, SMALL, 1, 256, "tier=bronze")
    _create_flavor(page, LARGE, 2, 512, "tier=gold\nhw:cpu_policy=shared")
    go(page, "#/flavors")
    large_row = page.locator(f'[data-testid=flavor-row][data-flavor="{LARGE}"]')
    expect(large_row.locator("[data-field=memory]")).to_have_text("512 MiB")
    expect(large_row.locator("[data-field=properties]")).to_have_text(
        "hw:cpu_policy=shared, tier=gold"
    )
    assert api.get(f"/flavors/{LARGE}").json()["properties"] == {
        "tier": "gold",
        "hw:cpu_policy": "shared",
    }

    # Its properties edited on its page: one changed, one removed, one added (PATCH).
    large_row.locator("[data-field=name] a").click()
    page.locator("[data-action=flavor-edit]").click()
    form = page.get_by_test_id("flavor-edit-form")
    form.locator("textarea[name=properties]").fill("tier=platinum\nzone=a")
    page.locator("[data-action=flavor-save]").click()
    expect(page.get_by_test_id("flavor-edit-form")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_be_hidden()
    props = page.get_by_test_id("flavor-properties")
    expect(props.locator("[data-testid=property-row]")).to_have_count(2)
    expect(props.locator('[data-key="tier"] [data-field=value]')).to_have_text("platinum")
    flavor = api.get(f"/flavors/{LARGE}").json()
    assert flavor["properties"] == {"tier": "platinum", "zone": "a"}, flavor
    assert (flavor["vcpus"], flavor["memory_mb"]) == (2, 512), flavor

    # A VM with the small flavor from the create form (no vCPUs or memory typed).
    go(page, "#/vms/new")
    page.locator("input[name=name]").fill(VM)
    page.get_by_test_id("create-flavor").select_option(SMALL)
    expect(page.get_by_test_id("create-by-hand")).to_be_hidden()
    page.locator("input[name=start]").check()
    page.locator("[data-action=vm-create]").click()
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    intent = page.get_by_test_id("vm-intent")
    expect(intent.locator("[data-field=flavor]")).to_contain_text(SMALL)
    vm = _vm(api)
    assert vm["flavor"]["name"] == SMALL and (vm["vcpus"], vm["memory_mb"]) == (1, 256), vm
    first_node = vm["node"]

    # The small flavor is in use: deleting it is refused, with the server's one line.
    go(page, "#/flavors")
    small_row = page.locator(f'[data-testid=flavor-row][data-flavor="{SMALL}"]')
    expect(small_row.locator("[data-field=used_by]")).to_have_text("1 VM")
    small_row.locator("[data-action=flavor-delete]").click()
    _confirm(page)
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("in use")
    assert VM in one_line(error.inner_text())
    assert api.get(f"/flavors/{SMALL}").status_code == 200

    # Resize to large from the VM page, then confirm.
    go(page, f"#/vms/{VM}")
    _resize_to(page, LARGE)
    vm = _vm(api)
    source, dest = vm["resize"]["source"], vm["resize"]["dest"]
    assert source == first_node and dest and dest != source, vm["resize"]
    expect(_verify_text(page)).to_have_text(
        f"Resized from {SMALL} on {source} to {LARGE} on {dest}: confirm (deletes the old copy)"
        f" or revert (back to {source} at {SMALL})"
    )
    # Confirm is offered once the resize's task has ended (the server refuses it before).
    confirm = page.locator("[data-action=vm-resize-confirm]")
    expect(confirm).to_be_enabled(timeout=TASK_MS)
    screenshot(page, "resize.png")
    confirm.click()
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    expect(page.get_by_test_id("resize-verify")).to_have_count(0)
    expect(intent.locator("[data-field=flavor]")).to_contain_text(LARGE)
    expect(intent.locator("[data-field=node]")).to_have_text(dest)
    vm = _vm(api)
    assert (vm["flavor"]["name"], vm["vcpus"], vm["memory_mb"], vm["node"]) == (
        LARGE, 2, 512, dest,
    ), vm  # fmt: skip

    # Resize back to small, and revert: meanwhile its source keeps a resize hold.
    _resize_to(page, SMALL)
    held = _vm(api)["resize"]
    assert held["source"] == dest, held
    go(page, f"#/nodes/{dest}")
    hold = page.locator(f'[data-testid=allocation-row][data-consumer=migration][data-vm="{VM}"]')
    expect(hold).to_have_count(1)
    expect(hold.locator("[data-field=vcpus]")).to_have_text("2")
    expect(page.get_by_test_id("node-allocation-summary")).to_contain_text("1 resize hold")
    go(page, f"#/vms/{VM}")
    expect(_verify_text(page)).to_contain_text(f"revert (back to {dest} at {LARGE})")
    revert = page.locator("[data-action=vm-resize-revert]")
    expect(revert).to_be_enabled(timeout=TASK_MS)
    revert.click()
    expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE", timeout=TASK_MS)
    expect(intent.locator("[data-field=node]")).to_have_text(dest)
    vm = _vm(api)
    assert (vm["flavor"]["name"], vm["vcpus"], vm["node"]) == (LARGE, 2, dest), vm

    # Its actions, newest first; the first resize opens to its events.
    actions = page.get_by_test_id("vm-actions").locator("[data-testid=action-row]")
    expect(actions.first).to_have_attribute("data-action-name", "revertResize")
    for name in ("create", "resize", "confirmResize", "revertResize"):
        row = actions.and_(page.locator(f"[data-action-name={name}]")).first
        expect(row).to_have_attribute("data-result", "success")
    resize_row = actions.and_(page.locator("[data-action-name=resize]")).last
    request_id = resize_row.get_attribute("data-request")
    assert request_id
    resize_row.get_by_test_id("action-events-toggle").click()
    events = page.locator(f'[data-testid=action-events][data-request="{request_id}"]')
    expect(events.locator("[data-testid=action-event-row]").first).to_be_visible()
    detail = api.get(f"/vms/{VM}/actions/{request_id}").json()
    expect(events.locator("[data-testid=action-event-row]")).to_have_count(len(detail["events"]))

    # The migrations page: both resizes of the VM, newest first, with their flavors.
    page.get_by_test_id("nav-migrations").click()
    expect(page.get_by_test_id("nav-migrations")).to_have_attribute("aria-current", "page")
    page.get_by_test_id("migrations-vm").fill(VM)
    rows = page.locator(f'[data-testid=migration-row][data-vm="{VM}"][data-type=resize]')
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-status", "reverted")
    expect(rows.nth(0).locator("[data-field=flavor]")).to_have_text(f"{LARGE} → {SMALL}")
    expect(rows.nth(1)).to_have_attribute("data-status", "confirmed")
    expect(rows.nth(1).locator("[data-field=flavor]")).to_have_text(f"{SMALL} → {LARGE}")
    expect(rows.nth(1).locator("[data-field=route]")).to_have_text(f"{first_node} → {dest}")
    records = api.get("/migrations", params={"vm": VM}).json()["items"]
    assert [r["status"] for r in records if r["type"] == "resize"] == ["reverted", "confirmed"]


def test_reader_sees_flavors_without_controls(
    page: Page, ui_cluster: UiCluster, reader_token: str
) -> None:
    """A reader reads flavors but sees no create, edit, delete or resize control."""
    api = ui_cluster.api(ui_cluster.admin_token)
    name = "ui-reader-flavor"
    created = api.post("/flavors", json={"name": name, "vcpus": 1, "memory_mb": 128})
    assert created.status_code == 201, created.text
    try:
        login(page, reader_token)
        go(page, "#/flavors")
        expect(page.locator(f'[data-testid=flavor-row][data-flavor="{name}"]')).to_have_count(1)
        expect(page.locator("[data-action=flavor-create-open]")).to_have_count(0)
        expect(page.locator("[data-action=flavor-delete]")).to_have_count(0)
        go(page, f"#/flavors/{name}")
        expect(page.get_by_test_id("flavor-facts")).to_be_visible()
        expect(page.locator("[data-action=flavor-edit]")).to_have_count(0)
        refused = ui_cluster.api(reader_token).delete(f"/flavors/{name}")
        assert refused.status_code == 403, refused.text
    finally:
        _gone(api.delete(f"/flavors/{name}"))


# Whether the document is wider than the window (wide tables scroll inside their own box).
OVERFLOWS = "() => document.documentElement.scrollWidth > window.innerWidth + 1"


def test_flavor_and_migration_pages_fit_a_narrow_screen(page: Page, ui_cluster: UiCluster) -> None:
    api = ui_cluster.api(ui_cluster.admin_token)
    name = "ui-narrow-flavor"
    created = api.post(
        "/flavors",
        json={"name": name, "vcpus": 1, "memory_mb": 128, "properties": {"tier": "gold"}},
    )
    assert created.status_code == 201, created.text
    try:
        page.set_viewport_size({"width": 400, "height": 800})
        login(page, ui_cluster.admin_token)
        for route in ("#/flavors", f"#/flavors/{name}", "#/migrations", "#/nodes/node1"):
            go(page, route)
            expect(page.locator("#view h1").first).to_be_visible()
            assert not page.evaluate(OVERFLOWS), f"{route} is wider than a 400 px screen"
        go(page, "#/flavors")
        page.locator("[data-action=flavor-create-open]").click()
        expect(page.get_by_test_id("flavor-create-form")).to_be_visible()
        assert not page.evaluate(OVERFLOWS), "the create-flavor form is wider than 400 px"
    finally:
        _gone(api.delete(f"/flavors/{name}"))
