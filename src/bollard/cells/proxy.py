"""Every /api/v1 call the API server does not answer itself, sent on to a cell.

- About one VM or node (`/vms/NAME/...`, `/nodes/NAME/...`): to its cell, from the mappings
  (repaired when the cell does not have it: routing.py).
- A list (`GET /vms`, `/nodes`, `/tasks`, ...): gathered from every cell (gather.py); events
  merged with the API server's own (event_merge.py).
- About anything else by name or id (a task, a volume, a pool, a command): to the one cell
  that has it. `?cell=NAME` on any call sends it to that cell.
- Cluster-wide changes (maintenance, settings, a reconciliation fix without a VM): to every
  cell; the answer says which did not take it.

The cell's answer comes back as it is, with `cell` added to each object in it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from bollard.cells.api_records import ApiRecords
from bollard.cells.api_settings import ApiSettings
from bollard.cells.console_proxy import ConsoleRoutes
from bollard.cells.directory import CellClient, CellDirectory, CellUnreachable, refusal
from bollard.cells.event_merge import EventMerge
from bollard.cells.gather import KINDS, Gatherer, ListKind, with_cell
from bollard.cells.moves import Moves
from bollard.cells.placement import Placement
from bollard.cells.routing import Routes
from bollard.domain.errors import Conflict, InvalidInput, NotFound
from bollard.domain.policy import Identity
from bollard.server.api.deps import IDENTITY_KEY

log = logging.getLogger(__name__)

FOUND_BY_ID = {"tasks": "task", "commands": "command", "migrations": "migration record",
               "volumes": "volume", "pools": "pool"}  # fmt: skip
EVERY_CELL = {"cluster", "settings"}
HA_LISTS = {"groups": ListKind("/ha/groups", "name"), "rules": ListKind("/ha/rules", "name")}
HOLDS_OBJECTS = ("vm", "task", "node", "volume")  # an answer's objects that get `cell` too
PASSED_HEADERS = ("content-type",)


def add_cell(data: Any, cell: str) -> Any:
    """`cell` in the answer's object, its page's items and the objects it holds (a VM and
    its task)."""
    if not isinstance(data, dict):
        return data
    with_cell(data, cell)
    for key, value in data.items():
        if key == "items" and isinstance(value, list):
            for item in value:
                with_cell(item, cell)
        elif key in HOLDS_OBJECTS and isinstance(value, dict):
            with_cell(value, cell)
    return data


class Proxy:
    def __init__(
        self, *, directory: CellDirectory, routes: Routes, gatherer: Gatherer,
        merge: EventMerge, placement: Placement, moves: Moves, records: ApiRecords,
        settings: ApiSettings, consoles: ConsoleRoutes,
    ) -> None:  # fmt: skip
        self._consoles = consoles
        self._cells = directory
        self._routes = routes
        self._gather = gatherer
        self._merge = merge
        self._placement = placement
        self._moves = moves
        self._records = records
        self._settings = settings

    async def handle(self, request: Request) -> Response:
        identity: Identity | None = request.scope.get(IDENTITY_KEY)
        path = request.path_params["path"].strip("/")
        parts = path.split("/")
        head, method = parts[0], request.method
        params = request.query_params
        passed = [(k, v) for k, v in params.multi_items() if k != "cell"]
        body = await request.body()
        forced = params.get("cell")
        if forced is not None:
            return await self.forward(self._cells.get(forced), request, passed, body, identity)
        if not self._cells.names():
            raise NotFound("no cells yet: add one with `bollard cell create`")
        mine = await self._own(request, parts, params, body, identity)
        if mine is not None:
            return mine
        if head == "events":
            if parts[1:] == ["stream"]:
                return StreamingResponse(
                    self._merge.stream(params, request.headers.get("last-event-id"), identity),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
                )
            return _json(await self._merge.page(params, identity))
        if method == "GET" and len(parts) == 1 and head in KINDS:
            # A list of one VM's or one node's things is that VM's or node's cell's list.
            if params.get("vm") and head != "vms":
                client = await self._routes.vm(params["vm"], identity)
                answer = await self._one_cell_page(client, request, passed, body, identity)
                if head in ("tasks", "migrations") and answer.status_code == 200:
                    return await self._with_own(answer, head, params)
                return answer
            if params.get("node") and head not in ("vms", "nodes"):
                client = await self._routes.node(params["node"], identity)
                return await self._one_cell_page(client, request, passed, body, identity)
            page = await self._gather.page(KINDS[head], params, identity, passed)
            if head == "vms":
                moving = await self._moves.open_names()
                for item in page["items"]:
                    self._moves.overlay(item, moving.get(item.get("name")))
            return _json(page)
        if method == "GET" and path in ("pools", "reconcile"):
            return _json(await self._everywhere_list(path, passed, identity))
        if head in EVERY_CELL or (path == "reconcile/fix" and not _json_body(body).get("vm")):
            return await self.every_cell(request, path, passed, body, identity)
        if head == "vms" and len(parts) == 1 and method == "POST":
            return await self._placement.create_vm(request, _json_body(body), identity, self)
        if path == "vms/batch" and method == "POST":  # the whole batch to one cell
            return await self._placement.create_batch(request, _json_body(body), identity, self)
        if head == "nodes" and len(parts) == 1 and method == "POST":
            client = await self._placement.cell_for(_json_body(body), identity, what="node")
            answer = await self.forward(client, request, passed, _strip_cell(body), identity)
            if answer.status_code == 201:
                await self._placement.mapped_node(_json_body(body).get("name"), client.name)
            return answer
        if head in ("volumes", "pools") and len(parts) == 1 and method == "POST":
            client = await self._placement.cell_for(_json_body(body), identity, what=head[:-1])
            return await self.forward(client, request, passed, _strip_cell(body), identity)
        if (head == "vms" and len(parts) >= 2) or path == "reconcile/fix":
            name = parts[1] if head == "vms" else str(_json_body(body)["vm"])
            return await self._to_vm(name, request, passed, body, identity)
        if head == "nodes" and len(parts) >= 2:
            return await self._to_node(parts[1], request, passed, body, identity)
        if head == "ha" and len(parts) in (2, 3) and parts[1] in HA_LISTS:
            return await self._to_ha(request, parts, params, passed, body, identity)
        if head in FOUND_BY_ID and len(parts) >= 2:
            client = await self._routes.find(
                FOUND_BY_ID[head], parts[1], f"/{head}/{parts[1]}", identity
            )
            return await self.forward(client, request, passed, body, identity)
        raise NotFound(f"{method} /api/v1/{path}: no such route")

    async def forward(
        self, client: CellClient, request: Request, passed: list[tuple[str, str]],
        body: bytes, identity: Identity | None,
    ) -> Response:  # fmt: skip
        path = "/" + request.path_params["path"].strip("/")
        headers = {k: request.headers[k] for k in PASSED_HEADERS if k in request.headers}
        answer = await client.call(
            request.method, path, params=passed, content=body or None, headers=headers,
            identity=identity,
        )  # fmt: skip
        self._cells.mark(client.name, None)
        content = answer.content
        kind = answer.headers.get("content-type", "")
        if kind.startswith("application/json") and content:
            content = json.dumps(add_cell(answer.json(), client.name)).encode()
        out = Response(content=content, status_code=answer.status_code, media_type=kind or None)
        for name in ("location", "retry-after", "www-authenticate"):
            if name in answer.headers:
                out.headers[name] = answer.headers[name]
        return out

    async def _one_cell_page(
        self, client: CellClient, request: Request, passed: list[tuple[str, str]],
        body: bytes, identity: Identity | None,
    ) -> Response:  # fmt: skip
        answer = await self.forward(client, request, passed, body, identity)
        if answer.status_code != 200:
            return answer
        page = json.loads(bytes(answer.body))
        page.pop("cell", None)
        return _json({**page, "unreachable": []})

    async def _to_ha(
        self, request: Request, parts: list[str], params: Any, passed: list[tuple[str, str]],
        body: bytes, identity: Identity | None,
    ) -> Response:  # fmt: skip
        """HA groups and affinity rules live in a cell (its scheduler reads them): lists
        gathered from every cell; one by name from the cell that has it; a new group to its
        first node's cell, a new rule to its first VM's (or `cell`, or the only cell)."""
        kind = parts[1]
        if len(parts) == 3:
            what = "HA group" if kind == "groups" else "affinity rule"
            path = f"/ha/{kind}/{parts[2]}"
            client = await self._routes.find(what, parts[2], path, identity)
            return await self.forward(client, request, passed, body, identity)
        if request.method == "GET":
            return _json(await self._gather.page(HA_LISTS[kind], params, identity, passed))
        given = _json_body(body)
        if given.get("cell") or len(self._cells.names()) == 1:
            client = await self._placement.cell_for(given, identity, what=kind[:-1])
        elif kind == "groups" and isinstance(given.get("nodes"), dict) and given["nodes"]:
            client = await self._routes.node(str(next(iter(given["nodes"]))), identity)
        elif kind == "rules" and isinstance(given.get("vms"), list) and given["vms"]:
            client = await self._routes.vm(str(given["vms"][0]), identity)
        else:
            client = await self._placement.cell_for(given, identity, what=kind[:-1])
        return await self.forward(client, request, passed, _strip_cell(body), identity)

    async def _with_own(self, answer: Response, head: str, params: Any) -> Response:
        """A VM's tasks or migration records from its cell, with the API server's own (its
        moves between cells) in the list's order."""
        page = json.loads(bytes(answer.body))
        limit = int(params.get("limit") or 100)
        own = await self._records.of_vm(head, str(params["vm"]), limit)
        if not own:
            return answer
        newest = head == "migrations" or params.get("order") == "newest"
        items = sorted([*page["items"], *own], key=lambda i: str(i["id"]), reverse=newest)
        page["items"] = items[:limit] if newest else items
        page["total"] = int(page.get("total", 0)) + len(own)
        return _json(page)

    async def _to_vm(
        self, name: str, request: Request, passed: list[tuple[str, str]], body: bytes,
        identity: Identity | None,
    ) -> Response:  # fmt: skip
        tail = "/".join(request.path_params["path"].strip("/").split("/")[2:])
        record = await self._moves.guard(name, request.method, tail)
        client = await self._routes.vm(name, identity)
        if tail == "console/vnc" and request.method == "POST":
            answer = await self.forward(client, request, passed, body, identity)
            if answer.status_code == 201:
                issued = json.loads(bytes(answer.body))
                self._consoles.issued(
                    str(issued["ticket"]), client.name,
                    datetime.fromisoformat(str(issued["expires_at"]).replace("Z", "+00:00")),
                )  # fmt: skip
            return answer
        flavor = _json_body(body).get("flavor") if request.method == "POST" else None
        if isinstance(flavor, str) and request.path_params["path"].endswith("/resize"):
            await self._placement.flavor_sync.ensure(flavor, client)
        answer = await self.forward(client, request, passed, body, identity)
        if (
            record is not None
            and request.method == "GET"
            and tail == ""
            and answer.status_code == 200
        ):
            vm = self._moves.overlay(json.loads(bytes(answer.body)), record)
            return _json(vm)
        if answer.status_code != 404:
            return answer
        # Is it the VM that is missing there (a stale mapping) or something under it?
        check = await client.call("GET", f"/vms/{name}", identity=identity)
        if check.status_code != 404:
            return answer
        moved = await self._routes.relocate_vm(name, identity, stale=client.name)
        return await self.forward(moved, request, passed, body, identity)

    async def _to_node(
        self, name: str, request: Request, passed: list[tuple[str, str]], body: bytes,
        identity: Identity | None,
    ) -> Response:  # fmt: skip
        client = await self._routes.node(name, identity)
        answer = await self.forward(client, request, passed, body, identity)
        if answer.status_code == 404:
            check = await client.call("GET", f"/nodes/{name}", identity=identity)
            if check.status_code == 404:
                moved = await self._routes.relocate_node(name, identity, stale=client.name)
                return await self.forward(moved, request, passed, body, identity)
        if request.method == "DELETE" and answer.status_code < 300:
            await self._placement.unmapped_node(name)
        return answer

    async def _everywhere_list(
        self, path: str, passed: list[tuple[str, str]], identity: Identity | None
    ) -> dict[str, Any]:
        """An unpaged list (pools, the reconciliation scan) from every cell, concatenated."""
        clients = self._cells.clients()
        answers = await asyncio.gather(
            *(c.json("GET", "/" + path, params=passed, identity=identity) for c in clients),
            return_exceptions=True,
        )
        merged: dict[str, Any] = {"unreachable": []}
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, CellUnreachable):
                merged["unreachable"].append({"cell": client.name, "error": answer.error})
                continue
            if isinstance(answer, BaseException):
                raise answer
            for key, value in add_cell(answer, client.name).items():
                if isinstance(value, list):
                    if key == "differences":
                        for item in value:
                            with_cell(item, client.name)
                    merged.setdefault(key, []).extend(value)
                elif isinstance(value, int) and not isinstance(value, bool):
                    merged[key] = merged.get(key, 0) + value
                elif isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
                    into = merged.setdefault(key, {})
                    for k, v in value.items():
                        into[k] = into.get(k, 0) + v
                elif key not in merged:
                    merged[key] = value
        if "items" in merged:
            merged["items"].sort(key=lambda i: (str(i.get("name")), str(i.get("cell"))))
            merged["next_cursor"] = None
        merged.pop("cell", None)
        return merged

    async def every_cell(
        self, request: Request, path: str, passed: list[tuple[str, str]], body: bytes,
        identity: Identity | None,
    ) -> Response:  # fmt: skip
        """A cluster-wide read or change, asked of every cell. A read answers the first
        cell's answer with `cells` (each cell's own); a change answers 200 only if every cell
        took it, else the first refusal or 503 naming the cells that did not answer."""
        clients = self._cells.clients()
        headers = {k: request.headers[k] for k in PASSED_HEADERS if k in request.headers}
        answers = await asyncio.gather(
            *(
                c.call(request.method, "/" + path, params=passed, content=body or None,
                       headers=headers, identity=identity)
                for c in clients
            ),
            return_exceptions=True,
        )  # fmt: skip
        per_cell: dict[str, Any] = {}
        silent: list[CellUnreachable] = []
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, CellUnreachable):
                silent.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer.status_code >= 400:
                raise refusal(client.name, answer)
            else:
                per_cell[client.name] = answer.json() if answer.content else None
        if (silent and request.method != "GET") or not per_cell:
            done = ", ".join(per_cell) or "none"
            first = silent[0]
            raise CellUnreachable(first.cell, f"{first.error} (taken by: {done})")
        first_answer = next(iter(per_cell.values()))
        if isinstance(first_answer, dict):
            silent_cells = [{"cell": u.cell, "error": u.error} for u in silent]
            return _json({**first_answer, "cells": per_cell, "unreachable": silent_cells})
        if isinstance(first_answer, list):
            return _json(_merge_settings(per_cell))
        return Response(status_code=204)

    async def _own(
        self, request: Request, parts: list[str], params: Any, body: bytes,
        identity: Identity | None,
    ) -> Response | None:  # fmt: skip
        """What the API server answers itself, or None: its own tasks and migration records,
        its own settings, and the moves of VMs between cells (moves.py)."""
        method, head = request.method, parts[0]
        if head == "tasks" and len(parts) >= 2:
            wait = params.get("timeout") if parts[2:] == ["wait"] else None
            if method == "GET":
                task = await self._records.task(
                    parts[1],
                    wait=None if wait is None and parts[2:] != ["wait"] else float(wait or 30),
                )
                return None if task is None else _json(task)
            if await self._records.task(parts[1]) is not None:
                raise Conflict(f"task {parts[1]} moves a VM between cells: it cannot be cancelled")
            return None
        if head == "migrations" and len(parts) == 2 and method == "GET":
            record = await self._records.migration(parts[1])
            return None if record is None else _json(record)
        if head == "settings":
            return await self._settings.handle(request, parts, body, self, identity)
        if head != "vms" or len(parts) < 3 or method != "POST":
            return None
        name, tail = parts[1], "/".join(parts[2:])
        if tail == "resize":
            started = await self._moves.resize(name, _json_body(body), identity)
        elif tail == "migrate":
            started = await self._moves.migrate(name, _json_body(body), identity)
        elif tail in ("resize/confirm", "resize/revert"):
            ended = await self._moves.end(name, tail.split("/")[1])
            return None if ended is None else await self._vm_task(name, ended["id"], identity)
        else:
            return None
        if started is None:
            return None
        return await self._vm_task(name, started[0]["id"], identity)

    async def _vm_task(self, name: str, task_id: str, identity: Identity | None) -> Response:
        """202 with the VM (as its move shows it) and the API server's task."""
        task = await self._records.task(task_id)
        client = await self._routes.vm(name, identity)
        vm = add_cell(await client.json("GET", f"/vms/{name}", identity=identity), client.name)
        vm = self._moves.overlay(vm, await self._moves.find(name))
        return _json({"vm": vm, "task": task}, status=202)


def _merge_settings(per_cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Settings lists of every cell as one: each key once, with `cells` (each cell's value)
    when they differ."""
    merged: dict[str, dict[str, Any]] = {}
    for cell, items in per_cell.items():
        for item in items:
            key = item.get("key")
            seen = merged.setdefault(key, {**item, "cells": {}})
            seen["cells"][cell] = item.get("value")
    for item in merged.values():
        if len({json.dumps(v, sort_keys=True) for v in item["cells"].values()}) <= 1:
            item["cells"] = None
    return list(merged.values())


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type="application/json")


def _json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def _strip_cell(body: bytes) -> bytes:
    data = _json_body(body)
    data.pop("cell", None)
    return json.dumps(data).encode()
