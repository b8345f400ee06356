"""`bollard ha group|rule|status` and the HA options of `vm meta` / lines of `vm show`,
against an in-memory fake of /api/v1/ha and the VM fields: requests sent, output (tables and
-o json), bad input refused before any request, the server's refusals as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli import client as client_mod
from tests.unit.cli_api19 import TOKEN, field, flat, one_line_error, run

NOW = "2026-03-01T10:00:00Z"


def _err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class HaApi:
    """Groups, rules and VMs with their HA fields, in memory; list pages of 2 items."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.vms: dict[str, dict[str, Any]] = {}
        self.settings = {"ha.max_restart": 1, "ha.max_relocate": 2}
        self.requests: list[httpx.Request] = []

    def vm(self, name: str, **fields: Any) -> dict[str, Any]:
        vm: dict[str, Any] = {
            "name": name, "uuid": f"u-{name}", "node": "node1", "status": "ACTIVE",
            "vm_state": "active", "task_state": None, "task_id": None, "ha": None,
            "ha_priority": 0, "ha_state": "started", "ha_group": None, "max_restart": None,
            "max_relocate": None, "ha_restarts": 0, "ha_relocates": 0, "fault": None,
        }  # fmt: skip
        vm.update(fields)
        self.vms[name] = vm
        return vm

    def group(self, name: str, nodes: dict[str, int], **fields: Any) -> dict[str, Any]:
        group = {"name": name, "nodes": nodes, "restricted": False, "nofailback": False,
                 "description": "", "vms": 0, "created_at": NOW, "updated_at": NOW}  # fmt: skip
        group.update(fields)
        self.groups[name] = group
        return group

    def sent(self) -> list[tuple[str, str, Any]]:
        return [
            (r.method, r.url.path.removeprefix("/api/v1"), json.loads(r.content or b"null"))
            for r in self.requests
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _err(401, "unauthorized", "invalid token")
        path, method = request.url.path.removeprefix("/api/v1"), request.method
        body = json.loads(request.content) if request.content else {}
        if m := re.fullmatch(r"/ha/(groups|rules)", path):
            store = self.groups if m.group(1) == "groups" else self.rules
            if method == "GET":
                return self._page(sorted(store.values(), key=lambda g: g["name"]), request)
            if body["name"] in store:
                return _err(409, "already-exists", f"an HA group named {body['name']!r} exists")
            item = dict(body, created_at=NOW, updated_at=NOW)
            if m.group(1) == "groups":
                item["vms"] = 0
            store[body["name"]] = item
            return httpx.Response(201, json=item)
        if m := re.fullmatch(r"/ha/(groups|rules)/([^/]+)", path):
            store = self.groups if m.group(1) == "groups" else self.rules
            item = store.get(m.group(2))
            if item is None:
                return _err(404, "not-found", f"no HA group named {m.group(2)!r}")
            if method == "DELETE":
                if m.group(1) == "groups" and item["vms"]:
                    return _err(409, "conflict", f"HA group {item['name']} has {item['vms']} VM(s)")
                del store[m.group(2)]
                return httpx.Response(204)
            if method == "PATCH":
                item.update(body)
            return httpx.Response(200, json=item)
        if path == "/vms" and method == "POST":
            vm = self.vm(body["name"], task_id="t-1")
            task = {"id": "t-1", "type": "create", "vm": vm["name"], "state": "pending"}
            return httpx.Response(202, json={"task": task, "vm": vm})
        if path == "/vms":
            return self._page(sorted(self.vms.values(), key=lambda v: v["name"]), request)
        if m := re.fullmatch(r"/vms/([^/]+)", path):
            vm = self.vms.get(m.group(1))
            if vm is None:
                return _err(404, "not-found", f"VM {m.group(1)!r} does not exist")
            if method == "PATCH":
                if body.get("ha_group") == "nope":
                    return _err(422, "invalid-input", "ha_group: no HA group named 'nope'")
                vm.update({k: v for k, v in body.items() if k != "ha_group"})
                if "ha_group" in body:
                    vm["ha_group"] = body["ha_group"] or None
            return httpx.Response(200, json=vm)
        if m := re.fullmatch(r"/settings/([^/]+)", path):
            return httpx.Response(200, json={"key": m.group(1), "value": self.settings[m.group(1)]})
        return _err(404, "not-found", f"no route {method} {path}")

    def _page(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        more = start + 2 < len(items)
        return httpx.Response(200, json={
            "items": items[start : start + 2], "next_cursor": str(start + 2) if more else None,
            "total": len(items),
        })  # fmt: skip


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HaApi:
    fake = HaApi()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def rows(table: str) -> list[list[str]]:
    """The cells of a table's rows (after its header and rule)."""
    return [[c.strip() for c in ln.split("│")] for ln in table.strip().splitlines()[2:]]


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


# --- groups --------------------------------------------------------------------------------


def test_group_create_sends_the_nodes_with_priorities(api: HaApi) -> None:
    out = ok("ha", "group", "create", "web", "--nodes", "node1:2, node2:1,node3", "--restricted",
             "--description", "front ends")  # fmt: skip
    assert api.sent() == [("POST", "/ha/groups", {
        "name": "web", "nodes": {"node1": 2, "node2": 1, "node3": 0}, "restricted": True,
        "nofailback": False, "description": "front ends",
    })]  # fmt: skip
    assert out.strip() == "HA group web created: node1:2,node2:1,node3:0."
    created = json.loads(ok("ha", "group", "create", "db", "--nodes", "n1", "--nofailback",
                            "-o", "json"))  # fmt: skip
    assert created == api.groups["db"] and created["nofailback"] is True


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--nodes", "node1:x"], "priority 'x' of node1 is not a whole number"),
        (["--nodes", "node1:1,node1:2"], "node1 is given twice"),
        (["--nodes", ":3"], "names no node"),
        (["--nodes", "n1:2000"], "not in -1000..1000"),
        (["--nodes", ","], "give at least one node"),
        ([], "missing option --nodes"),
    ],
)
def test_group_create_refuses_bad_nodes_before_any_request(
    api: HaApi, args: list[str], fragment: str
) -> None:
    one_line_error(run("ha", "group", "create", "g", *args), fragment, code=2)
    assert api.requests == []


