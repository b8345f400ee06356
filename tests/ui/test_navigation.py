"""Moving on before a page has loaded: the page left behind never draws over the next one."""

from __future__ import annotations

from playwright.sync_api import Route

from tests.ui.browser import Page, UiCluster, expect, go, login, node_row

FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def test_a_slow_page_left_behind_does_not_draw_over_the_next(
    page: Page, ui_cluster: UiCluster
) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/tasks")
    # Hold the overview's status answer until the nodes page has drawn.
    held: list[Route] = []
    page.route("**/api/v1/status", lambda route: held.append(route))
    with page.expect_request("**/api/v1/status"):
        go(page, "#/")
    go(page, "#/nodes")
    expect(node_row(page, "node1")).to_be_visible()
    assert held, "the overview never asked for /status: the test would prove nothing"
    with page.expect_response("**/api/v1/status"):
        for route in held:
            route.continue_()
    # Let the overview finish with its late answer (two frames), then look.
    page.evaluate(FRAMES)
    expect(page.get_by_test_id("nav-nodes")).to_have_attribute("aria-current", "page")
    expect(page.locator("#view h1")).to_have_text("Nodes")
    expect(page.get_by_test_id("overview-cards")).to_have_count(0)
