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
    # Signed in, the focus starts at the top, on the nav's link of the page shown. (Left
    # where the form was, Tab went through the page and the task panel first: as many stops
    # as had drawn by then, and as many tasks as the tests before had left in the panel.)
    overview = page.get_by_test_id("nav-overview")
    expect(overview).to_have_attribute("aria-current", "page")
    expect(overview).to_be_focused()
    # The skip link comes before the nav; Tab goes along the nav's links in order.
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(overview).to_be_focused()
    page.keyboard.press("Tab")
    nodes = page.get_by_test_id("nav-nodes")
    expect(nodes).to_be_focused()
    # Enter follows it.
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
    for route in ("#/", "#/nodes", "#/nodes/node1", "#/vms", "#/vms/new", "#/tasks", "#/events",
                  "#/volumes", "#/pools", "#/pools/local"):  # fmt: skip
        go(page, route)
        expect(page.locator("#view h1").first).to_be_visible()
        assert not page.evaluate(OVERFLOWS), f"{route} is wider than a 400 px screen"
    expect(page.get_by_test_id("nav-settings")).to_be_visible()  # the nav wraps, nothing hidden