def test_group_list_show_set_delete(api: HaApi) -> None:
    api.group("web", {"node2": 1, "node1": 2}, restricted=True, vms=3)
    api.group("db", {"node3": 0}, nofailback=True)
    api.group("batch", {"node1": 0}, description="nightly")
    table = ok("ha", "group", "list")
    lines = rows(table)
    assert [ln[0] for ln in lines] == ["batch", "db", "web"]  # every page followed
    assert lines[2] == ["web", "node1:2,node2:1", "restricted", "3", "-"]
    assert lines[1][2] == "nofailback" and lines[0][4] == "nightly"
    listed = json.loads(ok("ha", "group", "list", "-o", "json"))
    assert [g["name"] for g in listed] == ["batch", "db", "web"]
    assert len(json.loads(ok("ha", "group", "list", "--limit", "1", "-o", "json"))) == 1

    shown = ok("ha", "group", "show", "web")
    assert field(shown, "nodes") == "node1:2,node2:1"
    assert (field(shown, "restricted"), field(shown, "failback"), field(shown, "vms")) == (
        "yes", "yes", "3",
    )  # fmt: skip
    assert json.loads(ok("ha", "group", "show", "db", "-o", "json"))["nofailback"] is True

    api.requests.clear()
    changed = ok("ha", "group", "set", "web", "--nodes", "node4:5", "--unrestricted",
                 "--failback", "--description", "")  # fmt: skip
    assert api.sent() == [("PATCH", "/ha/groups/web", {
        "nodes": {"node4": 5}, "restricted": False, "nofailback": False, "description": "",
    })]  # fmt: skip
    assert field(changed, "nodes") == "node4:5" and field(changed, "restricted") == "no"
    one_line_error(run("ha", "group", "set", "web"), "nothing to change", code=2)

    one_line_error(run("ha", "group", "delete", "web"), "HA group web has 3 VM(s)")
    assert ok("ha", "group", "delete", "db").strip() == "HA group db deleted."
    one_line_error(run("ha", "group", "show", "db"), "no HA group named 'db'")
    one_line_error(run("ha", "group", "show", "a/b"), "not a valid HA group name", code=2)


# --- rules ---------------------------------------------------------------------------------


def test_rule_create_set_list_show_delete(api: HaApi) -> None:
    out = ok("ha", "rule", "create", "dbs", "--kind", "apart", "--vms", "db1, db2,db1",
             "--strict")  # fmt: skip
    assert api.sent() == [("POST", "/ha/rules", {
        "name": "dbs", "kind": "apart", "strict": True, "vms": ["db1", "db2"], "description": "",
    })]  # fmt: skip
    assert out.strip() == "Affinity rule dbs created: strict apart: db1, db2."
    api.requests.clear()
    shown = ok("ha", "rule", "set", "dbs", "--kind", "together", "--no-strict", "--vms", "a,b,c")
    assert api.sent() == [("PATCH", "/ha/rules/dbs", {
        "vms": ["a", "b", "c"], "kind": "together", "strict": False,
    })]  # fmt: skip
    assert (field(shown, "kind"), field(shown, "strict"), field(shown, "vms")) == (
        "together", "no", "a, b, c",
    )  # fmt: skip
    assert rows(ok("ha", "rule", "list")) == [["dbs", "together", "no", "a, b, c", "-"]]
    assert json.loads(ok("ha", "rule", "list", "-o", "json"))[0]["vms"] == ["a", "b", "c"]
    assert json.loads(ok("ha", "rule", "show", "dbs", "-o", "json"))["kind"] == "together"
    assert ok("ha", "rule", "delete", "dbs").strip() == "Affinity rule dbs deleted."


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--kind", "near", "--vms", "a,b"], "'near' is not together or apart"),
        (["--kind", "apart", "--vms", "a"], "give at least 2 different VMs"),
        (["--kind", "apart", "--vms", "a,a"], "give at least 2 different VMs"),
        (["--kind", "apart", "--vms", "a,b c"], "'b c' is not a valid VM name"),
        (["--vms", "a,b"], "missing option --kind"),
    ],
)
def test_rule_create_refuses_bad_input_before_any_request(
    api: HaApi, args: list[str], fragment: str
) -> None:
    one_line_error(run("ha", "rule", "create", "r", *args), fragment, code=2)
    assert api.requests == []


