"""Signing in to the console: a good token opens it, a bad one is refused with one line."""

from __future__ import annotations

from tests.ui.browser import Page, UiCluster, expect, login, one_line


def test_admin_token_signs_in(page: Page, ui_cluster: UiCluster) -> None:
    login(page, ui_cluster.admin_token)
    expect(page.get_by_test_id("whoami")).to_contain_text("admin")
    expect(page.get_by_test_id("nav-overview")).to_be_visible()
    expect(page.get_by_test_id("token-input")).to_have_count(0)


def test_bad_token_is_refused_with_one_line(page: Page, ui_cluster: UiCluster) -> None:
    page.goto("/ui/")
    page.get_by_test_id("token-input").fill("not-a-token-of-this-cluster")
    page.get_by_test_id("login-submit").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    line = one_line(error.inner_text())
    assert "not-a-token" not in line, f"the error line repeats the token: {line!r}"
    # Still signed out: the form is there, nothing of the cluster is.
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.get_by_test_id("whoami")).to_be_hidden()
    expect(page.get_by_test_id("nav-overview")).to_be_hidden()
    expect(page.locator("[data-testid=node-row]")).to_have_count(0)
