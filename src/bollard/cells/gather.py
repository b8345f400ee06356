"""Lists gathered from every cell: one page of each, merged in the list's order.

A page through the API server is a page of each cell merged by the list's key (a name, or a
time-ordered id). Its cursor is opaque to clients: it holds each cell's own cursor (the key of
the last item taken from that cell, or "done"), so the next page goes on from there in every
cell at once and nothing is skipped or repeated. Each cell has the deadline; a cell that does
not answer is named in `unreachable`, and its VMs (or nodes) are still listed, from the
mappings, with status UNKNOWN.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bollard.cells.directory import CellClient, CellDirectory, CellUnreachable, refusal
from bollard.domain.errors import BollardError, InvalidInput
from bollard.domain.policy import Identity
from bollard.server.ports import UnitOfWork
from bollard.store import cells
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor

DONE = "done:"  # a cell whose list is exhausted: "done:<its total>"
_PREFIX = "cells:"

Filler = Callable[[Any, str, str | None, int, bool], list[dict[str, Any]]]
# A cell's next keys of the list after a key, from the API database's mappings (conn, cell,
# after, limit) -> keys in ascending order.
Planner = Callable[[Any, str, str | None, int], list[str]]


@dataclass(frozen=True)
class ListKind:
    """A list the cells page by `key`: ascending, or descending when `descending(params)`."""

    path: str
    key: str
    order_param: str | None = None  # "order": oldest | newest
    newest_first: bool = False  # the list's only order is newest first
    filler: Filler | None = None  # items for a cell that did not answer, from the mappings
    planner: Planner | None = None  # each cell's share of a page, from the mappings

    def descending(self, params: Mapping[str, str]) -> bool:
        if self.newest_first:
            return True
        return self.order_param is not None and params.get(self.order_param) == "newest"


def _vm_filler(
    conn: Any, cell: str, after: str | None, limit: int, desc: bool
) -> list[dict[str, Any]]:
    found = cells.vms_of_cell(conn, cell, after=after, limit=limit, descending=desc)
    return [
        {"name": m.name, "uuid": m.uuid, "cell": cell, "status": "UNKNOWN", "unreachable": True}
        for m in found
    ]


def _node_filler(
    conn: Any, cell: str, after: str | None, limit: int, desc: bool
) -> list[dict[str, Any]]:
    names = cells.nodes_of_cell(conn, cell, after=after, limit=limit)
    return [{"name": n, "cell": cell, "health": "unknown", "unreachable": True} for n in names]


def _vm_keys(conn: Any, cell: str, after: str | None, limit: int) -> list[str]:
    return [m.name for m in cells.vms_of_cell(conn, cell, after=after, limit=limit)]


def _node_keys(conn: Any, cell: str, after: str | None, limit: int) -> list[str]:
    return cells.nodes_of_cell(conn, cell, after=after, limit=limit)


KINDS: dict[str, ListKind] = {
    "vms": ListKind("/vms", "name", filler=_vm_filler, planner=_vm_keys),
    "nodes": ListKind("/nodes", "name", filler=_node_filler, planner=_node_keys),
    "tasks": ListKind("/tasks", "id", order_param="order"),
    "commands": ListKind("/commands", "id", order_param="order"),
    "volumes": ListKind("/volumes", "name"),
    "migrations": ListKind("/migrations", "id", newest_first=True),
}


def encode(cursors: Mapping[str, str | None]) -> str:
    raw = json.dumps(dict(sorted(cursors.items())), separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> dict[str, str | None]:
    bad = InvalidInput("cursor: not a cursor this API server issued")
    if not cursor.startswith(_PREFIX):
        raise bad
    text = cursor[len(_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise bad
    return data


def _done(cursor: str | None) -> bool:
    return cursor is not None and cursor.startswith(DONE)


def with_cell(item: Any, cell: str) -> Any:
    if isinstance(item, dict):
        item["cell"] = cell
    return item


LOCAL = "api"  # the API server's own items of a list (its tasks, its migration records)
# A list's own items of the API server: (query parameters, cursor, limit) -> a page, blocking.
LocalPager = Callable[[Sequence[tuple[str, str]], str | None, int], dict[str, Any]]


class Gatherer:
    def __init__(
        self, *, work: UnitOfWork, directory: CellDirectory,
        local: Mapping[str, LocalPager] | None = None,
    ) -> None:  # fmt: skip
        self._work = work
        self._cells = directory
        self._local = dict(local or {})

    async def page(
        self, kind: ListKind, params: Mapping[str, str], identity: Identity | None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:  # fmt: skip
        """One merged page (see the module docstring). `params` are the client's query
        parameters (`cursor` and `limit` read here, the rest passed to every cell; `extra`
        repeats the repeated ones)."""
        limit = _limit(params.get("limit"))
        passed = [(k, v) for k, v in extra if k not in ("cursor", "limit", "cell")]
        clients = self._cells.clients()
        pager = self._local.get(kind.path)
        given = params.get("cursor")
        names = [c.name for c in clients] + ([LOCAL] if pager is not None else [])
        cursors: dict[str, str | None] = decode(given) if given else dict.fromkeys(names)
        desc = kind.descending(params)
        shares: dict[str, int] = {}
        if kind.planner is not None and pager is None and not passed and not desc:
            shares = await self._plan(kind.planner, names, cursors, limit)
        sources: dict[str, Callable[[str | None], Awaitable[dict[str, Any]]]] = {
            c.name: functools.partial(
                self._one, c, kind, passed, limit=shares.get(c.name, limit), identity=identity
            )
            for c in clients
        }
        if pager is not None:
            sources[LOCAL] = functools.partial(self._mine, pager, passed, limit=limit)
        asking = [name for name in sources if not _done(cursors.get(name))]
        answers = await asyncio.gather(
            *(sources[name](cursors.get(name)) for name in asking), return_exceptions=True
        )
        items: list[tuple[Any, str, dict[str, Any]]] = []
        totals = 0
        count: dict[str, int] = {}
        more: dict[str, bool] = {}
        unreachable: list[dict[str, str]] = []
        silent: list[str] = []
        for name, answer in zip(asking, answers, strict=True):
            if isinstance(answer, CellUnreachable):
                self._cells.mark(name, answer.error)
                unreachable.append({"cell": name, "error": answer.error})
                silent.append(name)
                continue
            if isinstance(answer, BaseException):
                raise answer
            if name != LOCAL:
                self._cells.mark(name, None)
            count[name] = int(answer.get("total", 0))
            totals += count[name]
            more[name] = answer.get("next_cursor") is not None
            for item in answer.get("items", []):
                shown = with_cell(item, name) if name != LOCAL else {**item, "cell": None}
                items.append((item.get(kind.key), name, shown))
        if silent and kind.filler is not None:
            filled, counted = await self._fill(kind, silent, cursors, limit, desc)
            count.update(counted)
            totals += sum(counted.values())
            for cell, found in filled.items():
                more[cell] = len(found) >= limit
                items.extend((i.get(kind.key), cell, i) for i in found)
        items.sort(key=lambda t: (str(t[0]), t[1]), reverse=desc)
        taken = items[:limit]
        last: dict[str, str] = {}
        for key, cell, _ in taken:
            last[cell] = str(key)
        fresh: dict[str, str | None] = {}
        for name in sources:
            before = cursors.get(name)
            done = f"{DONE}{count.get(name, 0)}"
            if _done(before):
                fresh[name] = before
                totals += int(str(before)[len(DONE) :] or 0)
            elif name in last:
                left = any(c == name for _, c, _ in items[limit:])
                fresh[name] = encode_cursor(last[name]) if left or more.get(name) else done
            elif name in more and not more[name] and not any(c == name for _, c, _ in items):
                fresh[name] = done  # answered, nothing (more) there
            else:
                fresh[name] = before  # not reached yet, or did not answer: ask again
        next_cursor = None if all(_done(v) for v in fresh.values()) else encode(fresh)
        return {
            "items": [item for _, _, item in taken],
            "next_cursor": next_cursor,
            "total": totals,
            "unreachable": unreachable,
        }

    async def _plan(
        self, planner: Planner, names: list[str], cursors: Mapping[str, str | None], limit: int
    ) -> dict[str, int]:
        """How many items of the page each cell holds, by the mappings: the page's first
        `limit` keys among every cell's next ones. A cell is then asked for its share only
        (at least one item, so that a VM the mappings do not know yet still shows and a
        cell's end of the list is still learnt from the cell itself), not for a whole page:
        with four cells, a page built 400 items for 100 shown. Mappings that lag (a VM made
        in a cell, not yet swept) can only change the order across cells at a page boundary,
        never skip or repeat an item: each cell's own cursor still says where it is."""

        def read() -> dict[str, int]:
            keys: list[tuple[str, str]] = []
            with self._work.read() as conn:
                for name in names:
                    cursor = cursors.get(name)
                    if _done(cursor):
                        continue
                    after = decode_cursor(cursor) if cursor else None
                    keys.extend((key, name) for key in planner(conn, name, after, limit))
            keys.sort()
            held = Counter(name for _, name in keys[:limit])
            return {name: max(1, held[name]) for name in names}

        return await self._work.run(read)

    async def _mine(
        self, pager: LocalPager, passed: list[tuple[str, str]], cursor: str | None, *,
        limit: int,
    ) -> dict[str, Any]:  # fmt: skip
        return await self._work.run(pager, passed, cursor, limit)

    async def _one(
        self, client: CellClient, kind: ListKind, passed: list[tuple[str, str]],
        cursor: str | None, *, limit: int, identity: Identity | None,
    ) -> dict[str, Any]:  # fmt: skip
        params = [*passed, ("limit", str(limit))]
        if cursor is not None:
            params.append(("cursor", cursor))
        reply = await client.call("GET", kind.path, params=params, identity=identity)
        if reply.status_code == 404:  # a filter naming what this cell does not have
            return {"items": [], "next_cursor": None, "total": 0}
        if reply.status_code >= 400:
            raise refusal(client.name, reply)
        answer = reply.json()
        if not isinstance(answer, dict):
            raise BollardError(f"cell {client.name}: {kind.path} answered no page")
        return answer

    async def _fill(
        self, kind: ListKind, silent: list[str], cursors: Mapping[str, str | None],
        limit: int, desc: bool,
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:  # fmt: skip
        filler = kind.filler
        assert filler is not None

        def read() -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
            found: dict[str, list[dict[str, Any]]] = {}
            counted: dict[str, int] = {}
            with self._work.read() as conn:
                for cell in silent:
                    given = cursors.get(cell)
                    after = decode_cursor(given) if given else None
                    found[cell] = filler(conn, cell, after, limit, desc)
                    counted[cell] = _count(conn, kind, cell)
            return found, counted

        return await self._work.run(read)


def _count(conn: Any, kind: ListKind, cell: str) -> int:
    if kind.path == "/vms":
        return cells.vm_count(conn, cell)
    return len(cells.nodes_of_cell(conn, cell))


def _limit(given: str | None) -> int:
    if given is None:
        return DEFAULT_LIMIT
    try:
        limit = int(given)
    except ValueError:
        raise InvalidInput("limit: not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}")
    return limit
