"""`bollard reconcile` with the storage classes, against an in-memory fake of /reconcile
(httpx.MockTransport): the flags that fix them, and how their differences are shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from bollard.cli import client as client_mod
from bollard.cli.main import app
from bollard.cli.reconcile_cmd import CLASSES
from bollard.domain.drift import ALL_CLASSES

TOKEN = "admin-secret"
MISSING: dict[str, Any] = {
    "class": "volume-missing", "node": "node1", "vm": "web", "uuid": "u-web",
    "volume": "web-vdb", "pool": "local", "file": "u-web-vdb.qcow2",
    "record": "attached, 1024 MiB", "host": "file u-web-vdb.qcow2 absent", "detail": "",
    "data": {}, "auto": "report",
}  # fmt: skip
ORPHAN: dict[str, Any] = {
    "class": "volume-orphan", "node": None, "vm": "", "uuid": "", "volume": None,
    "pool": "nfs", "file": "vol-x.qcow2", "record": "no volume record",
    "host": "64 MiB, partial", "detail": "the unfinished target of a copy", "data": {},
    "auto": "fix",
}  # fmt: skip


def scan(*differences: dict[str, Any]) -> dict[str, Any]:
    counts = {c.value: 0 for c in ALL_CLASSES}
    for d in differences:
        counts[d["class"]] += 1
    return {
        "differences": list(differences), "counts": counts, "checked_vms": 1,
        "checked_nodes": 2, "checked_volumes": 3, "silent_hosts": ["node3"], "seconds": 0.01,
        "scanned_in": "thread", "policies": {c.value: "report" for c in ALL_CLASSES},
    }  # fmt: skip


class FakeReconcile:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/reconcile" and request.method == "GET":
            return httpx.Response(200, json=scan(MISSING, ORPHAN))
        if path == "/reconcile/fix" and request.method == "POST":
            body = json.loads(request.content)
            self.bodies.append(body)
            fixed = [MISSING | {"ok": True, "action": "volume web-vdb now error: file gone"}]
            failed = [ORPHAN | {"ok": False, "action": "no answer from node1"}]
            return httpx.Response(200, json={"fixed": fixed, "failed": failed, "remaining": scan()})
        return httpx.Response(404, json={"error": {"code": "not-found", "message": path}})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeReconcile:
    fake = FakeReconcile()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})  # one line a row


def test_the_cli_knows_every_class() -> None:
    assert list(CLASSES) == [c.value for c in ALL_CLASSES]


def test_storage_differences_show_their_volume_pool_and_what_the_server_does(
    api: FakeReconcile,
) -> None:
    result = run("reconcile")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "VOLUME" in lines[1] and "AUTO" in lines[1]
    [missing] = [line for line in lines if line.startswith("volume-missing")]
    assert "web-vdb (pool local)" in missing and missing.rstrip().endswith("report")
    [orphan] = [line for line in lines if line.startswith("volume-orphan")]
    assert "vol-x.qcow2 (pool nfs)" in orphan and orphan.rstrip().endswith("fix")
    assert "checked 1 VMs on 2 nodes, 3 volumes (no storage answer from node3)" in result.stdout
    assert api.bodies == []  # nothing fixed without a --fix flag


@pytest.mark.parametrize(
    ("flag", "cls"),
    [
        ("--fix-volume-missing", "volume-missing"),
        ("--fix-volume-orphans", "volume-orphan"),
        ("--fix-volume-stuck", "volume-stuck"),
        ("--fix-volume-size", "volume-size"),
    ],
)
def test_each_storage_class_has_its_fix_flag(api: FakeReconcile, flag: str, cls: str) -> None:
    result = run("reconcile", flag, "--node", "node1")
    assert result.exit_code == 1, result.output  # a fix failed (the fake says so)
    assert api.bodies == [{"classes": [cls], "node": "node1", "vm": None}]
    assert "web-vdb (pool local)" in result.stdout and "FAILED" in result.stdout


def test_fix_all_includes_the_storage_classes(api: FakeReconcile) -> None:
    run("reconcile", "--fix-all")
    # every class but vf-conflict, which has no fix
    assert api.bodies[0]["classes"] == [c.value for c in ALL_CLASSES if c.value != "vf-conflict"]
