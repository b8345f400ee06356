"""The lists of the CLI with cells (issue 20, api20.md) against the in-memory fake of
cli_api20.py: the CELL column of every gathered list (VMs, nodes, tasks, commands, volumes,
pools, migration records, events) behind an API server, one warning line per cell that did
not answer, the same output as before from a plain server, `events --follow` passing the API
server's opaque positions back unchanged, Client.list_all keeping the pages' `unreachable`,
and the sim commands finding the fabric of their node's cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli.client import Client
from bollard.sim.fabric import Fabric
from tests.unit.cli_api19 import ok, run
from tests.unit.cli_api20 import Api20, install, row_of, table


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api20:
    return install(monkeypatch, tmp_path)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Api20:
    return install(monkeypatch, tmp_path, mode="single")


@pytest.fixture
def two_cells(api: Api20) -> Api20:
    """cell1 (cell1-node1, web1) and cell2 (cell2-node1, db1, db2), both answering."""
    api.cell("cell1")
    api.cell("cell2", database="postgresql", latency_ms=12.06)
    api.node("cell1-node1", "cell1")
    api.node("cell2-node1", "cell2")
    api.vm("web1", "cell1", node="cell1-node1")
    api.vm("db1", "cell2", node="cell2-node1")
    api.vm("db2", "cell2", node="cell2-node1", status="SHUTOFF", observed_power="shutoff")
    return api


# -- VMs and nodes ----------------------------------------------------------------------------


def test_vm_list_has_a_cell_column_behind_an_api_server(two_cells: Api20) -> None:
    result = ok("vm", "list")
    assert table(result.stdout)[0][:3] == ["NAME", "CELL", "STATUS"]
    assert row_of(result.stdout, "db2")["CELL"] == "cell2"
    assert row_of(result.stdout, "web1")["CELL"] == "cell1"
    assert result.stderr == ""
    vms = json.loads(ok("vm", "list", "-o", "json").stdout)
    assert [(v["name"], v["cell"]) for v in vms] == [
        ("db1", "cell2"), ("db2", "cell2"), ("web1", "cell1"),
    ]  # fmt: skip


def test_vm_list_shows_the_vms_of_a_cell_that_did_not_answer_as_unknown(
    two_cells: Api20,
) -> None:
    two_cells.cut("cell2", "connection refused")
    result = ok("vm", "list")
    assert row_of(result.stdout, "db1") == {
        "NAME": "db1", "CELL": "cell2", "STATUS": "UNKNOWN", "TASK": "-", "NODE": "-",
        "POWER": "-", "VCPUS": "-", "MEMORY MB": "-",
    }  # fmt: skip
    assert row_of(result.stdout, "web1")["STATUS"] == "ACTIVE"
    # One warning for the cell, though each of the two pages named it.
    assert result.stderr.splitlines() == [
        "warning: cell cell2 did not answer within 5 s: connection refused; its VMs are shown "
        "as UNKNOWN"
    ]
    listed = json.loads(ok("vm", "list", "-o", "json").stdout)
    assert listed[0] == {
        "name": "db1", "uuid": None, "cell": "cell2", "status": "UNKNOWN", "unreachable": True,
    }  # fmt: skip


def test_every_cell_that_did_not_answer_gets_its_line(two_cells: Api20) -> None:
    two_cells.cut("cell1", "timed out")
    two_cells.cut("cell2", "refused")
    two_cells.unreachable_errors = {"cell1": "read timeout", "cell2": ""}
    lines = ok("vm", "list", "--limit", "1").stderr.splitlines()
    assert lines == [
        "warning: cell cell1 did not answer: read timeout; its VMs are shown as UNKNOWN",
        "warning: cell cell2 did not answer: no answer; its VMs are shown as UNKNOWN",
    ]


def test_vm_list_of_a_plain_server_is_unchanged(plain: Api20) -> None:
    plain.vm("web1")
    result = ok("vm", "list")
    assert table(result.stdout)[0] == [
        "NAME", "STATUS", "TASK", "NODE", "POWER", "VCPUS", "MEMORY MB",
    ]  # fmt: skip
    assert "CELL" not in result.stdout and result.stderr == ""


def test_node_list_has_a_cell_column_and_partial_nodes(two_cells: Api20) -> None:
    result = ok("node", "list")
    assert table(result.stdout)[0][:3] == ["NAME", "CELL", "HEALTH"]
    assert row_of(result.stdout, "cell1-node1")["CONNECTED"] == "yes"
    two_cells.cut("cell2", "refused")
    result = ok("node", "list")
    assert row_of(result.stdout, "cell2-node1") == {
        "NAME": "cell2-node1", "CELL": "cell2", "HEALTH": "unknown", "CONNECTED": "-",
        "SCHEDULING": "-", "VMS": "-", "VCPUS": "-", "MEMORY MB": "-", "SEEN": "-",
    }  # fmt: skip
    assert row_of(result.stdout, "cell1-node1")["VCPUS"] == "0/16"
    assert result.stderr.splitlines() == [
        "warning: cell cell2 did not answer within 5 s: refused; its nodes are shown as unknown"
    ]


def test_node_list_of_a_plain_server_is_unchanged(plain: Api20) -> None:
    plain.node("node1")
    result = ok("node", "list")
    assert table(result.stdout)[0] == [
        "NAME", "HEALTH", "CONNECTED", "SCHEDULING", "VMS", "VCPUS", "MEMORY MB", "SEEN",
    ]  # fmt: skip
    assert row_of(result.stdout, "node1")["CONNECTED"] == "yes"


# -- tasks, commands, volumes, pools, migration records ----------------------------------------


def _task(n: int) -> dict[str, Any]:
    return {"id": f"t{n}", "type": "start", "vm": f"vm{n}", "state": "succeeded",
            "actor": "admin", "error": None, "created_at": f"2026-03-01T10:0{n}:00Z"}  # fmt: skip


def _command(n: int) -> dict[str, Any]:
    return {"id": f"c{n}", "node": f"node{n}", "type": "start_vm", "vm_uuid": f"u{n}",
            "state": "ACKED", "agent_state": "DONE", "answer": {"ok": True}, "attempts": 1,
            "created_at": f"2026-03-01T10:0{n}:00Z"}  # fmt: skip


def _volume(n: int) -> dict[str, Any]:
    return {"name": f"v{n}", "pool": "default", "node": f"node{n}", "size_mb": 1024,
            "format": "qcow2", "state": "ready", "vm": None}  # fmt: skip


def _pool(n: int) -> dict[str, Any]:
    return {"name": f"p{n}", "type": "local", "path": None, "nodes": None, "volumes": n,
            "provisioned_mb": 1024, "free_mb": 2048, "capacity_mb": 4096}  # fmt: skip


def _migration(n: int) -> dict[str, Any]:
    return {"id": f"m{n}", "vm": f"vm{n}", "type": "migration", "source": "a", "dest": "b",
            "status": "completed", "old_flavor": None, "new_flavor": None,
            "created_at": f"2026-03-01T10:0{n}:00Z", "finished_at": None}  # fmt: skip


# (kind, command, columns of a plain server, what the warning says of a silent cell's items)
LISTS = [
    ("tasks", ["task", "list"], ["ID", "TYPE", "VM", "STATE", "ACTOR", "ERROR", "CREATED"],
     _task, "its tasks are not listed"),
    ("commands", ["command", "list"],
     ["ID", "NODE", "TYPE", "VM", "STATE", "AGENT STATE", "OUTCOME", "ATTEMPTS", "CREATED"],
     _command, "its commands are not listed"),
    ("volumes", ["volume", "list"],
     ["NAME", "POOL", "NODE", "SIZE", "FORMAT", "STATE", "VM/DEVICE"],
     _volume, "its volumes are not listed"),
    ("pools", ["pool", "list"],
     ["NAME", "TYPE", "PATH", "NODES", "VOLUMES", "PROVISIONED", "FREE", "CAPACITY"],
     _pool, "its pools are not listed"),
    ("migrations", ["migration", "list"],
     ["ID", "VM", "TYPE", "SOURCE", "DEST", "STATUS", "FLAVOR", "CREATED", "FINISHED"],
     _migration, "its migration records are not listed"),
]  # fmt: skip
LIST_IDS = [kind for kind, *_ in LISTS]


@pytest.mark.parametrize(("kind", "command", "columns", "make", "shown_as"), LISTS, ids=LIST_IDS)
def test_each_gathered_list_has_a_cell_column_and_a_line_per_silent_cell(
    two_cells: Api20, kind: str, command: list[str], columns: list[str], make: Any, shown_as: str
) -> None:
    for n, cell in enumerate(("cell1", "cell2", "cell2", "cell1"), start=1):
        two_cells.record(kind, cell, **make(n))
    result = ok(*command)
    assert table(result.stdout)[0] == [columns[0], "CELL", *columns[1:]]
    key = columns[0]
    first = make(1)[key.lower()]
    assert row_of(result.stdout, first)["CELL"] == "cell1"  # the rest of its row aligned
    assert row_of(result.stdout, make(2)[key.lower()])["CELL"] == "cell2"
    assert len(table(result.stdout)) == 5 and result.stderr == ""  # over two pages
    listed = json.loads(ok(*command, "-o", "json").stdout)
    assert [item["cell"] for item in listed] == ["cell1", "cell2", "cell2", "cell1"]

    two_cells.cut("cell2", "refused")
    result = ok(*command)
    assert [row[0] for row in table(result.stdout)[1:]] == [first, make(4)[key.lower()]]
    assert result.stderr.splitlines() == [
        f"warning: cell cell2 did not answer within 5 s: refused; {shown_as}"
    ]


@pytest.mark.parametrize(("kind", "command", "columns", "make", "shown_as"), LISTS, ids=LIST_IDS)
def test_each_gathered_list_of_a_plain_server_is_unchanged(
    plain: Api20, kind: str, command: list[str], columns: list[str], make: Any, shown_as: str
) -> None:
    plain.record(kind, None, **make(1))
    result = ok(*command)
    assert table(result.stdout)[0] == columns
    assert row_of(result.stdout, make(1)[columns[0].lower()])[columns[1]] != "-"
    assert "CELL" not in result.stdout and result.stderr == ""


def test_task_list_newest_with_limit_keeps_each_cell_on_its_row(two_cells: Api20) -> None:
    for n, cell in enumerate(("cell1", "cell2", "cell1"), start=1):
        two_cells.record("tasks", cell, **_task(n))
    rows = table(ok("task", "list", "--limit", "2").stdout)
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [
        ("t2", "cell2", "vm2"),
        ("t3", "cell1", "vm3"),
    ]


def test_an_empty_migration_list_still_warns_of_a_silent_cell(two_cells: Api20) -> None:
    two_cells.record("migrations", "cell2", **_migration(1))
    two_cells.cut("cell2", "refused")
    result = ok("migration", "list")
    assert result.stdout.strip() == "No migration recorded."
    assert result.stderr.splitlines() == [
        "warning: cell cell2 did not answer within 5 s: refused; its migration records are "
        "not listed"
    ]


# -- events -----------------------------------------------------------------------------------


def test_events_have_a_cell_column_and_a_line_per_silent_cell(two_cells: Api20) -> None:
    two_cells.event(None, "cell.created", "cell cell1 added")
    two_cells.event("cell1", "vm.started", "web1 started", vm="web1")
    two_cells.event("cell2", "vm.started", "db1 started", vm="db1")
    result = ok("events")
    rows = table(result.stdout)
    assert rows[0] == ["AT", "CELL", "KIND", "VM", "NODE", "ACTOR", "MESSAGE", "TASK"]
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("-", "cell.created", "-"), ("cell1", "vm.started", "web1"),
        ("cell2", "vm.started", "db1"),
    ]  # fmt: skip
    assert result.stderr == ""
    two_cells.cut("cell2", "refused")
    result = ok("events")
    assert [r[1] for r in table(result.stdout)[1:]] == ["-", "cell1"]
    assert result.stderr.splitlines() == [
        "warning: cell cell2 did not answer within 5 s: refused; its events are not listed"
    ]


def test_events_with_more_name_no_before_behind_an_api_server(two_cells: Api20) -> None:
    for n in range(3):
        two_cells.event("cell1", "vm.started", f"vm{n} started")
    result = ok("events", "--limit", "2")
    assert result.stderr.strip() == "showing the last 2 events; --limit N for more"


def test_events_of_a_plain_server_are_unchanged(plain: Api20) -> None:
    for n in range(3):
        plain.event(None, "vm.started", f"vm{n} started", vm=f"vm{n}")
    result = ok("events", "--limit", "2")
    assert table(result.stdout)[0] == ["AT", "KIND", "VM", "NODE", "ACTOR", "MESSAGE", "TASK"]
    assert result.stderr.strip() == (
        "showing the last 2 events; --limit N for more, or --before 2 for older ones"
    )


def _afters(api: Api20) -> list[str | None]:
    return [r.url.params.get("after") for r in api.requests if r.url.path.endswith("/events")]


def test_events_follow_passes_the_opaque_positions_back_unchanged(two_cells: Api20) -> None:
    two_cells.event(None, "cell.created", "cell cell1 added")
    two_cells.arrivals = [
        lambda: two_cells.event("cell1", "vm.started", "web1 started", vm="web1"),
        lambda: two_cells.cut("cell2", "refused"),
        lambda: two_cells.event("cell2", "vm.started", "db1 started", vm="db1"),  # not shown
        lambda: two_cells.event("cell1", "vm.stopped", "web1 stopped", vm="web1"),
    ]
    result = ok("events", "--follow")
    assert _afters(two_cells) == [None, "cells:1", "cells:2", "cells:2", "cells:3", "cells:4"]
    lines = result.stdout.splitlines()
    assert [line.split()[1:3] for line in lines] == [
        ["-", "cell.created"], ["cell1", "vm.started"], ["cell1", "vm.stopped"],
    ]  # fmt: skip
    # Said once, though each page after the cut names the cell.
    assert result.stderr.splitlines() == [
        "warning: cell cell2 did not answer within 5 s: refused; its events follow once it answers"
    ]
    two_cells.requests.clear()
    two_cells.arrivals = [lambda: None]
    followed = ok("events", "-f", "-o", "json").stdout.splitlines()
    assert [json.loads(line)["cell"] for line in followed] == [None, "cell1", "cell1"]
    assert _afters(two_cells) == [None, "cells:4", "cells:4"]


def test_events_follow_of_a_plain_server_is_unchanged(plain: Api20) -> None:
    plain.event(None, "vm.started", "web1 started", vm="web1")
    plain.arrivals = [lambda: plain.event(None, "vm.stopped", "web1 stopped", vm="web1")]
    result = ok("events", "--follow")
    assert _afters(plain) == [None, "1", "2"]
    assert [line.split()[1] for line in result.stdout.splitlines()] == [
        "vm.started", "vm.stopped",
    ]  # fmt: skip
    assert result.stderr == ""


def test_events_before_through_an_api_server_is_its_one_line(two_cells: Api20) -> None:
    result = run("events", "--before", "5")
    assert result.exit_code == 1 and result.stdout == ""
    assert "before: paging back is per cell" in result.stderr


# -- Client.list_all ----------------------------------------------------------------------------


def test_list_all_keeps_the_cells_each_page_names() -> None:
    pages = [
        {"items": [{"name": "a"}], "next_cursor": "2",
         "unreachable": [{"cell": "cell2", "error": "first why"}]},
        {"items": [{"name": "b"}], "next_cursor": None,
         "unreachable": [{"cell": "cell2", "error": "second why"}, {"cell": "cell3"}, {}]},
    ]  # fmt: skip
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.get("cursor"))
        return httpx.Response(200, json=pages[len(seen) - 1])

    unreachable: dict[str, str] = {}
    with Client("http://b.test", "t", transport=httpx.MockTransport(answer)) as client:
        items = client.list_all("/vms", unreachable=unreachable)
        assert [i["name"] for i in items] == ["a", "b"] and seen == [None, "2"]
        assert unreachable == {"cell2": "first why", "cell3": ""}
        seen.clear()
        assert [i["name"] for i in client.list_all("/vms")] == ["a", "b"]


# -- sim commands in a cluster with cells -------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["sim", "fault", "clear", "{node}"], "0 faults cleared on {node}"),
        (["sim", "load", "clear", "{node}"], "{node} reports its computed load"),
        (["sim", "report", "hold", "{node}", "--count", "0"], "{node} holds back no heartbeat"),
        (["sim", "volume", "list", "--node", "{node}", "-o", "json"], "[]"),
    ],
)
@pytest.mark.parametrize("node", ["cell2-node1", "extra"])
def test_sim_commands_with_a_node_find_its_cells_fabric(
    tmp_path: Path, command: list[str], said: str, node: str
) -> None:
    for cell, name in (("cell1", "cell1-node1"), ("cell2", "cell2-node1"), ("cell2", "extra")):
        Fabric(tmp_path / "cells" / cell / "fabric").host(name).ensure_host(4, 4096)
    args = [part.format(node=node) for part in command]
    result = ok(*args, "--data-dir", str(tmp_path))
    assert result.stdout.strip() == said.format(node=node)