# --- status, vm meta, vm show --------------------------------------------------------------


def test_ha_status_lists_every_vm_with_its_counts_against_its_limits(api: HaApi) -> None:
    api.vm("web1", ha_group="web", ha_restarts=1)
    api.vm("web2", ha_group="web", max_restart=3, ha_relocates=2, max_relocate=5, node="node2")
    api.vm("db1", ha_state="error", ha_restarts=1, ha_relocates=2, fault="start failed 3 times")
    api.vm("tmp1", ha_state="ignored", node=None, status="SHUTOFF")
    shown = {r[0]: r for r in rows(ok("ha", "status"))}
    assert list(shown) == ["db1", "tmp1", "web1", "web2"]
    assert shown["web1"] == ["web1", "started", "web", "node1", "ACTIVE", "1/1", "0/2", "-"]
    assert shown["web2"][5:7] == ["0/3", "2/5"]
    assert shown["db1"][1] == "error" and shown["db1"][5:] == ["1/1", "2/2", "start failed 3 times"]
    assert shown["tmp1"][3] == "-"
    only = json.loads(ok("ha", "status", "--group", "web", "-o", "json"))
    assert [v["name"] for v in only] == ["web1", "web2"]
    assert set(only[0]) == {"name", "node", "status", "ha_state", "ha_group", "ha_restarts",
                            "max_restart", "ha_relocates", "max_relocate", "fault"}  # fmt: skip
    errors = json.loads(ok("ha", "status", "--state", "error", "-o", "json"))
    assert [v["name"] for v in errors] == ["db1"]


def test_vm_meta_sends_the_ha_fields_and_vm_show_says_them(api: HaApi) -> None:
    api.vm("web1", ha_state="error", ha_restarts=1)
    out = ok("vm", "meta", "web1", "--ha-group", "web", "--ha-state", "started",
             "--max-restart", "3", "--max-relocate", "default")  # fmt: skip
    assert api.sent()[0] == ("PATCH", "/vms/web1", {
        "ha_group": "web", "ha_state": "started", "max_restart": 3, "max_relocate": None,
    })  # fmt: skip
    assert field(out, "ha_state") == "started, group web (restarts 1/3, relocates 0/default)"
    api.requests.clear()
    ok("vm", "meta", "web1", "--ha-group", "")
    assert api.sent()[0] == ("PATCH", "/vms/web1", {"ha_group": ""})
    assert (
        field(ok("vm", "show", "web1"), "ha_state") == "started (restarts 1/3, relocates 0/default)"
    )
    one_line_error(run("vm", "meta", "web1", "--ha-group", "nope"), "no HA group named 'nope'")


def test_vm_create_sends_the_ha_fields(api: HaApi) -> None:
    ok("vm", "create", "db1", "--vcpus", "1", "--memory", "256", "--ha-group", "db",
       "--ha-state", "stopped", "--max-restart", "2", "--max-relocate", "0")  # fmt: skip
    method, path, body = api.sent()[0]
    assert (method, path) == ("POST", "/vms")
    assert {k: body[k] for k in ("ha_group", "ha_state", "max_restart", "max_relocate")} == {
        "ha_group": "db", "ha_state": "stopped", "max_restart": 2, "max_relocate": 0,
    }  # fmt: skip
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ha-state", "error"], "--ha-state: 'error' is not one of started, stopped"),
        (["--max-restart", "101"], "--max-restart: '101' is not 0..100 or default"),
        (["--max-relocate", "x"], "--max-relocate: 'x' is not 0..100 or default"),
    ],
)
def test_vm_meta_refuses_bad_ha_values_before_any_request(
    api: HaApi, args: list[str], fragment: str
) -> None:
    api.vm("web1")
    one_line_error(run("vm", "meta", "web1", *args), fragment, code=2)
    assert api.requests == []


def test_help_explains(api: HaApi) -> None:
    text = flat(ok("ha", "--help"))
    assert "HA policies" in text and "group" in text and "rule" in text and "status" in text
    group = flat(ok("ha", "group", "create", "--help"))
    assert "NODE:PRIORITY" in group and "--restricted" in group and "--nofailback" in group
    assert "highest-priority" in flat(ok("ha", "group", "--help"))
    rule = flat(ok("ha", "rule", "create", "--help"))
    assert "together" in rule and "apart" in rule and "--strict" in rule
    meta = flat(ok("vm", "meta", "--help"))
    for option in ("--ha-group", "--ha-state", "--max-restart", "--max-relocate"):
        assert option in meta
    assert "request state" in flat(ok("ha", "status", "--help"))
