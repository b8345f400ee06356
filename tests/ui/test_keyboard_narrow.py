"""The console without a mouse, and on a narrow screen."""

from __future__ import annotations

from tests.ui.browser import Page, UiCluster, expect, go, login, node_row

# Whether the document is wider than the window (a page that scrolls sideways as a whole;
# wide tables scroll inside their own box instead).
OVERFLOWS = "() => document.documentElement.scrollWidth > window.innerWidth + 1"


def test_sign_in_and_move_around_with_the_keyboard(page: Page, ui_cluster: UiCluster) -> None:
    page.goto("/ui/")
    token = page.get_by_test_id("token-input")
    expect(token).to_be_focused()  # the form is ready to type into
    page.keyboard.type(ui_cluster.admin_token)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("whoami")).to_contain_text("admin")
    # Tab reaches the nav's links in order; Enter follows one.
    nodes = page.get_by_test_id("nav-nodes")
    for _ in range(20):
        page.keyboard.press("Tab")
        if nodes.evaluate("el => el === document.activeElement"):
            break
    expect(nodes).to_be_focused()
    page.keyboard.press("Enter")
    expect(nodes).to_have_attribute("aria-current", "page")
    expect(node_row(page, "node1")).to_be_visible()


def test_confirmation_dialog_defaults_to_cancel(page: Page, ui_cluster: UiCluster) -> None:
    login(page, ui_cluster.admin_token)
    go(page, "#/nodes/node1")
    flush = page.locator("[data-action=node-flush]")
    flush.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_test_id("confirm")
    expect(dialog).to_be_visible()
    expect(page.get_by_test_id("confirm-cancel")).to_be_focused()
    page.keyboard.press("Escape")  # closes it: nothing happens
    expect(dialog).to_be_hidden()
    node = ui_cluster.api(ui_cluster.admin_token).get("/nodes/node1").json()
    assert node["scheduling"] == "ready", node


def test_pages_fit_a_narrow_screen(page: Page, ui_cluster: UiCluster) -> None:
    page.set_viewport_size({"width": 400, "height": 800})
    login(page, ui_cluster.admin_token)
    for route in ("#/", "#/nodes", "#/nodes/node1", "#/vms", "#/vms/new", "#/tasks", "#/events"):
        go(page, route)
        expect(page.locator("#view h1").first).to_be_visible()
        assert not page.evaluate(OVERFLOWS), f"{route} is wider than a 400 px screen"
    expect(page.get_by_test_id("nav-settings")).to_be_visible()  # the nav wraps, nothing hidden
