"""An in-memory fake of the issue-19 API (flavors, resize, migration records, instance
actions, node allocations) over httpx.MockTransport, and the helpers the CLI tests of those
commands share (test_cli_resize.py, test_cli_flavors.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from bollard.cli import client as client_mod
from bollard.cli.main import app

TOKEN = "admin-secret"
NOW = "2026-03-01T10:00:00Z"
Change = Callable[[], None]


def _err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def ref(flavor: dict[str, Any] | None) -> dict[str, Any] | None:
    """The FlavorRef a VM or a resize records of a flavor."""
    if flavor is None:
        return None
    keys = ("id", "name", "vcpus", "memory_mb", "disk_mb", "properties")
    return {k: flavor[k] for k in keys}


class Api19:
    """Flavors, VMs (create, show, resize, confirm, revert, actions), tasks, migration
    records and nodes of /api/v1 as api19.md describes them, in memory; pages of 2 items.

    An operation answers 202 with a pending task; its effect is applied when a wait on the
    task ends it (``outcome``), after the answers of ``script``."""

    def __init__(self) -> None:
        self.flavors: dict[str, dict[str, Any]] = {}
        self.vms: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.on_success: dict[str, Change] = {}
        self.migrations: list[dict[str, Any]] = []  # newest first
        self.actions: dict[str, list[dict[str, Any]]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.script: list[dict[str, Any]] = []
        self.outcome = "succeeded"
        self.error: str | None = None

    # -- test data ------------------------------------------------------------------------

    def flavor(
        self, name: str, vcpus: int = 1, memory_mb: int = 1024, **fields: Any
    ) -> dict[str, Any]:
        flavor: dict[str, Any] = {
            "id": f"f-{name}", "name": name, "vcpus": vcpus, "memory_mb": memory_mb,
            "disk_mb": 0, "description": None, "properties": {}, "used_by": 0,
            "created_at": NOW, "updated_at": NOW,
        }  # fmt: skip
        flavor.update(fields)
        self.flavors[name] = flavor
        return flavor

    def vm(self, name: str, flavor: str | None = None, **fields: Any) -> dict[str, Any]:
        size = self.flavors[flavor] if flavor else {"vcpus": 1, "memory_mb": 512}
        vm: dict[str, Any] = {
            "name": name, "uuid": f"u-{name}", "node": "node1", "status": "ACTIVE",
            "vm_state": "active", "task_state": None, "vcpus": size["vcpus"],
            "memory_mb": size["memory_mb"], "flavor": ref(self.flavors.get(flavor or "")),
            "resize": None, "disks": [],
        }  # fmt: skip
        vm.update(fields)
        self.vms[name] = vm
        return vm

    def migration(self, vm: str, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": f"m{len(self.migrations) + 1}", "vm": vm, "vm_uuid": f"u-{vm}",
            "type": "live-migration", "source": "node1", "dest": "node2",
            "status": "completed", "task_id": None, "old_flavor": None, "new_flavor": None,
            "source_hold": None, "error": None, "created_at": NOW, "updated_at": NOW,
            "finished_at": None,
        }  # fmt: skip
        record.update(fields)
        self.migrations.insert(0, record)
        return record

    def sent(self) -> list[tuple[str, str, Any]]:
        """(method, path, body) of every request but those about tasks."""
        return [
            (r.method, r.url.path.removeprefix("/api/v1"), json.loads(r.content or b"null"))
            for r in self.requests
            if "/tasks/" not in r.url.path
        ]

    # -- the API --------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _err(401, "unauthorized", "invalid token")
        path, method = request.url.path.removeprefix("/api/v1"), request.method
        body = json.loads(request.content) if request.content else {}
        if path == "/flavors":
            if method == "GET":
                return self._page(sorted(self.flavors.values(), key=lambda f: f["name"]), request)
            return self._create_flavor(body)
        if m := re.fullmatch(r"/flavors/([^/]+)", path):
            return self._flavor(m.group(1), method, body)
        if path == "/vms" and method == "POST":
            return self._create_vm(body)
        if m := re.fullmatch(r"/vms/([^/]+)/actions(?:/([^/]+))?", path):
            return self._actions(m.group(1), m.group(2))
        if m := re.fullmatch(r"/vms/([^/]+)/resize(?:/(confirm|revert))?", path):
            return self._resize(m.group(1), m.group(2), body)
        if m := re.fullmatch(r"/vms/([^/]+)", path):
            vm = self.vms.get(m.group(1))
            return httpx.Response(200, json=vm) if vm else _err(404, "not-found", "no such vm")
        if path == "/migrations":
            vm_name = request.url.params.get("vm")
            records = [r for r in self.migrations if vm_name in (None, r["vm"])]
            return self._page(records, request)
        if m := re.fullmatch(r"/migrations/([^/]+)", path):
            found = [r for r in self.migrations if r["id"] == m.group(1)]
            if not found:
                return _err(404, "not-found", f"migration {m.group(1)} not found")
            return httpx.Response(200, json=found[0])
        if m := re.fullmatch(r"/nodes/([^/]+)", path):
            node = self.nodes.get(m.group(1))
            if node is None:
                return _err(404, "not-found", f"node {m.group(1)!r} not found")
            return httpx.Response(200, json=node)
        if m := re.fullmatch(r"/tasks/([^/]+)(/wait)?", path):
            return self._task_answer(m.group(1), bool(m.group(2)))
        return _err(404, "not-found", f"no route {method} {path}")

    def _page(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        limit = min(int(request.url.params.get("limit", "100")), 2)
        more = start + limit < len(items)
        page = {
            "items": items[start : start + limit],
            "next_cursor": str(start + limit) if more else None,
            "total": len(items),
        }
        return httpx.Response(200, json=page)

    def _create_flavor(self, body: dict[str, Any]) -> httpx.Response:
        if body["name"] in self.flavors:
            return _err(409, "already-exists", f"flavor {body['name']!r} already exists")
        fields = {k: body[k] for k in ("disk_mb", "description", "properties")}
        flavor = self.flavor(body["name"], body["vcpus"], body["memory_mb"], **fields)
        return httpx.Response(201, json=flavor)

    def _flavor(self, name: str, method: str, body: dict[str, Any]) -> httpx.Response:
        flavor = self.flavors.get(name)
        if flavor is None:
            return _err(404, "not-found", f"flavor {name!r} not found")
        if method == "PATCH":
            flavor["properties"].update(body.get("properties") or {})
            for key in body.get("unset_properties") or []:
                flavor["properties"].pop(key, None)
            if "description" in body:
                flavor["description"] = body["description"]
            flavor["updated_at"] = "2026-03-02T00:00:00Z"
        elif method == "DELETE":
            users = sorted(
                v["name"] for v in self.vms.values() if (v["flavor"] or {}).get("name") == name
            )
            if users:
                return _err(
                    409, "conflict",
                    f"flavor {name} is in use by {len(users)} VMs: {', '.join(users)}",
                )  # fmt: skip
            del self.flavors[name]
            return httpx.Response(204)
        return httpx.Response(200, json=flavor)

    def _accepted(self, kind: str, vm: dict[str, Any], done: Change) -> httpx.Response:
        task: dict[str, Any] = {"id": f"t{len(self.tasks) + 1}", "type": kind, "vm": vm["name"]}
        task.update(node=None, state="pending", error=None, result={})
        self.tasks[task["id"]] = task
        self.on_success[task["id"]] = done
        return httpx.Response(202, json={"vm": dict(vm), "task": dict(task)})

    def _create_vm(self, body: dict[str, Any]) -> httpx.Response:
        if "flavor" in body and ("vcpus" in body or "memory_mb" in body):
            return _err(422, "invalid-input", "give a flavor or vcpus and memory_mb, not both")
        if "flavor" in body and body["flavor"] not in self.flavors:
            return _err(404, "not-found", f"flavor {body['flavor']!r} not found")
        vm = self.vm(body["name"], body.get("flavor"), status="BUILD", vm_state="building")
        if "vcpus" in body:
            vm.update(vcpus=body["vcpus"], memory_mb=body["memory_mb"])
        return self._accepted("create", vm, lambda: vm.update(status="SHUTOFF"))

    def _resize(self, name: str, end: str | None, body: dict[str, Any]) -> httpx.Response:
        vm = self.vms.get(name)
        if vm is None:
            return _err(404, "not-found", f"vm {name!r} not found")
        if end is not None:
            if vm["status"] != "VERIFY_RESIZE":
                return _err(
                    409, "conflict",
                    f"VM {name} is not waiting for a resize to be confirmed or reverted "
                    f"({vm['status']})",
                )  # fmt: skip
            return self._end(vm, end)
        flavor = self.flavors.get(body["flavor"])
        if flavor is None:
            return _err(404, "not-found", f"flavor {body['flavor']!r} not found")
        if vm["status"] not in ("ACTIVE", "SHUTOFF"):
            return _err(409, "conflict", f"VM {name} cannot be resized ({vm['status']})")
        source, dest = vm["node"], body["to"] or "node2"
        record = self.migration(
            name, type="resize", source=source, dest=dest, status="pre-migrating",
            old_flavor=vm["flavor"], new_flavor=ref(flavor),
        )  # fmt: skip
        vm.update(status="RESIZE", task_state="resize_prep")

        def done() -> None:
            hold = {"node": source, "vcpus": vm["vcpus"], "memory_mb": vm["memory_mb"]}
            record.update(status="finished", source_hold=hold)
            vm.update(
                status="VERIFY_RESIZE", vm_state="resized", task_state=None, node=dest,
                vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"], flavor=ref(flavor),
                resize={"migration_id": record["id"], "source": source, "dest": dest,
                        "old_flavor": record["old_flavor"], "new_flavor": ref(flavor),
                        "status": "finished", "finished_at": None},
            )  # fmt: skip

        return self._accepted("resize", vm, done)

    def _end(self, vm: dict[str, Any], end: str) -> httpx.Response:
        resize = vm["resize"]
        record = next(r for r in self.migrations if r["id"] == resize["migration_id"])
        vm.update(task_state=f"resize_{end}ing".replace("eing", "ing"))

        def done() -> None:
            record.update(status=f"{end}ed", source_hold=None, finished_at=NOW)
            vm.update(status="ACTIVE", vm_state="active", task_state=None, resize=None)
            if end == "revert":
                old = resize["old_flavor"]
                vm.update(node=resize["source"], flavor=old, vcpus=old["vcpus"],
                          memory_mb=old["memory_mb"])  # fmt: skip

        return self._accepted(f"resize_{end}", vm, done)

    def _actions(self, name: str, request_id: str | None) -> httpx.Response:
        if name not in self.vms:
            return _err(404, "not-found", f"vm {name!r} not found")
        actions = self.actions.get(name, [])
        if request_id is None:
            listed = [dict(a, events=None) for a in actions]
            return httpx.Response(200, json={"items": listed, "total": len(listed)})
        found = [a for a in actions if a["request_id"] == request_id]
        if not found:
            return _err(404, "not-found", f"VM {name} has no action {request_id}")
        return httpx.Response(200, json=found[0])

    def _task_answer(self, task_id: str, wait: bool) -> httpx.Response:
        task = self.tasks.get(task_id)
        if task is None:
            return _err(404, "not-found", f"task {task_id} not found")
        if wait and self.script:
            task.update(self.script.pop(0))
        elif wait:
            task.update(state=self.outcome, error=self.error)
            if self.outcome == "succeeded":
                self.on_success.pop(task_id)()
        return httpx.Response(200, json=task)


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api19:
    fake = Api19()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api19:
    return install(monkeypatch, tmp_path)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Result, *fragments: str, code: int = 1) -> str:
    """The one ``error: ...`` line a failed command printed (nothing on stdout)."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def field(stdout: str, key: str) -> str:
    """The value of ``key`` in a `show` listing."""
    match = re.search(rf"^{re.escape(key)}\s\s+(.*)$", stdout, re.MULTILINE)
    assert match, f"no {key!r} in:\n{stdout}"
    return match.group(1).strip()


def flat(text: str) -> str:
    """A help text as one line of words, without the boxes around its options."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def web1(api: Api19) -> dict[str, Any]:
    """web1, ACTIVE on node1 with flavor small; flavor large exists."""
    api.flavor("small", 1, 1024)
    api.flavor("large", 4, 8192, disk_mb=40960)
    return api.vm("web1", "small")
