"""CLI commands against an in-memory fake of the REST API (httpx.MockTransport)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from bollard.cli import client as client_mod
from bollard.cli.main import app
from bollard.cli.vm_cmd import parse_disk, parse_disk_size, parse_nic

TOKEN = "admin-secret"


class FakeApi:
    """Just enough of /api/v1 for the CLI; pages of 2 items to exercise cursors."""

    def __init__(self) -> None:
        self.vms: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.task_outcome = "succeeded"
        self.task_error: str | None = None
        self.task_result: dict[str, Any] = {}
        self.maintenance = False

    def vm(self, name: str, **fields: Any) -> dict[str, Any]:
        vm = {"name": name, "uuid": f"u-{name}", "node": "node1", "status": "SHUTOFF"}
        vm.update(fields)
        self.vms[name] = vm
        return vm

    def _task(self, type_: str, vm: str) -> dict[str, Any]:
        task: dict[str, Any] = {"id": f"t{len(self.tasks) + 1}", "type": type_, "vm": vm}
        task.update(state="pending", error=None)
        self.tasks[task["id"]] = task
        return task

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _err(401, "unauthorized", "invalid token")
        path, method = request.url.path.removeprefix("/api/v1"), request.method
        body = json.loads(request.content) if request.content else {}
        if path == "/status":
            return httpx.Response(200, json=self._status())
        if path in ("/vms", "/nodes", "/tasks") and method == "GET":
            store = {"/vms": self.vms, "/nodes": self.nodes, "/tasks": self.tasks}[path]
            return self._page(list(store.values()), request)
        if path == "/nodes" and method == "POST":
            node = {"name": body["name"], "health": "up", "connected": False}
            self.nodes[body["name"]] = node
            return httpx.Response(201, json={"node": node, "token": "agent-token-123"})
        if path == "/vms" and method == "POST":
            if body["name"] in self.vms:
                return _err(409, "already-exists", f"vm {body['name']!r} already exists")
            if body["memory_mb"] <= 0:
                return _err(422, "invalid-input", "memory_mb must be positive")
            vm = self.vm(body["name"], status="BUILD")
            return httpx.Response(202, json={"vm": vm, "task": self._task("create", vm["name"])})
        if m := re.fullmatch(r"/vms/([^/]+)(?:/(\w+))?", path):
            return self._vm(m.group(1), m.group(2), method)
        if m := re.fullmatch(r"/tasks/([^/]+)(/wait)?", path):
            task = self.tasks.get(m.group(1))
            if task is None:
                return _err(404, "not-found", f"task {m.group(1)} not found")
            if m.group(2):
                task.update(state=self.task_outcome, error=self.task_error, result=self.task_result)
                if task["type"] == "delete" and self.task_outcome == "succeeded":
                    self.vms.pop(task["vm"], None)
            return httpx.Response(200, json=task)
        if m := re.fullmatch(r"/nodes/([^/]+)", path):
            if m.group(1) not in self.nodes:
                return _err(404, "not-found", f"node {m.group(1)!r} not found")
            return httpx.Response(200, json=self.nodes[m.group(1)])
        return _err(404, "not-found", f"no route {method} {path}")

    def _vm(self, name: str, action: str | None, method: str) -> httpx.Response:
        vm = self.vms.get(name)
        if vm is None:
            return _err(404, "not-found", f"vm {name!r} not found")
        if method == "GET":
            return httpx.Response(200, json=vm)
        task = self._task(action or "delete", name)
        return httpx.Response(202, json={"vm": vm, "task": task})

    def _page(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        limit = min(int(request.url.params.get("limit", "100")), 2)
        more = start + limit < len(items)
        return httpx.Response(
            200,
            json={
                "items": items[start : start + limit],
                "next_cursor": str(start + limit) if more else None,
                "total": len(items),
            },
        )

    def _status(self) -> dict[str, Any]:
        return {
            "version": "0.1.0",
            "database": "sqlite",
            "nodes": {"total": 2, "connected": 1},
            "vms": {"total": 3, "by_status": {"ACTIVE": 2, "SHUTOFF": 1}},
            "maintenance": self.maintenance,
        }


def _err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_status_json_is_the_servers_object(api: FakeApi) -> None:
    result = run("status", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == api._status()


def test_status_table_mentions_counts(api: FakeApi) -> None:
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "1/2 connected" in result.stdout
    assert "2 ACTIVE" in result.stdout and "sqlite" in result.stdout


def test_status_shows_maintenance_mode(api: FakeApi) -> None:
    assert re.search(r"^maintenance\s+off$", run("status").stdout, re.MULTILINE)
    api.maintenance = True
    shown = run("status").stdout
    assert re.search(r"^maintenance\s+ON: fencing and recovery are suspended", shown, re.M)


def test_migrate_wait_says_how_the_vm_moved(api: FakeApi) -> None:
    api.vm("web1", status="ACTIVE", node="node2")
    summary = (
        "migrated by shutdown to node2 (live migration failed: injected fault); the VM was"
        " down for 4.2 s"
    )
    api.task_result = {"summary": summary, "fallback": {"live_error": "injected fault"}}
    result = run("vm", "migrate", "web1", "--to", "node2", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"task t1 (migrate web1) succeeded: {summary}; web1 is ACTIVE on node2."
    )


def test_vm_list_json_follows_every_page(api: FakeApi) -> None:
    for i in range(5):
        api.vm(f"vm{i}")
    result = run("vm", "list", "-o", "json")
    assert result.exit_code == 0, result.output
    assert [v["name"] for v in json.loads(result.stdout)] == [f"vm{i}" for i in range(5)]
    assert len([r for r in api.requests if r.url.path == "/api/v1/vms"]) == 3


def test_vm_list_limit(api: FakeApi) -> None:
    for i in range(5):
        api.vm(f"vm{i}")
    result = run("vm", "list", "--limit", "3", "-o", "json")
    assert [v["name"] for v in json.loads(result.stdout)] == ["vm0", "vm1", "vm2"]


def test_vm_show_json_is_the_vm_object(api: FakeApi) -> None:
    vm = api.vm("web1", status="ACTIVE", observed_power="running")
    result = run("vm", "show", "web1", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == vm


def test_unknown_vm_is_one_line(api: FakeApi) -> None:
    assert_one_line_error(run("vm", "show", "ghost"), "ghost", "not found")
    assert_one_line_error(run("vm", "start", "ghost", "--wait"), "not found")


def test_negative_memory_and_duplicate_name(api: FakeApi) -> None:
    result = run("vm", "create", "a", "--vcpus", "1", "--memory", "-5")
    assert_one_line_error(result, "memory_mb")
    api.vm("dup")
    assert_one_line_error(
        run("vm", "create", "dup", "--vcpus", "1", "--memory", "64"), "already exists"
    )


def test_bad_token_is_one_line(api: FakeApi) -> None:
    result = run("vm", "list", env={"BOLLARD_TOKEN": "wrong"})
    assert_one_line_error(result, "refused the token")


def test_unreachable_server_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    url = f"http://127.0.0.1:{port}"
    result = run("vm", "list", env={"BOLLARD_URL": url, "BOLLARD_TOKEN": "x"})
    assert_one_line_error(result, f"cannot reach the Bollard server at {url}")


def test_create_without_wait_prints_task_and_how_to_follow(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "2", "--memory", "512", "--start")
    assert result.exit_code == 0, result.output
    assert "t1" in result.stdout and "bollard task wait t1" in result.stdout
    sent = json.loads(api.requests[-1].content)
    assert sent == {"name": "web1", "vcpus": 2, "memory_mb": 512, "start": True}


def test_create_wait_json_reports_vm_and_task(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"]["state"] == "succeeded" and out["vm"]["name"] == "web1"
    assert "waiting for task t1" in result.stderr  # progress goes to stderr, not stdout


def test_wait_on_a_failed_task_exits_non_zero_with_its_error(api: FakeApi) -> None:
    api.vm("web1")
    api.task_outcome, api.task_error = "failed", "host exploded"
    result = run("vm", "start", "web1", "--wait")
    assert result.exit_code == 1
    assert "error: task t1 (start web1) failed: host exploded" in result.stderr


def test_delete_wait_reports_the_vm_gone(api: FakeApi) -> None:
    api.vm("web1")
    result = run("vm", "delete", "web1", "--wait", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["vm"] is None
    assert "web1" not in api.vms


def test_node_add_prints_token_and_agent_command(api: FakeApi) -> None:
    result = run("node", "add", "node7")
    assert result.exit_code == 0, result.output
    assert "agent-token-123" in result.stdout
    assert "bollard agent --server http://bollard.test --node node7" in result.stdout


def test_node_add_token_file_keeps_token_off_the_screen(api: FakeApi, tmp_path: Path) -> None:
    target = tmp_path / "n.token"
    result = run("node", "add", "node8", "--token-file", str(target), "-o", "json")
    assert result.exit_code == 0, result.output
    assert "agent-token-123" not in result.stdout
    assert target.read_text().strip() == "agent-token-123"
    assert target.stat().st_mode & 0o777 == 0o600


def test_node_list_and_show_json(api: FakeApi) -> None:
    for i in range(3):
        run("node", "add", f"n{i}")
    listed = json.loads(run("node", "list", "-o", "json").stdout)
    assert [n["name"] for n in listed] == ["n0", "n1", "n2"]
    assert json.loads(run("node", "show", "n1", "-o", "json").stdout) == api.nodes["n1"]
    assert_one_line_error(run("node", "show", "nope"), "not found")


def test_node_show_says_maintenance_when_the_server_has_it(api: FakeApi) -> None:
    run("node", "add", "n1")
    assert "maintenance" not in run("node", "show", "n1").stdout  # a server before issue 21
    api.nodes["n1"]["maintenance"] = True
    lines = [ln.split() for ln in run("node", "show", "n1").stdout.splitlines()]
    assert ["maintenance", "on"] in lines


def test_task_show_and_unknown_task(api: FakeApi) -> None:
    api.vm("web1")
    run("vm", "stop", "web1")
    assert json.loads(run("task", "show", "t1", "-o", "json").stdout)["type"] == "stop"
    assert_one_line_error(run("task", "wait", "t99"), "t99")


def test_every_command_has_help() -> None:
    for args in (
        [],
        ["vm"],
        ["node"],
        ["task"],
        ["vm", "create"],
        ["vm", "restart"],
        ["up"],
        ["down"],
        ["status"],
    ):
        result = run(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("value", "size_mb"),
    [
        ("512", 512),
        ("512M", 512),
        ("512mib", 512),
        ("10G", 10240),
        ("10gib", 10240),
        ("2GiB", 2048),
        ("1t", 1024 * 1024),
        ("64TiB", 64 * 1024 * 1024),
        (" 3 G ", 3072),
    ],
)
def test_disk_sizes_are_mib_or_have_a_unit(value: str, size_mb: int) -> None:
    assert parse_disk_size(value) == size_mb


@pytest.mark.parametrize("value", ["", "G", "10x", "10GB", "1.5G", "-1", "0", "0G", "65T"])
def test_a_bad_disk_size_is_refused(value: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_disk_size(value)


def test_create_sends_disks_in_order(api: FakeApi) -> None:
    result = run(
        "vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--disk", "10G", "--disk", "512"
    )
    assert result.exit_code == 0, result.output
    sent = json.loads(api.requests[-1].content)
    assert sent["disks"] == [{"size_mb": 10240}, {"size_mb": 512}]


@pytest.mark.parametrize(
    ("value", "disk"),
    [
        ("10G", {"size_mb": 10240}),
        ("10G@nfs", {"size_mb": 10240, "pool": "nfs"}),
        ("512@local", {"size_mb": 512, "pool": "local"}),
        ("1t@fast-ssd_2", {"size_mb": 1024 * 1024, "pool": "fast-ssd_2"}),
        (" 3 G @ shared1", {"size_mb": 3072, "pool": "shared1"}),
    ],
)
def test_a_disk_is_a_size_and_maybe_a_pool(value: str, disk: dict[str, Any]) -> None:
    assert parse_disk(value) == disk


@pytest.mark.parametrize(
    "value", ["10G@", "10G@NFS", "10G@-x", "10G@a/b", "10G@a@b", "@nfs", "0@nfs"]
)
def test_a_bad_disk_is_refused(value: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_disk(value)


def test_create_sends_each_disks_pool(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "1", "--memory", "64",
                 "--disk", "10G@nfs", "--disk", "512")  # fmt: skip
    assert result.exit_code == 0, result.output
    sent = json.loads(api.requests[-1].content)
    assert sent["disks"] == [{"size_mb": 10240, "pool": "nfs"}, {"size_mb": 512}]


def test_a_bad_disk_pool_is_a_usage_error_and_sends_nothing(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--disk", "10G@Big")
    assert result.exit_code == 2
    assert "'10G@Big': after '@' comes a pool name" in " ".join(result.stderr.split())
    assert api.requests == []


def test_vm_create_help_explains_pools() -> None:
    result = CliRunner().invoke(app, ["vm", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "SIZE[@POOL]" in text
    assert "10G@nfs" in text and "bollard pool list" in text


def test_a_bad_disk_option_is_a_usage_error_and_sends_nothing(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--disk", "10x")
    assert result.exit_code == 2
    assert "--disk" in result.stderr and "'10x' is not a size" in result.stderr
    assert api.requests == []


def test_vm_show_lists_disks(api: FakeApi) -> None:
    disks = [{"device": "vda", "size_mb": 10240}, {"device": "vdb", "size_mb": 512}]
    api.vm("web1", disks=disks)
    api.vm("bare", disks=[])
    shown = run("vm", "show", "web1")
    assert shown.exit_code == 0, shown.output
    assert re.search(r"^disks\s+vda 10 GiB, vdb 512 MiB$", shown.stdout, re.MULTILINE)
    assert re.search(r"^disks\s+none$", run("vm", "show", "bare").stdout, re.MULTILINE)
    assert json.loads(run("vm", "show", "web1", "-o", "json").stdout)["disks"] == disks


@pytest.mark.parametrize(
    ("value", "body"),
    [
        ("bridge=br0", {"bridge": "br0", "model": "virtio"}),
        ("network=default", {"network": "default", "model": "virtio"}),
        ("bridge=br0,model=e1000", {"bridge": "br0", "model": "e1000"}),
        (
            "network=lab.net:1,mac=52:54:00:AB:CD:EF",
            {"network": "lab.net:1", "model": "virtio", "mac": "52:54:00:ab:cd:ef"},
        ),
        (
            " bridge = br-1 , mac=02:00:00:00:00:01 , model=rtl8139 ",
            {"bridge": "br-1", "model": "rtl8139", "mac": "02:00:00:00:00:01"},
        ),
        ("sriov=physnet1", {"sriov": "physnet1", "mode": "macvtap", "model": "virtio"}),
        (
            "sriov=physnet1,mode=hostdev",
            {"sriov": "physnet1", "mode": "hostdev", "model": "virtio"},
        ),
    ],
)
def test_nic_specs(value: str, body: dict[str, str]) -> None:
    assert parse_nic(value) == body


@pytest.mark.parametrize(
    "value",
    [
        "",
        "br0",
        "model=e1000",
        "network=default,bridge=br0",
        "bridge=br0,bridge=br1",
        "bridge=",
        "bridge=br 0",
        "bridge=" + "b" * 64,
        "bridge=br0,model=ne2k",
        "bridge=br0,mac=52:54:00:12:34",
        "bridge=br0,mac=01:00:5e:00:00:01",
        "bridge=br0,speed=10",
        "bridge=br0,",
        "bridge=br0,mode=hostdev",
        "sriov=physnet1,mode=vfio",
        "sriov=physnet1,bridge=br0",
        "sriov=phys net",
    ],
)
def test_a_bad_nic_spec_is_refused(value: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_nic(value)


def test_create_sends_nics_in_order(api: FakeApi) -> None:
    result = run(
        "vm", "create", "web1", "--vcpus", "1", "--memory", "64",
        "--nic", "bridge=br0,model=e1000", "--nic", "network=default,mac=52:54:00:00:00:0A",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sent = json.loads(api.requests[-1].content)
    assert sent["nics"] == [
        {"bridge": "br0", "model": "e1000"},
        {"network": "default", "model": "virtio", "mac": "52:54:00:00:00:0a"},
    ]
    assert run("vm", "create", "web2", "--vcpus", "1", "--memory", "64").exit_code == 0
    assert "nics" not in json.loads(api.requests[-1].content)


def test_a_bad_nic_option_is_a_usage_error_and_sends_nothing(api: FakeApi) -> None:
    result = run("vm", "create", "web1", "--vcpus", "1", "--memory", "64", "--nic", "br0")
    assert result.exit_code == 2
    assert "--nic" in result.stderr and "'br0' is not a NIC" in result.stderr
    assert api.requests == []


def test_vm_show_lists_nics(api: FakeApi) -> None:
    nics = [
        {"mac": "52:54:00:12:34:56", "network": None, "bridge": "br0", "model": "virtio"},
        {"mac": "52:54:00:ab:cd:ef", "network": "default", "bridge": None, "model": "e1000"},
    ]
    api.vm("web1", nics=nics)
    api.vm("bare", nics=[])
    shown = run("vm", "show", "web1")
    assert shown.exit_code == 0, shown.output
    line = "52:54:00:12:34:56 bridge=br0 virtio; 52:54:00:ab:cd:ef network=default e1000"
    assert re.search(rf"^nics\s+{line}$", shown.stdout, re.MULTILINE), shown.stdout
    assert re.search(r"^nics\s+none$", run("vm", "show", "bare").stdout, re.MULTILINE)
    assert json.loads(run("vm", "show", "web1", "-o", "json").stdout)["nics"] == nics
