"""`bollard vm resize`, `vm actions`, `migration list|show` and `node show`'s allocations
against an in-memory fake of the issue-19 API (cli_api19.py): requests sent, output (tables and
-o json), following the task a resize, confirm or revert starts, and bad input refused before
any request."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.cli_api19 import (
    NOW,
    Api19,
    api,
    field,
    flat,
    ok,
    one_line_error,
    run,
    web1,
)

__all__ = ["api", "web1"]  # fixtures


# -- resize ---------------------------------------------------------------------------------


def test_resize_wait_follows_the_task_and_says_what_the_source_keeps(
    api: Api19, web1: dict[str, Any]
) -> None:
    result = ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    assert api.sent() == [
        ("POST", "/vms/web1/resize", {"flavor": "large", "to": None}),
        ("GET", "/vms/web1", None),
    ]
    assert [r.url.path for r in api.requests if "/tasks/" in r.url.path] == [
        "/api/v1/tasks/t1/wait"
    ]
    assert "waiting for task t1 (resize web1)" in result.stderr
    assert result.stdout.splitlines() == [
        "task t1 (resize web1) succeeded; web1 is VERIFY_RESIZE on node2.",
        "node1 keeps web1's old copy and resources until you confirm or revert: "
        "`bollard vm resize web1 --confirm` (keep the new size) or `--revert` (go back).",
    ]
    assert (web1["node"], web1["flavor"]["name"], web1["vcpus"]) == ("node2", "large", 4)


def test_resize_json_is_the_vm_and_the_task_and_nothing_else(
    api: Api19, web1: dict[str, Any]
) -> None:
    out = json.loads(ok("vm", "resize", "web1", "--flavor", "large", "--wait", "-o", "json").stdout)
    assert out["task"]["state"] == "succeeded" and out["task"]["type"] == "resize"
    assert out["vm"]["status"] == "VERIFY_RESIZE"
    assert out["vm"]["resize"]["old_flavor"]["name"] == "small"
    out = json.loads(ok("vm", "resize", "web1", "--confirm", "-o", "json").stdout)
    assert out["task"] == {"id": "t2", "type": "resize_confirm", "vm": "web1", "node": None,
                           "state": "pending", "error": None, "result": {}}  # fmt: skip


def test_resize_without_wait_says_how_to_follow_and_what_comes_next(
    api: Api19, web1: dict[str, Any]
) -> None:
    result = ok("vm", "resize", "web1", "--flavor", "large", "--to", "node3")
    assert api.sent() == [("POST", "/vms/web1/resize", {"flavor": "large", "to": "node3"})]
    assert api.requests[-1].url.path == "/api/v1/vms/web1/resize"  # no task followed
    lines = result.stdout.splitlines()
    assert lines[0] == "task t1 (resize web1) accepted: pending"
    assert lines[1] == "Follow it with `bollard task wait t1` or `bollard vm show web1`."
    assert lines[2] == (
        "When it is done, web1 waits in VERIFY_RESIZE on the new node, the source keeping its "
        "copy: check it, then `bollard vm resize web1 --confirm` (keep the new size) or "
        "`--revert` (go back)."
    )


def test_confirm_ends_the_resize_on_the_new_node(api: Api19, web1: dict[str, Any]) -> None:
    ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    result = ok("vm", "resize", "web1", "--confirm", "--wait")
    assert api.sent()[2:] == [
        ("POST", "/vms/web1/resize/confirm", {}),
        ("GET", "/vms/web1", None),
    ]
    assert result.stdout.strip() == (
        "task t2 (resize_confirm web1) succeeded; web1 is ACTIVE on node2."
    )
    assert web1["resize"] is None and web1["flavor"]["name"] == "large"
    assert api.migrations[0]["status"] == "confirmed"


def test_revert_returns_the_vm_to_its_source_at_its_old_flavor(
    api: Api19, web1: dict[str, Any]
) -> None:
    ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    result = ok("vm", "resize", "web1", "--revert", "--wait")
    assert api.sent()[2] == ("POST", "/vms/web1/resize/revert", {})
    assert result.stdout.strip() == (
        "task t2 (resize_revert web1) succeeded; web1 is ACTIVE on node1."
    )
    assert (web1["flavor"]["name"], web1["vcpus"], web1["memory_mb"]) == ("small", 1, 1024)
    assert api.migrations[0]["status"] == "reverted"


def test_confirm_outside_verify_resize_is_the_servers_one_line(
    api: Api19, web1: dict[str, Any]
) -> None:
    one_line_error(
        run("vm", "resize", "web1", "--confirm"),
        "VM web1 is not waiting for a resize to be confirmed or reverted (ACTIVE)",
    )
    one_line_error(run("vm", "resize", "web1", "--flavor", "huge"), "flavor 'huge' not found")


def test_a_failed_resize_exits_1_with_the_tasks_error(api: Api19, web1: dict[str, Any]) -> None:
    api.outcome, api.error = "rolled_back", "no node has room for 4 vCPUs and 8192 MiB"
    result = run("vm", "resize", "web1", "--flavor", "large", "--wait")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "error: task t1 (resize web1) rolled_back: no node has room for 4 vCPUs and 8192 MiB"
    )


def test_waiting_on_a_resize_shows_its_steps(api: Api19, web1: dict[str, Any]) -> None:
    api.script = [
        {"state": "running", "steps": [{"name": "copy_disks", "state": "running"}],
         "result": {"progress": {"message": "copy vda: 40%"}}},
    ]  # fmt: skip
    result = ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    assert "task t1 (resize web1): running, copy_disks: copy vda: 40%" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give exactly one of --flavor FLAVOR (resize), --confirm or --revert (given: none)"),
        (["--flavor", "large", "--confirm"], "(given: --flavor and --confirm)"),
        (["--confirm", "--revert"], "(given: --confirm and --revert)"),
        (["--flavor", "large", "--confirm", "--revert"],
         "(given: --flavor and --confirm and --revert)"),
        (["--confirm", "--to", "node2"], "--to goes with --flavor"),
        (["--revert", "--to", "node2"], "--to goes with --flavor"),
        (["--flavor", "a/b"], "'a/b' is not a valid flavor name"),
        (["--flavor", "large", "--to", "node 2"], "'node 2' is not a valid node name"),
        (["--flavor", "large", "--timeout", "-1"], "--timeout"),
    ],
)  # fmt: skip
def test_resize_refuses_bad_input_before_any_request(
    api: Api19, args: list[str], fragment: str
) -> None:
    line = one_line_error(run("vm", "resize", "web1", *args), fragment, code=2)
    assert line.endswith("(see `bollard vm resize --help`)")
    assert api.requests == []


# -- vm show --------------------------------------------------------------------------------


def test_vm_show_in_verify_resize_shows_the_open_resize(api: Api19, web1: dict[str, Any]) -> None:
    ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    shown = ok("vm", "show", "web1").stdout
    assert field(shown, "status") == "VERIFY_RESIZE"
    assert field(shown, "flavor") == "large"
    assert field(shown, "resize") == (
        "node1 -> node2, small -> large flavor (finished); confirm or revert with "
        "`bollard vm resize web1 --confirm|--revert`"
    )
    assert json.loads(ok("vm", "show", "web1", "-o", "json").stdout) == web1


def test_vm_show_of_a_resize_under_way_has_no_hint_yet(api: Api19) -> None:
    resize = {"migration_id": "m1", "source": "node1", "dest": "node2", "old_flavor": None,
              "new_flavor": {"id": "f1", "name": "large", "vcpus": 4, "memory_mb": 8192,
                             "disk_mb": 0, "properties": {}},
              "status": "migrating", "finished_at": None}  # fmt: skip
    api.vm("db1", status="RESIZE", task_state="resize_migrating", resize=resize)
    shown = ok("vm", "show", "db1").stdout
    assert field(shown, "resize") == "node1 -> node2, custom -> large flavor (migrating)"
    assert field(shown, "flavor") == "custom"


def test_vm_show_names_a_failed_confirm_and_still_offers_both(
    api: Api19, web1: dict[str, Any]
) -> None:
    ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    web1["resize"]["error"] = "confirm failed: node1 did not answer"
    assert field(ok("vm", "show", "web1").stdout, "resize") == (
        "node1 -> node2, small -> large flavor (finished: confirm failed: node1 did not "
        "answer); confirm or revert with `bollard vm resize web1 --confirm|--revert`"
    )


def test_vm_show_without_a_resize(api: Api19, web1: dict[str, Any]) -> None:
    shown = ok("vm", "show", "web1").stdout
    assert field(shown, "flavor") == "small"
    assert field(shown, "resize") == "-"


# -- vm actions -----------------------------------------------------------------------------


def _actions(api: Api19) -> None:
    events = [
        {"event": "claim", "start_time": "10:00:00", "finish_time": "10:00:01",
         "result": "success", "details": "node2: 4 vCPUs, 8192 MiB"},
        {"event": "copy_disks", "start_time": "10:00:01", "finish_time": "10:00:09",
         "result": "success", "details": "vda 40 GiB"},
        {"event": "start", "start_time": None, "finish_time": None, "result": "skipped",
         "details": None},
    ]  # fmt: skip
    base = {"vm": "web1", "vm_uuid": "u-web1", "message": None, "events": None}
    api.actions["web1"] = [
        dict(base, request_id="req-2", action="resize", actor="alice", task_id="t2",
             start_time="10:00:00", finish_time="10:00:10", result="success", events=events),
        dict(base, request_id="req-1", action="create", actor=None, task_id="t1",
             start_time="09:00:00", finish_time=None, result="error",
             message="no node has room", events=[]),
    ]  # fmt: skip


def test_vm_actions_lists_newest_first(api: Api19, web1: dict[str, Any]) -> None:
    _actions(api)
    table = ok("vm", "actions", "web1").stdout
    header = table.splitlines()[0]
    assert [c.strip() for c in header.split("┃")] == [
        "REQUEST ID", "ACTION", "ACTOR", "START", "FINISH", "RESULT", "MESSAGE",
    ]  # fmt: skip
    rows = [line.strip() for line in table.splitlines() if line.strip().startswith("req-")]
    assert re.fullmatch(
        r"req-2\s+│ resize │ alice │ 10:00:00 │ 10:00:10 │ success │ -\s*", rows[0]
    ), rows
    assert re.fullmatch(
        r"req-1\s+│ create │ -\s+│ 09:00:00 │ -\s+│ error\s+│ no node has room\s*", rows[1]
    ), rows
    listed = json.loads(ok("vm", "actions", "web1", "-o", "json").stdout)
    assert [a["request_id"] for a in listed] == ["req-2", "req-1"]
    assert api.sent() == [("GET", "/vms/web1/actions", None)] * 2


def test_vm_actions_of_one_request_shows_its_events(api: Api19, web1: dict[str, Any]) -> None:
    _actions(api)
    shown = ok("vm", "actions", "web1", "req-2").stdout
    assert api.sent() == [("GET", "/vms/web1/actions/req-2", None)]
    assert field(shown, "action") == "resize" and field(shown, "actor") == "alice"
    assert field(shown, "vm") == "web1 (u-web1)"
    assert field(shown, "task") == "t2 (`bollard task show t2`)"
    assert field(shown, "result") == "success"
    assert "EVENT" in shown and "DETAILS" in shown
    assert re.search(r"claim\s+│ 10:00:00 │ 10:00:01 │ success │ node2: 4 vCPUs, 8192 MiB", shown)
    assert re.search(r"copy_disks │ 10:00:01 │ 10:00:09 │ success │ vda 40 GiB", shown)
    assert re.search(r"start\s+│ -\s+│ -\s+│ skipped │ -", shown)
    out = json.loads(ok("vm", "actions", "web1", "req-2", "-o", "json").stdout)
    assert out == api.actions["web1"][0]
    assert "No event recorded." in ok("vm", "actions", "web1", "req-1").stdout


def test_vm_actions_errors(api: Api19, web1: dict[str, Any]) -> None:
    assert ok("vm", "actions", "web1").stdout.strip() == "No action recorded for web1."
    assert json.loads(ok("vm", "actions", "web1", "-o", "json").stdout) == []
    one_line_error(run("vm", "actions", "web1", "req-9"), "VM web1 has no action req-9")
    one_line_error(run("vm", "actions", "ghost"), "vm 'ghost' not found")
    sent = len(api.requests)
    for bad in ("..", "a/b", "req 1", "x" * 69):
        one_line_error(run("vm", "actions", "web1", bad), "not a valid request id", code=2)
    assert len(api.requests) == sent


# -- migration records ----------------------------------------------------------------------


def test_migration_list_shows_resizes_with_their_flavors(api: Api19, web1: dict[str, Any]) -> None:
    api.migration("db1", finished_at="2026-03-01T09:00:05Z")
    ok("vm", "resize", "web1", "--flavor", "large", "--wait")
    table = ok("migration", "list").stdout
    assert [c.strip() for c in table.splitlines()[0].split("┃")] == [
        "ID", "VM", "TYPE", "SOURCE", "DEST", "STATUS", "FLAVOR", "CREATED", "FINISHED",
    ]  # fmt: skip
    assert re.search(
        r"m2 │ web1 │ resize\s+│ node1\s+│ node2 │ finished\s+│ small -> large │ "
        rf"{NOW} │ -",
        table,
    ), table
    assert re.search(
        rf"m1 │ db1\s+│ live-migration │ node1\s+│ node2 │ completed │ -\s+│ {NOW} │ "
        r"2026-03-01T09:00:05Z",
        table,
    ), table
    assert table.index("m2 │") < table.index("m1 │")  # newest first, as the server sends
    listed = json.loads(ok("migration", "list", "--vm", "web1", "-o", "json").stdout)
    assert [m["id"] for m in listed] == ["m2"]
    assert api.requests[-1].url.params["vm"] == "web1"


def test_migration_list_follows_pages_up_to_the_limit(api: Api19) -> None:
    for _ in range(5):
        api.migration("db1")
    listed = json.loads(ok("migration", "list", "-o", "json").stdout)
    assert [m["id"] for m in listed] == ["m5", "m4", "m3", "m2", "m1"]
    listed = json.loads(ok("migration", "list", "--limit", "3", "-o", "json").stdout)
    assert [m["id"] for m in listed] == ["m5", "m4", "m3"]
    assert "vm" not in api.requests[-1].url.params
    assert ok("migration", "list", "--vm", "ghost").stdout.strip() == (
        "No migration recorded for ghost."
    )


def test_migration_show_has_the_source_hold_and_the_error(api: Api19) -> None:
    small: dict[str, Any] = {"id": None, "name": None, "vcpus": 2, "memory_mb": 2048,
                             "disk_mb": 10240, "properties": {}}  # fmt: skip
    large = {"id": "f-large", "name": "large", "vcpus": 4, "memory_mb": 8192, "disk_mb": 40960,
             "properties": {"tier": "gold"}}  # fmt: skip
    record = api.migration(
        "web1", type="resize", status="finished", task_id="t7", old_flavor=small,
        new_flavor=large, source_hold={"node": "node1", "vcpus": 2, "memory_mb": 2048},
        error="confirm failed: node1 did not answer",
    )  # fmt: skip
    shown = ok("migration", "show", "m1").stdout
    assert api.sent() == [("GET", "/migrations/m1", None)]
    assert field(shown, "vm") == "web1 (u-web1)"
    assert field(shown, "type") == "resize" and field(shown, "status") == "finished"
    assert field(shown, "old_flavor") == "custom (2 vCPUs, 2 GiB memory, root disk 10 GiB)"
    assert field(shown, "new_flavor") == "large (4 vCPUs, 8 GiB memory, root disk 40 GiB)"
    assert field(shown, "source_hold") == (
        "node1: 2 vCPUs, 2 GiB memory, until confirmed or reverted"
    )
    assert field(shown, "error") == "confirm failed: node1 did not answer"
    assert field(shown, "task") == "t7 (`bollard task show t7`)"
    assert json.loads(ok("migration", "show", "m1", "-o", "json").stdout) == record


def test_migration_show_of_a_move_and_errors(api: Api19) -> None:
    api.migration("db1")
    shown = ok("migration", "show", "m1").stdout
    assert field(shown, "source_hold") == "none"
    api.migration("db2", type="resize", source_hold={"node": "node3", "vcpus": 1,
                                                     "memory_mb": 512})  # fmt: skip
    assert field(ok("migration", "show", "m2").stdout, "source_hold") == (
        "node3: 1 vCPU, 512 MiB memory, until confirmed or reverted"
    )
    assert field(shown, "old_flavor") == "-" and field(shown, "error") == "-"
    one_line_error(run("migration", "show", "m9"), "migration m9 not found")
    sent = len(api.requests)
    one_line_error(run("migration", "show", ".."), "not a valid migration id", code=2)
    one_line_error(run("migration", "list", "--vm", "a/b"), "not a valid VM name", code=2)
    one_line_error(run("migration", "list", "--limit", "0"), "--limit", code=2)
    assert len(api.requests) == sent


# -- node show ------------------------------------------------------------------------------


def _node(api: Api19, name: str, **fields: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": name, "health": "up", "connected": True, "scheduling": "ready", "vm_count": 1,
        "capacity": {"vcpus": 16, "memory_mb": 65536},
        "allocated": {"vcpus": 2, "memory_mb": 2048},
        "free": {"vcpus": 14, "memory_mb": 63488},
    }  # fmt: skip
    node.update(fields)
    api.nodes[name] = node
    return node


def test_node_show_lists_the_vms_and_the_resize_holds(api: Api19) -> None:
    allocations = [
        {"consumer": "vm", "vm": "db1", "migration_id": None, "vcpus": 1, "memory_mb": 1024},
        {"consumer": "migration", "vm": "web1", "migration_id": "m3", "vcpus": 1,
         "memory_mb": 1024},
    ]  # fmt: skip
    node = _node(api, "node1", allocations=allocations)
    shown = ok("node", "show", "node1").stdout
    assert "allocations" in shown and "CONSUMER" in shown
    assert re.search(r"vm\s+│ db1\s+│ -\s+│ 1\s+│ 1024", shown), shown
    assert re.search(r"migration │ web1 │ m3\s+│ 1\s+│ 1024", shown), shown
    assert json.loads(ok("node", "show", "node1", "-o", "json").stdout) == node


def test_node_show_without_allocations_has_no_table(api: Api19) -> None:
    _node(api, "node2")
    _node(api, "node3", allocations=[])
    for name in ("node2", "node3"):
        shown = ok("node", "show", name).stdout
        assert "CONSUMER" not in shown and field(shown, "name") == name


# -- help -----------------------------------------------------------------------------------


def test_resize_help_explains_confirm_revert_and_what_the_source_keeps() -> None:
    text = flat(ok("vm", "resize", "--help").stdout)
    assert "VERIFY_RESIZE" in text
    assert "the source node keeps its copy of the VM, its original disks" in text
    assert "`--confirm` keeps the new size" in text and "resources freed" in text
    assert "`--revert` goes back" in text and "old flavor" in text
    assert "resize.confirm_window" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["vm", "actions"], "What was done to a VM"),
        (["migration"], "Migration records"),
        (["migration", "list"], "old and new flavor"),
        (["migration", "show"], "what the source node holds"),
        (["node", "show"], "waiting there for a confirm or revert"),
        (["vm"], "resize, actions"),
    ],
)
def test_every_new_command_explains_itself(args: list[str], words: str) -> None:
    result = ok(*args, "--help")
    assert "Usage" in result.stdout
    assert words in flat(result.stdout)
