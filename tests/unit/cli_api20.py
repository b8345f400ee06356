"""An in-memory fake of the issue-20 API (cells behind an API server, api20.md) over
httpx.MockTransport, and the helpers the CLI tests of cells share (test_cli_cells.py).

``Api20(mode="cells")`` is an API server: /cells, gathered pages of VMs and nodes with
``cell`` on each item and ``unreachable`` on each page (a cell marked down answers nothing:
its VMs and nodes are listed as partial items), routed calls (503 for a cell that is down),
``POST /vms`` with ``cell``, and ``/status`` with ``mode``, ``cells`` and ``unreachable``.
The other gathered lists (tasks, commands, volumes, pools, migrations) leave out the items
of a cell that is down; ``/events`` merges, with opaque positions ("cells:N") for
``after``/``last_id``, and refuses ``before``.
``Api20(mode="single")`` is a plain server: no ``cell`` anywhere, 404 on /cells, integer
event positions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli import client as client_mod

TOKEN = "admin-secret"
NOW = "2026-03-01T10:00:00Z"
PAGE = 2  # items per page, so that lists follow cursors
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CELL_TOKEN = "cell1-admin-token"
GATHERED = ("tasks", "commands", "volumes", "pools", "migrations")


def err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class Api20:
    def __init__(self, mode: str = "cells") -> None:
        self.mode = mode
        self.cells: dict[str, dict[str, Any]] = {}
        self.cell_tokens: dict[str, str] = {}  # url -> the admin token that cell accepts
        self.stored: dict[str, dict[str, Any]] = {}  # name -> token and ca_pem as received
        self.down: dict[str, str] = {}  # cell -> why it does not answer
        self.unreachable_errors: dict[str, str] = {}  # cell -> "error" of pages, if not usual
        self.vms: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in GATHERED}
        self.events: list[dict[str, Any]] = []
        # What happens while `events --follow` waits: one per follow request, then Ctrl-C.
        self.arrivals: list[Callable[[], None]] = []
        self.requests: list[httpx.Request] = []

    # -- test data ------------------------------------------------------------------------

    def cell(self, name: str, **fields: Any) -> dict[str, Any]:
        port = 8701 + len(self.cells)
        cell: dict[str, Any] = {
            "name": name, "url": f"https://127.0.0.1:{port}", "disabled": False,
            "state": "up", "error": None, "checked_at": NOW, "latency_ms": 3.14,
            "version": "0.20", "database": "sqlite", "nodes": 0, "vms": 0, "created_at": NOW,
        }  # fmt: skip
        cell.update(fields)
        self.cells[name] = cell
        return cell

    def node(self, name: str, cell: str | None = None, **fields: Any) -> dict[str, Any]:
        node: dict[str, Any] = {
            "name": name, "health": "up", "connected": True, "scheduling": "enabled",
            "vm_count": 0, "capacity": {"vcpus": 16, "memory_mb": 32768},
            "allocated": {"vcpus": 0, "memory_mb": 0},
            "free": {"vcpus": 16, "memory_mb": 32768}, "last_heartbeat": NOW,
            "driver": "sim", "agent_incarnation": "i1", "boot_id": "b1", "created_at": NOW,
            "allocations": [],
        }  # fmt: skip
        if cell is not None:
            node["cell"] = cell
            self.cells[cell]["nodes"] += 1
        node.update(fields)
        self.nodes[name] = node
        return node

    def vm(self, name: str, cell: str | None = None, **fields: Any) -> dict[str, Any]:
        vm: dict[str, Any] = {
            "name": name, "uuid": f"u-{name}", "node": "node1", "status": "ACTIVE",
            "vm_state": "active", "task_state": None, "observed_power": "running",
            "vcpus": 1, "memory_mb": 512, "flavor": None, "resize": None, "disks": [],
        }  # fmt: skip
        if cell is not None:
            vm["cell"] = cell
            self.cells[cell]["vms"] += 1
        vm.update(fields)
        self.vms[name] = vm
        return vm

    def record(self, kind: str, cell: str | None = None, **fields: Any) -> dict[str, Any]:
        """An item of the gathered list ``kind`` (tasks, commands, ...), as listed."""
        item = dict(fields)
        if cell is not None:
            item["cell"] = cell
        self.records[kind].append(item)
        return item

    def event(self, cell: str | None, kind: str, message: str, **fields: Any) -> dict[str, Any]:
        """An event of ``cell`` (None: the API server's own), the newest so far."""
        n = len(self.events) + 1
        event: dict[str, Any] = {
            "id": n, "at": f"2026-03-01T10:00:{n:02d}Z", "kind": kind, "vm": None,
            "node": None, "task_id": None, "actor": None, "message": message,
        }  # fmt: skip
        event.update(fields)
        if self.mode == "cells":
            event["cell"] = cell
        self.events.append(event)
        return event

    def cut(self, cell: str, why: str = "connection refused") -> None:
        """Cell ``cell`` stops answering (its state says so once checked)."""
        self.down[cell] = why
        self.cells[cell].update(state="unreachable", error=why, latency_ms=None)

    def sent(self) -> list[tuple[str, str, Any]]:
        """(method, path, body) of every request."""
        return [
            (r.method, r.url.path.removeprefix("/api/v1"), json.loads(r.content or b"null"))
            for r in self.requests
        ]

    # -- the API --------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return err(401, "unauthorized", "invalid token")
        path, method = request.url.path.removeprefix("/api/v1"), request.method
        body = json.loads(request.content) if request.content else {}
        if path == "/status":
            return httpx.Response(200, json=self._status())
        if path.startswith("/cells") and self.mode != "cells":
            return err(404, "not-found", f"no such API path: {request.url.path}")
        if path == "/cells":
            if method == "POST":
                return self._create_cell(body)
            items = [self.cells[n] for n in sorted(self.cells)]
            return httpx.Response(200, json={"items": items, "total": len(items)})
        if m := re.fullmatch(r"/cells/([^/]+)", path):
            return self._cell(m.group(1), method, body)
        if path == "/vms" and method == "POST":
            return self._create_vm(body)
        if path == "/vms":
            return self._page(self.vms, request, partial=("uuid", "status"))
        if path == "/nodes":
            return self._page(self.nodes, request, partial=("health",))
        if method == "GET" and path.strip("/") in self.records:
            listed = [i for i in self.records[path.strip("/")] if i.get("cell") not in self.down]
            if request.url.params.get("order") == "newest":
                listed.reverse()
            return self._paged(listed, request)
        if method == "GET" and path == "/events":
            return self._events(request)
        if m := re.fullmatch(r"/(vms|nodes)/([^/]+)", path):
            found = (self.vms if m.group(1) == "vms" else self.nodes).get(m.group(2))
            if found is None:
                return err(404, "not-found", f"{m.group(1)[:-1]} {m.group(2)!r} not found")
            if found.get("cell") in self.down:
                cell = found["cell"]
                return err(
                    503,
                    "cell-unreachable",
                    f"cell {cell} did not answer within 5 s: {self.down[cell]}",
                )
            return httpx.Response(200, json=found)
        return err(404, "not-found", f"no such API path: {request.url.path}")

    def _page(
        self, table: dict[str, dict[str, Any]], request: httpx.Request, partial: tuple[str, ...]
    ) -> httpx.Response:
        items = [self._as_listed(table[n], partial) for n in sorted(table)]
        return self._paged(items, request)

    def _paged(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        limit = min(int(request.url.params.get("limit", "100")), PAGE)
        more = start + limit < len(items)
        page: dict[str, Any] = {
            "items": items[start : start + limit],
            "next_cursor": str(start + limit) if more else None,
            "total": len(items),
        }
        if self.mode == "cells":
            page["unreachable"] = [
                {
                    "cell": c,
                    "error": self.unreachable_errors.get(
                        c, f"cell {c} did not answer within 5 s: {why}"
                    ),
                }
                for c, why in sorted(self.down.items())
            ]
        return httpx.Response(200, json=page)

    def _events(self, request: httpx.Request) -> httpx.Response:
        """A page of the event log: the last ``limit``, or those after position ``after``
        (where a follow request first lets the next of ``arrivals`` happen)."""
        params = request.url.params
        cells = self.mode == "cells"
        if cells and params.get("before") is not None:
            return err(
                422, "invalid-input", "before: paging back is per cell through the API server"
            )
        limit = int(params.get("limit", "100"))
        after = params.get("after")
        if after is None:
            shown = [e for e in self.events if e.get("cell") not in self.down]
            more, shown = len(shown) > limit, shown[-limit:]
        else:
            if not self.arrivals:
                raise KeyboardInterrupt  # the user stops following
            self.arrivals.pop(0)()
            if cells and not after.startswith("cells:"):
                return err(422, "invalid-input", "after: not a position this API server gave")
            start = int(after.removeprefix("cells:"))
            shown = [e for e in self.events[start:] if e.get("cell") not in self.down]
            more = False
        position = len(self.events)
        page: dict[str, Any] = {
            "items": shown, "more": more, "last_id": f"cells:{position}" if cells else position,
        }  # fmt: skip
        if cells:
            page["unreachable"] = [
                {"cell": c, "error": f"cell {c} did not answer within 5 s: {why}"}
                for c, why in sorted(self.down.items())
            ]
        return httpx.Response(200, json=page)

    def _as_listed(self, item: dict[str, Any], partial: tuple[str, ...]) -> dict[str, Any]:
        """A whole item, or the partial one of a cell that did not answer (api20.md)."""
        if item.get("cell") not in self.down:
            return item
        shown: dict[str, Any] = {"name": item["name"]}
        if "uuid" in partial:
            shown.update(uuid=None, cell=item["cell"], status="UNKNOWN")
        else:
            shown.update(cell=item["cell"], health="unknown")
        return {**shown, "unreachable": True}

    def _status(self) -> dict[str, Any]:
        answered = [v for v in self.vms.values() if v.get("cell") not in self.down]
        by_status: dict[str, int] = {}
        for vm in answered:
            by_status[vm["status"]] = by_status.get(vm["status"], 0) + 1
        nodes = [n for n in self.nodes.values() if n.get("cell") not in self.down]
        status: dict[str, Any] = {
            "version": "0.20", "database": "sqlite", "tasks_running": 0, "maintenance": False,
            "nodes": {"total": len(nodes), "connected": sum(1 for n in nodes if n["connected"])},
            "vms": {"total": len(answered), "by_status": by_status},
            "mode": self.mode, "cells": None, "unreachable": [],
        }  # fmt: skip
        if self.mode == "cells":
            status["cells"] = [
                {"name": c["name"], "state": c["state"], "error": c["error"]}
                for c in self.cells.values()
            ]
            status["unreachable"] = [
                {"cell": c, "error": why} for c, why in sorted(self.down.items())
            ]
        return status

    def _create_cell(self, body: dict[str, Any]) -> httpx.Response:
        name, url = body["name"], body["url"]
        if name in self.cells:
            return err(409, "already-exists", f"cell {name!r} already exists")
        if self.cell_tokens.get(url) != body["token"]:
            return err(422, "invalid-input", f"{name}: {url}: 401 unknown token")
        self.stored[name] = {"token": body["token"], "ca_pem": body["ca_pem"]}
        cell = self.cell(name, url=url)
        return httpx.Response(201, json=cell)

    def _cell(self, name: str, method: str, body: dict[str, Any]) -> httpx.Response:
        cell = self.cells.get(name)
        if cell is None:
            return err(404, "not-found", f"cell {name!r} not found")
        if method == "DELETE":
            if cell["nodes"] or cell["vms"]:
                return err(
                    409,
                    "conflict",
                    f"cell {name} still has {cell['nodes']} nodes and {cell['vms']} VMs",
                )
            del self.cells[name]
            return httpx.Response(204)
        if method == "PATCH":
            for key in ("url", "disabled", "weight_multiplier"):
                if key in body:
                    cell[key] = body[key]
            for key in ("token", "ca_pem"):
                if key in body:
                    self.stored.setdefault(name, {})[key] = body[key]
            return httpx.Response(200, json=cell)
        shown = dict(cell)
        names = sorted(n for n, node in self.nodes.items() if node.get("cell") == name)
        shown["node_names"] = names
        if name in self.down:
            shown["status"] = None
        else:
            vms = [v for v in self.vms.values() if v.get("cell") == name]
            shown["status"] = {
                "version": "0.20", "database": "sqlite", "tasks_running": 1, "maintenance": False,
                "nodes": {"total": len(names), "connected": len(names)},
                "vms": {"total": len(vms), "by_status": {"ACTIVE": len(vms)}},
                "mode": "single", "cells": None, "unreachable": [],
            }  # fmt: skip
        return httpx.Response(200, json=shown)

    def _create_vm(self, body: dict[str, Any]) -> httpx.Response:
        cell = body.get("cell")
        if cell is not None and cell not in self.cells:
            return err(422, "invalid-input", f"cell: no cell named {cell}")
        if self.mode == "cells" and cell is None:
            cell = min(self.cells)
        vm = self.vm(body["name"], cell, status="BUILD", vm_state="building")
        task = {"id": "t1", "type": "create", "vm": vm["name"], "node": None,
                "state": "pending", "error": None, "result": {}}  # fmt: skip
        if cell is not None:
            task["cell"] = cell
        return httpx.Response(202, json={"vm": vm, "task": task})


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str = "cells") -> Api20:
    fake = Api20(mode)
    monkeypatch.setattr(client_mod, "transport_override", httpx.MockTransport(fake))
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BOLLARD_URL", "http://bollard.test")
    monkeypatch.setenv("BOLLARD_TOKEN", TOKEN)
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)
    return fake


# -- reading the output ---------------------------------------------------------------------


def table(stdout: str) -> list[list[str]]:
    """The rows of the (last) printed table, header first."""
    rows: list[list[str]] = []
    for line in stdout.splitlines():
        if "┃" in line:  # a header: a new table
            rows = [[c.strip() for c in line.split("┃")]]
        elif "│" in line:
            rows.append([c.strip() for c in line.split("│")])
    return rows


def row_of(stdout: str, name: str) -> dict[str, str]:
    rows = table(stdout)
    header = rows[0]
    for row in rows[1:]:
        if row[0] == name:
            assert len(row) == len(header), (header, row)
            return dict(zip(header, row, strict=True))
    raise AssertionError(f"no row {name!r} in:\n{stdout}")


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
