"""`bollard pool ...` and `bollard volume ...` against an in-memory fake of the storage API
(httpx.MockTransport), as the storage spec describes it: requests sent, output, waiting on the
task a change starts, and bad input refused before any request."""

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
Change = Callable[[], None]


def _err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class StorageApi:
    """Pools, volumes, snapshots, tasks and VMs of /api/v1, in memory; pages of 2 items.

    A change answers 202 with the volume in its transitional state and a pending task; the
    change is applied when a wait on the task ends it (``outcome``), after the answers of
    ``script`` (e.g. a running state with progress)."""

    def __init__(self) -> None:
        self.pools: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, list[dict[str, Any]]] = {}
        self.vms: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.on_success: dict[str, Change] = {}
        self.requests: list[httpx.Request] = []
        self.script: list[dict[str, Any]] = []
        self.outcome = "succeeded"
        self.error: str | None = None

    # -- test data ------------------------------------------------------------------------

    def pool(self, name: str, **fields: Any) -> dict[str, Any]:
        pool: dict[str, Any] = {
            "name": name, "type": "local", "path": None, "nodes": None, "description": None,
            "created_at": "2026-01-01T00:00:00Z", "volumes": 0, "provisioned_mb": 0,
            "capacity_mb": None, "free_mb": None, "hosts": [],
        }  # fmt: skip
        pool.update(fields)
        self.pools[name] = pool
        return pool

    def volume(self, name: str, **fields: Any) -> dict[str, Any]:
        volume: dict[str, Any] = {
            "id": f"id-{name}", "name": name, "pool": "local", "pool_type": "local",
            "node": "node1", "file": f"vol-id-{name}.qcow2", "format": "qcow2",
            "size_mb": 10240, "state": "ready", "vm": None, "vm_uuid": None, "device": None,
            "task_id": None, "delete_with_vm": False, "fault": None, "snapshots": 0,
            "lock": None, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }  # fmt: skip
        volume.update(fields)
        self.volumes[name] = volume
        return volume

    def sent(self) -> list[tuple[str, str, Any]]:
        """(method, path, body) of every request but task waits and reads of one volume."""
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
        if path == "/pools":
            return (
                self._page(list(self.pools.values()), request)
                if method == "GET"
                else (self._create_pool(body))
            )
        if m := re.fullmatch(r"/pools/([^/]+)", path):
            return self._pool(m.group(1), method, body)
        if path == "/volumes" and method == "GET":
            return self._page(self._filtered(request.url.params), request)
        if path == "/volumes" and method == "POST":
            return self._create_volume(body)
        if m := re.fullmatch(r"/volumes/([^/]+)/snapshots(?:/([^/]+))?(/revert)?", path):
            return self._snapshot(m.group(1), m.group(2), bool(m.group(3)), method, body)
        if m := re.fullmatch(r"/volumes/([^/]+)(?:/(\w+))?", path):
            return self._volume(m.group(1), m.group(2), method, body)
        if m := re.fullmatch(r"/vms/([^/]+)", path):
            vm = self.vms.get(m.group(1))
            return httpx.Response(200, json=vm) if vm else _err(404, "not-found", "no such vm")
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

    def _create_pool(self, body: dict[str, Any]) -> httpx.Response:
        if body["name"] in self.pools:
            return _err(409, "already-exists", f"pool {body['name']!r} already exists")
        fields = {k: body[k] for k in ("type", "path", "nodes", "description")}
        return httpx.Response(201, json=self.pool(body["name"], **fields))

    def _pool(self, name: str, method: str, body: dict[str, Any]) -> httpx.Response:
        pool = self.pools.get(name)
        if pool is None:
            return _err(404, "not-found", f"pool {name!r} not found")
        if method == "PATCH":
            pool.update(body)
        elif method == "DELETE":
            held = [v["name"] for v in self.volumes.values() if v["pool"] == name]
            if held:
                return _err(409, "conflict", f"pool {name} holds volumes: {', '.join(held)}")
            del self.pools[name]
            return httpx.Response(204)
        return httpx.Response(200, json=pool)

    def _filtered(self, params: httpx.QueryParams) -> list[dict[str, Any]]:
        keys = {"pool": "pool", "node": "node", "vm": "vm", "state": "state"}
        return [
            v
            for v in self.volumes.values()
            if all(v.get(field) == params[key] for key, field in keys.items() if key in params)
        ]

    def _accepted(
        self, kind: str, volume: dict[str, Any], state: str, done: Change
    ) -> httpx.Response:
        task: dict[str, Any] = {"id": f"t{len(self.tasks) + 1}", "type": kind, "vm": None}
        task["node"] = None
        task.update(state="pending", error=None, result={})
        self.tasks[task["id"]] = task
        self.on_success[task["id"]] = done
        volume.update(state=state, task_id=task["id"])
        return httpx.Response(202, json={"volume": dict(volume), "task": dict(task)})

    def _create_volume(self, body: dict[str, Any]) -> httpx.Response:
        if body["pool"] not in self.pools:
            return _err(404, "not-found", f"pool {body['pool']!r} not found")
        if body["name"] in self.volumes:
            return _err(409, "already-exists", f"volume {body['name']!r} already exists")
        volume = self.volume(
            body["name"], pool=body["pool"], node=body["node"], format=body["format"],
            size_mb=body["size_mb"], pool_type=self.pools[body["pool"]]["type"],
        )  # fmt: skip
        return self._accepted("volume_create", volume, "creating", self._settle(volume))

    def _settle(self, volume: dict[str, Any], **fields: Any) -> Change:
        def done() -> None:
            volume.update(fields)
            volume.update(state="attached" if volume["vm"] else "ready", task_id=None)

        return done

    def _volume(
        self, name: str, action: str | None, method: str, body: dict[str, Any]
    ) -> httpx.Response:
        volume = self.volumes.get(name)
        if volume is None:
            return _err(404, "not-found", f"volume {name!r} not found")
        if method == "GET" and action is None:
            return httpx.Response(200, json=volume)
        if method == "DELETE":
            if volume["vm"]:
                return _err(409, "conflict", f"volume {name} is attached to {volume['vm']}")

            def gone() -> None:
                del self.volumes[name]

            return self._accepted("volume_delete", volume, "deleting", gone)
        if action == "grow":
            if body["size_mb"] <= volume["size_mb"]:
                return _err(422, "invalid-input", "a volume only grows")
            done = self._settle(volume, size_mb=body["size_mb"])
            return self._accepted("volume_grow", volume, "resizing", done)
        if action == "attach":
            if body["vm"] not in self.vms:
                return _err(404, "not-found", f"vm {body['vm']!r} not found")
            done = self._settle(volume, vm=body["vm"], device=body["device"] or "vdb")
            return self._accepted("volume_attach", volume, "attaching", done)
        if action == "detach":
            done = self._settle(volume, vm=None, vm_uuid=None, device=None)
            return self._accepted("volume_detach", volume, "detaching", done)
        if action == "copy":
            copied = self.volume(body["name"], pool=body["pool"], node=body["node"])
            return self._accepted("volume_copy", copied, "creating", self._settle(copied))
        if action == "migrate":
            done = self._settle(volume, pool=body["pool"], node=body["node"])
            return self._accepted("volume_migrate", volume, "migrating", done)
        return _err(404, "not-found", f"no route {method} {name}/{action}")

    def _snapshot(
        self, name: str, snap: str | None, revert: bool, method: str, body: dict[str, Any]
    ) -> httpx.Response:
        volume = self.volumes.get(name)
        if volume is None:
            return _err(404, "not-found", f"volume {name!r} not found")
        snaps = self.snapshots.setdefault(name, [])
        if method == "GET":
            return httpx.Response(200, json={"items": snaps})
        if method == "POST" and snap is None:
            taken = {"name": body["name"], "size_mb": volume["size_mb"], "created_at": "now"}

            def take() -> None:
                snaps.append(taken)
                volume.update(state="ready", task_id=None, snapshots=len(snaps))

            return self._accepted("snapshot_create", volume, "snapshotting", take)
        if not any(s["name"] == snap for s in snaps):
            return _err(404, "not-found", f"volume {name} has no snapshot {snap!r}")
        if revert:
            return self._accepted("snapshot_revert", volume, "reverting", self._settle(volume))

        def drop() -> None:
            snaps[:] = [s for s in snaps if s["name"] != snap]
            volume.update(state="ready", task_id=None, snapshots=len(snaps))

        return self._accepted("snapshot_delete", volume, "snapshotting", drop)

    def _task_answer(self, task_id: str, wait: bool) -> httpx.Response:
        task = self.tasks.get(task_id)
        if task is None:
            return _err(404, "not-found", f"task {task_id} not found")
        if wait and self.script:
            task.update(self.script.pop(0))
        elif wait:
            task.update(state=self.outcome, error=self.error, result={})
            if self.outcome == "succeeded":
                self.on_success.pop(task_id)()
        return httpx.Response(200, json=task)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StorageApi:
    fake = StorageApi()
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def ok(*args: str, input: str | None = None) -> Result:
    result = run(*args, input=input)
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


