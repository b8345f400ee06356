"""The storage classes on the console's Reconcile page: a volume whose file was deleted behind
Bollard's back and a stray file are listed in their classes, with the volume and pool linked,
and the operator fixes the missing one from the page."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from bollard.domain.storage import volume_file
from bollard.sim.fabric import Fabric
from bollard.sim.storage import EMPTY_CHECKSUM, PoolKey, SimStorage
from bollard.sim.storage_models import SimVolume
from tests.ui.browser import Page, UiCluster, expect, go, login

LOCAL = PoolKey("local", "local")
VOLUME = "ui-gone"


def _wait_task(api: httpx.Client, answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task: dict[str, Any] = api.get(f"/tasks/{task_id}/wait", params={"timeout": 5}).json()
        if task["finished_at"] is not None:
            return task
    raise AssertionError(f"task {task_id} did not end")


def _section(page: Page, cls: str) -> Any:
    return page.locator(f'[data-testid=reconcile-class][data-class="{cls}"]')


def test_storage_differences_are_listed_and_fixed_from_the_page(
    page: Page, ui_cluster: UiCluster
) -> None:
    api = ui_cluster.api(ui_cluster.admin_token)
    body = {"name": VOLUME, "size_mb": 16, "node": "node1"}
    assert _wait_task(api, api.post("/volumes", json=body))["state"] == "succeeded"
    file = api.get(f"/volumes/{VOLUME}").json()["file"]
    store = SimStorage(Fabric(ui_cluster.data_dir / "fabric"))
    stray = volume_file(str(uuid.uuid4()), "qcow2")
    try:
        assert store.remove("node1", LOCAL, file)
        rec = SimVolume(file=stray, format="qcow2", size_mb=8, checksum=EMPTY_CHECKSUM)
        store.put("node2", LOCAL, rec)

        login(page, ui_cluster.admin_token)
        go(page, "#/reconcile")
        missing = _section(page, "volume-missing")
        expect(missing).to_have_attribute("data-count", "1")
        row = missing.locator(f'[data-testid=difference-row][data-volume="{VOLUME}"]')
        expect(row).to_contain_text(f"file {file} absent")
        expect(row.locator(f'a[href="#/volumes/{VOLUME}"]')).to_be_visible()
        expect(row.locator('a[href="#/pools/local"]')).to_be_visible()
        expect(missing.locator("[data-field=policy]")).to_have_text("auto: report")
        orphan = _section(page, "volume-orphan")
        stray_row = orphan.locator(f'[data-testid=difference-row][data-volume="{stray}"]')
        expect(stray_row).to_contain_text("no volume record")
        expect(stray_row).to_contain_text("node2")
        expect(orphan.locator("[data-field=policy]")).to_have_text("auto: partial")
        expect(page.get_by_test_id("reconcile-summary")).to_contain_text("volumes")

        missing.locator("[data-action=reconcile-fix-volume-missing]").click()
        expect(page.get_by_test_id("confirm")).to_be_visible()
        page.get_by_test_id("confirm-ok").click()
        fixed = page.locator('[data-testid=fix-row][data-class="volume-missing"]')
        expect(fixed).to_have_attribute("data-ok", "true")
        expect(fixed).to_contain_text(VOLUME)
        expect(missing).to_have_attribute("data-count", "0")
        shown = api.get(f"/volumes/{VOLUME}").json()
        assert shown["state"] == "error"
        assert shown["fault"] == f"file {file} missing from pool local on node1"
    finally:
        store.remove("node2", LOCAL, stray)
        if api.get(f"/volumes/{VOLUME}").status_code == 200:
            _wait_task(api, api.delete(f"/volumes/{VOLUME}"))
