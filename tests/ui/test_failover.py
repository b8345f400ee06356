"""A sim node loses power (CLI): the console shows it go dead and get fenced, and its HA VM run
again on another node, live, in tabs that are never reloaded.

This test breaks a node, so it runs on a cluster of its own (same `bollard up` options)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.ui.browser import (
    UP_ARGS,
    Browser,
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
    vm_row,
)

HA_VM = "ui-ha"
FAILOVER_TIMEOUT_MS = 60_000

# Records, in the page, every text the health cell of node3 shows (a reload would lose it).
WATCH_HEALTH = """() => {
  window.__health = [];
  const read = () => {
    const cell = document.querySelector(
      '[data-testid=node-row][data-node="node3"] [data-field=health]');
    const text = cell ? cell.textContent.trim() : null;
    if (text && window.__health[window.__health.length - 1] !== text) window.__health.push(text);
  };
  read();
  new MutationObserver(read).observe(document.body,
    { childList: true, subtree: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def failover_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiCluster]:
    with running_cluster(tmp_path_factory.mktemp("ui-failover"), *UP_ARGS) as cluster:
        cluster.cli.ok("settings", "set", "health.startup_grace", "0")
        # The dead wait, so that the console has failure states to follow: with fast failover
        # (issue 21) a host that reads off is fenced within a tenth of a second (up -> fenced).
        cluster.cli.ok("settings", "set", "fencing.fast", "false")
        cluster.cli.ok("vm", "create", HA_VM, "--vcpus", "1", "--memory", "256", "--node",
                       "node3", "--start", "--wait")  # fmt: skip
        yield cluster


@pytest.fixture(scope="module")
def failover_browser(playwright: Playwright, failover_cluster: UiCluster) -> Iterator[Browser]:
    with open_browser(playwright, failover_cluster.home) as browser:
        yield browser


@pytest.fixture
def tab(
    failover_browser: Browser,
    failover_cluster: UiCluster,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Page]:
    with open_page(failover_browser, failover_cluster.url) as page:
        yield page
        save_failure(page, request.node, tmp_path_factory.getbasetemp())


def test_power_loss_fence_and_ha_recovery_live(tab: Page, failover_cluster: UiCluster) -> None:
    cluster = failover_cluster
    overview = tab
    login(overview, cluster.admin_token)
    expect(node_row(overview, "node3").locator("[data-field=health]")).to_have_text("up")
    overview.evaluate(WATCH_HEALTH)

    vms = overview.context.new_page()
    login(vms, cluster.admin_token)
    go(vms, "#/vms")
    ha_row = vm_row(vms, HA_VM)
    expect(ha_row.locator("[data-field=node]")).to_have_text("node3")
    expect(ha_row.locator("[data-field=status]")).to_have_text("ACTIVE")

    events = overview.context.new_page()
    login(events, cluster.admin_token)
    go(events, "#/events")
    expect(events.locator("[data-testid=event-row]").first).to_be_visible()
    for page in (overview, vms, events):
        page.evaluate("() => { window.__notReloaded = true; }")

    cluster.cli.ok("sim", "power", "off", "node3", "--data-dir", str(cluster.data_dir))

    health = node_row(overview, "node3").locator("[data-field=health]")
    expect(health).to_have_text("fenced", timeout=FAILOVER_TIMEOUT_MS)
    seen = overview.evaluate("() => window.__health")
    print(json.dumps({"node3_health_shown": seen}))
    assert seen[0] == "up" and seen[-1] == "fenced", seen
    # It went through the failure states on the way (the console followed them live).
    assert {"suspect", "dead", "fencing"} & set(seen[1:-1]), seen

    expect(ha_row.locator("[data-field=node]")).to_have_text(
        _other_node(cluster), timeout=FAILOVER_TIMEOUT_MS
    )
    expect(ha_row.locator("[data-field=status]")).to_have_text(
        "ACTIVE", timeout=FAILOVER_TIMEOUT_MS
    )

    rows = events.locator("[data-testid=event-row]")
    for kind in ("node.dead", "node.fenced", "node.recovery"):
        expect(rows.filter(has_text=kind).filter(has_text="node3").first).to_be_visible()

    for page in (overview, vms, events):
        assert page.evaluate("() => window.__notReloaded === true"), f"{page.url} was reloaded"
    vms.close()
    events.close()


def _other_node(cluster: UiCluster) -> str:
    """Where the HA VM runs now, by the API: node1 or node2 (never node3)."""
    admin = cluster.api(cluster.admin_token)

    def moved() -> str | None:
        vm = admin.get(f"/vms/{HA_VM}").json()
        return str(vm["node"]) if vm["node"] in ("node1", "node2") else None

    node: str = cluster.cli.wait_until(
        f"{HA_VM} is placed on node1 or node2", moved, timeout=FAILOVER_TIMEOUT_MS / 1000
    )
    return node