def declined(result: Result, question: str, refused: str) -> None:
    """The command asked ``question`` (on stderr), was not told yes, and stopped: exit 1,
    nothing on stdout, the question then one error line."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].rstrip() == f"{question} [y/N]:"
    assert lines[1] == f"error: {refused} (give --yes to skip the question)"


def field(stdout: str, key: str) -> str:
    """The value of ``key`` in a `show` listing."""
    match = re.search(rf"^{re.escape(key)}\s\s+(.*)$", stdout, re.MULTILINE)
    assert match, f"no {key!r} in:\n{stdout}"
    return match.group(1).strip()


# -- pools ----------------------------------------------------------------------------------


def test_pool_create_local_on_every_node_in_the_default_directory(api: StorageApi) -> None:
    result = ok("pool", "create", "fast", "--type", "local")
    assert api.sent() == [
        ("POST", "/pools", {"name": "fast", "type": "local", "path": None, "nodes": None,
                            "description": None}),
    ]  # fmt: skip
    assert result.stdout.strip() == (
        "Pool fast created: local, in each host's default storage directory, on every node."
    )


def test_pool_create_shared_json_is_the_pool(api: StorageApi) -> None:
    result = ok(
        "pool", "create", "nfs1", "--type", "shared", "--path", "/mnt/nfs1",
        "--node", "node1", "--node", "node2", "--description", "the NAS", "-o", "json",
    )  # fmt: skip
    assert api.sent()[0][2] == {
        "name": "nfs1", "type": "shared", "path": "/mnt/nfs1", "nodes": ["node1", "node2"],
        "description": "the NAS",
    }  # fmt: skip
    assert json.loads(result.stdout) == api.pools["nfs1"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--type", "shared"], 1, "a shared pool needs --path"),
        (["--type", "local", "--path", "relative/dir"], 1, "--path must be an absolute"),
        (["--type", "nfs"], 2, "--type"),
        (["--type", "local", "--node", "bad/node"], 2, "not a valid node name"),
    ],
)
def test_pool_create_refuses_bad_input_before_any_request(
    api: StorageApi, args: list[str], code: int, fragment: str
) -> None:
    one_line_error(run("pool", "create", "p1", *args), fragment, code=code)
    assert api.requests == []


def test_a_pool_name_with_capitals_is_refused_before_any_request(api: StorageApi) -> None:
    one_line_error(
        run("pool", "create", "Fast", "--type", "local"), "not a valid pool name", code=2
    )
    one_line_error(run("volume", "create", "v", "--size", "1G", "--pool", "A"), code=2)
    assert api.requests == []


def test_pool_list_follows_every_page(api: StorageApi) -> None:
    for name in ("a", "b", "c"):
        api.pool(name)
    api.pool("d", type="shared", path="/mnt/d", nodes=["node1", "node2"], volumes=2,
             provisioned_mb=20480, capacity_mb=102400, free_mb=51200)  # fmt: skip
    assert [p["name"] for p in json.loads(ok("pool", "list", "-o", "json").stdout)] == [
        "a", "b", "c", "d",
    ]  # fmt: skip
    table = ok("pool", "list").stdout
    assert re.search(
        r"d\s+│ shared │ /mnt/d\s+│ node1,node2 │ 2\s+│ 20 GiB\s+│ 50 GiB\s+│ 100 GiB", table
    )
    assert re.search(r"a\s+│ local\s+│ \(default\)\s+│ \(all\)", table)


def test_pool_show_has_the_per_host_table(api: StorageApi) -> None:
    hosts = [
        {"node": "node1", "capacity_mb": 102400, "free_mb": 76800,
         "reported_at": "2026-01-01T00:00:00Z", "error": None},
        {"node": "node2", "capacity_mb": None, "free_mb": None, "reported_at": None,
         "error": "/var/lib/bollard/pool: permission denied"},
    ]  # fmt: skip
    pool = api.pool("fast", volumes=3, provisioned_mb=1536, capacity_mb=102400, free_mb=76800,
                    hosts=hosts)  # fmt: skip
    shown = ok("pool", "show", "fast").stdout
    assert field(shown, "path") == "each host's default storage directory"
    assert field(shown, "nodes") == "every node"
    assert field(shown, "provisioned") == "1.5 GiB" and field(shown, "free") == "75 GiB"
    assert re.search(r"node1 │ 100 GiB\s+│ 75 GiB │ 25%\s+│ \d+h ago\s+│ -", shown), shown
    assert re.search(r"node2 │ -\s+│ -\s+│ -\s+│ -\s+│ /var/lib/bollard/pool: permission", shown)
    assert json.loads(ok("pool", "show", "fast", "-o", "json").stdout) == pool


def test_pool_show_before_any_report(api: StorageApi) -> None:
    api.pool("fresh")
    shown = ok("pool", "show", "fresh").stdout
    assert field(shown, "capacity") == "not reported yet"
    assert "No host has reported on this pool yet." in shown


def test_pool_update_sends_only_what_changes(api: StorageApi) -> None:
    api.pool("fast", description="old")
    ok("pool", "update", "fast", "--node", "node1", "--node", "node3")
    ok("pool", "update", "fast", "--all-nodes", "--description", "")
    result = ok("pool", "update", "fast", "--description", "SSDs", "-o", "json")
    assert [body for _, _, body in api.sent()] == [
        {"nodes": ["node1", "node3"]}, {"nodes": None, "description": None},
        {"description": "SSDs"},
    ]  # fmt: skip
    assert {m for m, _, _ in api.sent()} == {"PATCH"}
    assert json.loads(result.stdout)["description"] == "SSDs"


def test_pool_update_refuses_nothing_or_both(api: StorageApi) -> None:
    one_line_error(run("pool", "update", "fast"), "nothing to change")
    one_line_error(run("pool", "update", "fast", "--node", "n1", "--all-nodes"), "not both")
    assert api.requests == []


def test_pool_delete_asks_first(api: StorageApi) -> None:
    api.pool("fast")
    declined(
        run("pool", "delete", "fast", input="n\n"), "Delete pool fast?", "pool fast not deleted"
    )
    # No answer (end of input, as from a script) is no.
    declined(run("pool", "delete", "fast"), "Delete pool fast?", "pool fast not deleted")
    assert api.requests == []
    result = ok("pool", "delete", "fast", input="y\n")
    assert "Delete pool fast?" in result.stderr and result.stdout.strip() == "Pool fast deleted."
    assert api.sent() == [("DELETE", "/pools/fast", None)] and "fast" not in api.pools


def test_pool_delete_of_a_pool_with_volumes_names_them(api: StorageApi) -> None:
    api.pool("fast")
    api.volume("db1", pool="fast")
    one_line_error(run("pool", "delete", "fast", "--yes"), "holds volumes: db1")


# -- volumes: create, waiting, output -------------------------------------------------------


def test_volume_create_waits_for_its_task(api: StorageApi) -> None:
    api.pool("nfs1", type="shared", path="/mnt/nfs1")
    api.script = [{"state": "running"}]
    result = ok("volume", "create", "data1", "--size", "10G", "--pool", "nfs1")
    assert api.sent() == [
        ("POST", "/volumes", {"name": "data1", "size_mb": 10240, "pool": "nfs1", "node": None,
                              "format": "qcow2", "from_snapshot": None}),
        ("GET", "/volumes/data1", None),
    ]  # fmt: skip
    assert "waiting for task t1 (volume_create): pending" in result.stderr
    assert "task t1 (volume_create): running" in result.stderr
    assert result.stdout.strip() == (
        "task t1 (volume_create) succeeded; volume data1 is ready (10 GiB, pool nfs1)."
    )
    assert api.volumes["data1"]["state"] == "ready"


def test_volume_create_wait_json_has_the_volume_and_the_task(api: StorageApi) -> None:
    api.pool("fast")
    result = ok(
        "volume", "create", "raw1", "--size", "512", "--pool", "fast", "--node", "node2",
        "--format", "raw", "-o", "json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert out["task"]["state"] == "succeeded" and out["task"]["id"] == "t1"
    assert out["volume"] == api.volumes["raw1"]
    assert (out["volume"]["state"], out["volume"]["format"], out["volume"]["node"]) == (
        "ready", "raw", "node2",
    )  # fmt: skip


def test_no_wait_returns_the_accepted_answer_at_once(api: StorageApi) -> None:
    api.pool("fast")
    result = ok("volume", "create", "v1", "--size", "1G", "--pool", "fast", "--no-wait",
                "-o", "json")  # fmt: skip
    answer = json.loads(result.stdout)
    assert answer["task"]["state"] == "pending" and answer["volume"]["state"] == "creating"
    assert not any("/tasks/" in r.url.path for r in api.requests)
    table = ok("volume", "grow", "v1", "--size", "2G", "--no-wait").stdout
    assert "task t2 (volume_grow) accepted: pending" in table
    assert "`bollard task wait t2` or `bollard volume show v1`" in table


def test_a_failed_task_exits_1_with_its_error(api: StorageApi) -> None:
    api.pool("fast")
    api.outcome, api.error = "failed", "no space left in pool fast on node1"
    result = run("volume", "create", "v1", "--size", "1T", "--pool", "fast")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "error: task t1 (volume_create) failed: no space left in pool fast on node1"
    )


def test_waiting_gives_up_at_the_timeout_and_says_the_task_goes_on(api: StorageApi) -> None:
    api.volume("v1")
    result = run("volume", "grow", "v1", "--size", "20G", "--timeout", "0")
    assert result.exit_code == 1
    assert "still pending after 0s; it goes on" in result.stderr
    assert "bollard task wait t1" in result.stderr


def test_waiting_shows_the_progress_of_a_copy(api: StorageApi) -> None:
    api.volume("db1")
    api.script = [
        {"state": "running", "result": {"progress": {"message": "copy: 40%"}}},
        {"state": "running", "result": {"progress": {"message": "copy: 90%"}}},
    ]
    result = ok("volume", "migrate", "db1", "--pool", "nfs1")
    assert "task t1 (volume_migrate): running, copy: 40%" in result.stderr
    assert "task t1 (volume_migrate): running, copy: 90%" in result.stderr
    assert result.stdout.strip().endswith("volume db1 is ready (10 GiB, pool nfs1).")
    assert api.sent()[0] == ("POST", "/volumes/db1/migrate", {"pool": "nfs1", "node": None})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--size", "10x"], "'10x' is not a size"),
        (["--size", "65T"], "1 MiB to 64 TiB"),
        (["--size", "0"], "1 MiB to 64 TiB"),
        (["--size", "1G", "--format", "vmdk"], "--format"),
        (["--size", "1G", "--node", "a b"], "not a valid node name"),
        (["--from-snapshot", "db1"], "not VOLUME@SNAPSHOT"),
        (["--from-snapshot", "db1@.hidden"], "not a valid snapshot name"),
        (["--from-snapshot", "../x@s1"], "not a valid volume name"),
    ],
)
def test_volume_create_refuses_bad_input_before_any_request(
    api: StorageApi, args: list[str], fragment: str
) -> None:
    one_line_error(run("volume", "create", "v1", "--pool", "fast", *args), fragment, code=2)
    assert api.requests == []


def test_volume_create_needs_a_size_unless_from_a_snapshot(api: StorageApi) -> None:
    one_line_error(run("volume", "create", "v1", "--pool", "fast"), "give the volume's --size")
    assert api.requests == []


def test_volume_create_from_a_snapshot_takes_its_size(api: StorageApi) -> None:
    api.pool("fast")
    api.volume("db1", size_mb=20480)
    api.snapshots["db1"] = [{"name": "before", "size_mb": 15360, "created_at": "then"}]
    ok("volume", "create", "db2", "--pool", "fast", "--from-snapshot", "db1@before")
    assert api.sent()[:2] == [
        ("GET", "/volumes/db1/snapshots", None),
        ("POST", "/volumes", {"name": "db2", "size_mb": 15360, "pool": "fast", "node": None,
                              "format": "qcow2",
                              "from_snapshot": {"volume": "db1", "snapshot": "before"}}),
    ]  # fmt: skip
    one_line_error(
        run("volume", "create", "db3", "--pool", "fast", "--from-snapshot", "db1@nope"),
        "volume db1 has no snapshot 'nope'",
    )
    ok("volume", "create", "db4", "--pool", "fast", "--from-snapshot", "db1@before",
       "--size", "30G")  # fmt: skip
    assert api.sent()[-2][2]["size_mb"] == 30720  # given: no look-up of the snapshot


def test_an_unknown_pool_or_volume_is_one_line(api: StorageApi) -> None:
    one_line_error(run("volume", "create", "v1", "--size", "1G", "--pool", "nope"), "not found")
    one_line_error(run("volume", "show", "ghost"), "volume 'ghost' not found")
    one_line_error(run("pool", "show", "ghost"), "pool 'ghost' not found")


# -- volumes: reads -------------------------------------------------------------------------


def test_volume_list_filters_and_shows_the_attachment(api: StorageApi) -> None:
    api.volume("boot", vm="web1", vm_uuid="u1", device="vda", state="attached")
    api.volume("data", pool="nfs1", pool_type="shared", node=None, size_mb=1536)
    api.volume("scratch", format="raw", size_mb=512)
    table = ok("volume", "list").stdout
    assert re.search(r"boot\s+│ local │ node1 │ 10 GiB\s+│ qcow2\s+│ attached │ web1/vda", table)
    assert re.search(r"data\s+│ nfs1\s+│ -\s+│ 1536 MiB │ qcow2\s+│ ready\s+│ -", table)
    listed = json.loads(ok("volume", "list", "--pool", "local", "--state", "ready",
                           "-o", "json").stdout)  # fmt: skip
    assert [v["name"] for v in listed] == ["scratch"]
    query = api.requests[-1].url.params
    assert (query["pool"], query["state"]) == ("local", "ready")
    listed = json.loads(ok("volume", "list", "--vm", "web1", "--node", "node1",
                           "-o", "json").stdout)  # fmt: skip
    assert listed == [api.volumes["boot"]]


def test_volume_list_refuses_an_unknown_state_before_any_request(api: StorageApi) -> None:
    one_line_error(run("volume", "list", "--state", "broken"), "--state", code=2)
    assert api.requests == []


def test_volume_list_follows_every_page(api: StorageApi) -> None:
    for i in range(5):
        api.volume(f"v{i}")
    listed = json.loads(ok("volume", "list", "-o", "json").stdout)
    assert [v["name"] for v in listed] == [f"v{i}" for i in range(5)]
    assert len([r for r in api.requests if r.url.path == "/api/v1/volumes"]) == 3


def test_volume_show_has_attachment_lock_snapshots_and_task(api: StorageApi) -> None:
    volume = api.volume(
        "db1", pool="nfs1", pool_type="shared", node=None, vm="web1", vm_uuid="u-web1",
        device="vdb", state="migrating", task_id="t9", lock={"node": "node2", "epoch": 7},
        snapshots=3,
    )  # fmt: skip
    shown = ok("volume", "show", "db1").stdout
    assert field(shown, "pool") == "nfs1 (shared)"
    assert field(shown, "node") == "- (shared pool: every host of the pool)"
    assert field(shown, "attached to") == "web1 as vdb (VM u-web1)"
    assert field(shown, "lock") == "held by node2 (epoch 7)"
    assert field(shown, "snapshots") == "3 (`bollard volume snapshot list db1`)"
    assert field(shown, "task") == "t9 (`bollard task show t9`)"
    assert field(shown, "state") == "migrating" and field(shown, "size") == "10 GiB"
    assert json.loads(ok("volume", "show", "db1", "-o", "json").stdout) == volume


def test_volume_show_of_a_free_volume(api: StorageApi) -> None:
    api.volume("v1")
    shown = ok("volume", "show", "v1").stdout
    assert field(shown, "node") == "node1"
    assert field(shown, "attached to") == "no VM"
    assert field(shown, "lock") == "none" and field(shown, "task") == "-"


# -- volumes: changes -----------------------------------------------------------------------


def test_volume_delete_asks_then_waits_until_it_is_gone(api: StorageApi) -> None:
    api.volume("v1")
    question = "Delete volume v1 and all its data?"
    declined(run("volume", "delete", "v1", input="no\n"), question, "volume v1 not deleted")
    assert api.requests == []
    result = ok("volume", "delete", "v1", input="y\n")
    assert "Delete volume v1 and all its data?" in result.stderr
    assert result.stdout.strip() == "task t1 (volume_delete) succeeded; volume v1 is gone."
    assert "v1" not in api.volumes
    api.volume("v2")
    out = json.loads(ok("volume", "delete", "v2", "--yes", "-o", "json").stdout)
    assert out["volume"] is None and out["task"]["state"] == "succeeded"


def test_volume_delete_while_attached_is_refused(api: StorageApi) -> None:
    api.volume("boot", vm="web1", device="vda", state="attached")
    one_line_error(run("volume", "delete", "boot", "--yes"), "attached to web1")


def test_volume_grow(api: StorageApi) -> None:
    api.volume("v1")
    result = ok("volume", "grow", "v1", "--size", "1T")
    assert api.sent()[0] == ("POST", "/volumes/v1/grow", {"size_mb": 1024 * 1024})
    assert result.stdout.strip() == (
        "task t1 (volume_grow) succeeded; volume v1 is ready (1 TiB, pool local, node node1)."
    )
    one_line_error(run("volume", "grow", "v1", "--size", "1G"), "a volume only grows")
    one_line_error(run("volume", "grow", "v1"), "--size", code=2)


def test_volume_attach_and_detach(api: StorageApi) -> None:
    api.vms["web1"] = {"name": "web1"}
    api.volume("v1")
    result = ok("volume", "attach", "v1", "web1", "--device", "vdc")
    assert api.sent()[0] == ("POST", "/volumes/v1/attach", {"vm": "web1", "device": "vdc"})
    assert result.stdout.strip().endswith(
        "volume v1 is attached, attached to web1 as vdc (10 GiB, pool local, node node1)."
    )
    ok("volume", "detach", "v1")
    assert api.sent()[-2] == ("POST", "/volumes/v1/detach", {})
    assert (api.volumes["v1"]["state"], api.volumes["v1"]["vm"]) == ("ready", None)
    ok("volume", "attach", "v1", "web1")
    assert api.sent()[-2][2] == {"vm": "web1", "device": None}


@pytest.mark.parametrize("device", ["vdq", "sda", "vd", "vdaa"])
def test_attach_refuses_a_bad_device_before_any_request(api: StorageApi, device: str) -> None:
    result = run("volume", "attach", "v1", "web1", "--device", device)
    one_line_error(result, "not a disk device: use vda to vdp", code=2)
    assert api.requests == []


def test_volume_copy_follows_the_new_volume(api: StorageApi) -> None:
    api.volume("db1")
    result = ok("volume", "copy", "db1", "db1-copy", "--pool", "fast", "--node", "node3")
    assert api.sent() == [
        ("POST", "/volumes/db1/copy", {"name": "db1-copy", "pool": "fast", "node": "node3"}),
        ("GET", "/volumes/db1-copy", None),
    ]
    assert result.stdout.strip() == (
        "task t1 (volume_copy) succeeded; volume db1-copy is ready (10 GiB, pool fast, node node3)."
    )


def test_copy_and_migrate_need_a_pool(api: StorageApi) -> None:
    one_line_error(run("volume", "copy", "db1", "db2"), "--pool", code=2)
    one_line_error(run("volume", "migrate", "db1"), "--pool", code=2)
    one_line_error(run("volume", "copy", "db1", "a/b", "--pool", "p"), "not a valid", code=2)
    assert api.requests == []


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_create_list_delete(api: StorageApi) -> None:
    api.volume("db1")
    result = ok("volume", "snapshot", "create", "db1", "before-upgrade")
    assert api.sent()[0] == ("POST", "/volumes/db1/snapshots", {"name": "before-upgrade"})
    assert "task t1 (snapshot_create) succeeded; volume db1 is ready" in result.stdout
    ok("volume", "snapshot", "create", "db1", "_second")
    assert re.search(
        r"before-upgrade │ 10 GiB │ now", ok("volume", "snapshot", "list", "db1").stdout
    )
    listed = json.loads(ok("volume", "snapshot", "list", "db1", "-o", "json").stdout)
    assert [s["name"] for s in listed] == ["before-upgrade", "_second"]
    declined(
        run("volume", "snapshot", "delete", "db1", "_second", input="\n"),
        "Delete snapshot _second of volume db1?",
        "snapshot _second of volume db1 not deleted",
    )
    ok("volume", "snapshot", "delete", "db1", "_second", "--yes")
    assert api.sent()[-2] == ("DELETE", "/volumes/db1/snapshots/_second", None)
    assert [s["name"] for s in api.snapshots["db1"]] == ["before-upgrade"]


def test_snapshot_revert_asks_first(api: StorageApi) -> None:
    api.volume("db1")
    api.snapshots["db1"] = [{"name": "s1", "size_mb": 10240, "created_at": "then"}]
    declined(
        run("volume", "snapshot", "revert", "db1", "s1", input="n\n"),
        "Revert volume db1 to snapshot s1? What it holds now is lost.",
        "volume db1 not reverted",
    )
    assert api.requests == []
    result = ok("volume", "snapshot", "revert", "db1", "s1", input="y\n")
    assert "What it holds now is lost." in result.stderr
    assert api.sent()[0] == ("POST", "/volumes/db1/snapshots/s1/revert", {})
    assert "task t1 (snapshot_revert) succeeded" in result.stdout
    one_line_error(run("volume", "snapshot", "revert", "db1", "s9", "-y"), "no snapshot 's9'")


def test_a_bad_snapshot_name_is_refused_before_any_request(api: StorageApi) -> None:
    one_line_error(
        run("volume", "snapshot", "create", "db1", "-x"), code=2
    )  # an option-like name: usage error
    one_line_error(
        run("volume", "snapshot", "create", "db1", ".x"), "not a valid snapshot name", code=2
    )
    assert api.requests == []


# -- vm show with volumes -------------------------------------------------------------------


def test_vm_show_lists_disk_volumes_when_the_server_sends_them(api: StorageApi) -> None:
    disks = [
        {"device": "vda", "size_mb": 10240, "volume": "web1-vda", "pool": "local",
         "state": "attached"},
        {"device": "vdb", "size_mb": 512, "volume": "data1", "pool": "nfs1", "state": "resizing"},
    ]  # fmt: skip
    api.vms["web1"] = {"name": "web1", "status": "ACTIVE", "disks": disks}
    shown = ok("vm", "show", "web1").stdout
    assert field(shown, "disks") == "vda 10 GiB, vdb 512 MiB"
    assert re.search(r"vda\s+│ 10 GiB\s+│ web1-vda │ local │ attached", shown), shown
    assert re.search(r"vdb\s+│ 512 MiB │ data1\s+│ nfs1\s+│ resizing", shown), shown
    assert "VOLUME" in shown


def test_vm_show_without_volume_information_has_no_disk_table(api: StorageApi) -> None:
    api.vms["old"] = {"name": "old", "disks": [{"device": "vda", "size_mb": 1024}]}
    shown = ok("vm", "show", "old").stdout
    assert field(shown, "disks") == "vda 1 GiB"
    assert "VOLUME" not in shown


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["pool"], ["pool", "create"], ["pool", "list"], ["pool", "show"], ["pool", "update"],
        ["pool", "delete"], ["volume"], ["volume", "create"], ["volume", "list"],
        ["volume", "show"], ["volume", "delete"], ["volume", "grow"], ["volume", "attach"],
        ["volume", "detach"], ["volume", "copy"], ["volume", "migrate"],
        ["volume", "snapshot"], ["volume", "snapshot", "create"],
        ["volume", "snapshot", "list"], ["volume", "snapshot", "delete"],
        ["volume", "snapshot", "revert"],
    ],
)  # fmt: skip
def test_every_storage_command_has_help(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
