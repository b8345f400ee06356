"""A reader sees no action anywhere (the VM pages and the storage pages), and the server
refuses the actions anyway."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.ui.browser import Page, UiCluster, expect, go, login, node_row, vm_row

VM = "ui-readonly"
POOL = "ui-readonly-pool"  # a pool and a volume of the reader's own (tests/ui/test_storage.py
VOLUME = "ui-readonly-data"  # has its own, made and removed in that module)


@pytest.fixture(scope="module")
def readonly_vm(ui_cluster: UiCluster) -> Iterator[str]:
    ui_cluster.cli.ok("vm", "create", VM, "--vcpus", "1", "--memory", "256", "--node", "node1",
                      "--start", "--wait")  # fmt: skip
    yield VM
    ui_cluster.cli.ok("vm", "delete", VM, "--wait")


@pytest.fixture(scope="module")
def readonly_volume(ui_cluster: UiCluster) -> Iterator[str]:
    """A ready volume on node1 in a local pool of its own (the CLI waits for its task)."""
    ui_cluster.cli.ok("pool", "create", POOL, "--type", "local")
    ui_cluster.cli.ok("volume", "create", VOLUME, "--size", "64", "--pool", POOL,
                      "--node", "node1")  # fmt: skip
    yield VOLUME
    ui_cluster.cli.ok("volume", "delete", VOLUME, "--yes")
    ui_cluster.cli.ok("pool", "delete", POOL, "--yes")


def _shown(page: Page) -> dict[str, tuple[str, Callable[[], None]]]:
    """Each page a reader must see without actions: its route, and how to tell it is drawn."""
    return {
        "overview": (
            "#/",
            lambda: expect(page.locator("[data-testid=node-row]")).to_have_count(3),
        ),
        "nodes": (
            "#/nodes",
            lambda: expect(node_row(page, "node1").locator("[data-field=health]")).to_have_text(
                "up"
            ),
        ),
        "node": (
            "#/nodes/node1",
            lambda: expect(
                page.locator("#view [data-field=health] [data-state]").first
            ).to_have_attribute("data-state", "up"),
        ),
        "vms": (
            "#/vms",
            lambda: expect(vm_row(page, VM).locator("[data-field=status]")).to_have_text("ACTIVE"),
        ),
        "vm": (
            f"#/vms/{VM}",
            lambda: expect(page.get_by_test_id("vm-status")).to_have_text("ACTIVE"),
        ),
        "pools": (
            "#/pools",
            lambda: expect(
                page.locator(f'[data-testid=pool-row][data-pool="{POOL}"]')
            ).to_have_count(1),
        ),
        "pool": (
            f"#/pools/{POOL}",
            lambda: expect(
                page.locator(f'[data-testid=volume-row][data-volume="{VOLUME}"]')
            ).to_have_count(1),
        ),
        "volumes": (
            "#/volumes",
            lambda: expect(
                page.locator(f'[data-testid=volume-row][data-volume="{VOLUME}"] [data-field=state]')
            ).to_have_text("ready"),
        ),
        "volume": (
            f"#/volumes/{VOLUME}",
            lambda: expect(page.get_by_test_id("volume-state")).to_have_text("ready"),
        ),
    }


PAGES = ["overview", "nodes", "node", "vms", "vm", "pools", "pool", "volumes", "volume"]


@pytest.mark.parametrize("name", PAGES)
def test_reader_sees_no_action(
    page: Page,
    ui_cluster: UiCluster,
    reader_token: str,
    readonly_vm: str,
    readonly_volume: str,
    name: str,
) -> None:
    login(page, reader_token)
    expect(page.get_by_test_id("whoami")).to_contain_text("reader")
    route, drawn = _shown(page)[name]
    go(page, route)
    drawn()
    expect(page.get_by_test_id("task-panel")).to_be_visible()
    actions = page.locator("[data-action]")
    assert actions.count() == 0, f"a reader sees actions on {route}: " + ", ".join(
        str(actions.nth(i).get_attribute("data-action")) for i in range(actions.count())
    )


# What an admin sees on some of those pages (so the reader test can fail).
ADMIN_ACTIONS = {
    "vm": ["vm-stop", "vm-migrate", "vm-delete"],
    "pools": ["pool-create-open"],
    "pool": ["pool-delete"],
    "volumes": ["volume-create-open"],
    "volume": ["volume-attach", "volume-grow", "snapshot-create", "volume-delete"],
}


@pytest.mark.parametrize("name", list(ADMIN_ACTIONS))
def test_admin_sees_the_actions_a_reader_does_not(
    page: Page, ui_cluster: UiCluster, readonly_vm: str, readonly_volume: str, name: str
) -> None:
    """The same page as an admin has its actions."""
    login(page, ui_cluster.admin_token)
    route, drawn = _shown(page)[name]
    go(page, route)
    drawn()
    for action in ADMIN_ACTIONS[name]:
        expect(page.locator(f"[data-action={action}]")).to_be_visible()


def test_server_refuses_a_readers_actions(
    ui_cluster: UiCluster, reader_token: str, readonly_vm: str
) -> None:
    reader = ui_cluster.api(reader_token)
    assert reader.get(f"/vms/{VM}").status_code == 200  # the token works: it may read
    refused = {
        "vm create": reader.post(
            "/vms", json={"name": "ui-not-made", "vcpus": 1, "memory_mb": 256}
        ),
        "vm stop": reader.post(f"/vms/{VM}/stop"),
        "vm migrate": reader.post(f"/vms/{VM}/migrate", json={}),
        "vm delete": reader.delete(f"/vms/{VM}"),
        "node flush": reader.post("/nodes/node1/flush"),
        "settings set": reader.put("/settings/health.dead_after", json={"value": 5}),
    }
    wrong = {what: r.status_code for what, r in refused.items() if r.status_code != 403}
    assert not wrong, f"not refused with 403: {wrong}"
    admin = ui_cluster.api(ui_cluster.admin_token)
    vm = admin.get(f"/vms/{VM}").json()
    assert (vm["status"], vm["node"]) == ("ACTIVE", "node1"), vm
    assert admin.get("/vms/ui-not-made").status_code == 404
    assert admin.get("/nodes/node1").json()["scheduling"] == "ready"
