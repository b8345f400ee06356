"""Flavors with cells: the API database holds them; every cell holds a copy, id included
(`PUT /flavors/{name}` of a cell), so a cell resizes and creates VMs from its own database.

The API server pushes each change to every cell at once, before a VM is created or resized
in a cell (so the cell has the flavor then), and in every discovery pass (a cell that missed
a change catches up). A flavor's use is counted in the cells."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bollard.cells.directory import CellClient, CellDirectory, CellUnreachable
from bollard.domain.errors import BollardError, Conflict
from bollard.domain.flavors import Flavor
from bollard.domain.policy import Identity
from bollard.server.ports import UnitOfWork
from bollard.store import flavors
from bollard.store.pagination import MAX_LIMIT

log = logging.getLogger(__name__)


def replica(f: Flavor) -> dict[str, Any]:
    return {
        "id": f.id, "vcpus": f.vcpus, "memory_mb": f.memory_mb, "disk_mb": f.disk_mb,
        "description": f.description, "properties": f.properties,
    }  # fmt: skip


class FlavorSync:
    def __init__(self, *, work: UnitOfWork, directory: CellDirectory) -> None:
        self._work = work
        self._cells = directory

    def _all(self) -> list[Flavor]:
        found: list[Flavor] = []
        cursor = None
        with self._work.read() as conn:
            while True:
                page = flavors.list_page(conn, limit=MAX_LIMIT, cursor=cursor)
                found.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    return found

    async def push(self, flavor: Flavor, clients: list[CellClient] | None = None) -> None:
        """Give `flavor` to every cell (or `clients`); a cell that does not answer gets it at
        the next discovery pass (logged), a refusal is logged."""

        async def one(client: CellClient) -> None:
            try:
                await client.json("PUT", f"/flavors/{flavor.name}", json=replica(flavor))
            except BollardError as exc:
                log.warning("flavor %s not given to cell %s: %s", flavor.name, client.name, exc)

        await asyncio.gather(*(one(c) for c in clients or self._cells.clients()))

    async def ensure(self, name: str, client: CellClient) -> None:
        """Make sure `client`'s cell has flavor `name` as the API database has it (before a
        VM is created or resized there with it); nothing if there is no such flavor."""

        def read() -> Flavor | None:
            with self._work.read() as conn:
                return flavors.find(conn, name)

        flavor = await self._work.run(read)
        if flavor is not None:
            await client.json("PUT", f"/flavors/{flavor.name}", json=replica(flavor))

    async def remove(self, name: str) -> None:
        async def one(client: CellClient) -> None:
            try:
                answer = await client.call("DELETE", f"/flavors/{name}")
                if answer.status_code not in (204, 404):
                    log.warning("flavor %s not removed from cell %s", name, client.name)
            except CellUnreachable as exc:
                log.warning("flavor %s not removed from cell %s: %s", name, client.name, exc)

        await asyncio.gather(*(one(c) for c in self._cells.clients()))

    async def usage(self, identity: Identity | None) -> tuple[dict[str, int], list[dict[str, str]]]:
        """flavor name -> VMs using it, summed over the cells; and the cells that did not
        answer."""
        used: dict[str, int] = {}
        unreachable: list[dict[str, str]] = []

        async def one(client: CellClient) -> None:
            try:
                for item in await _pages(client, identity):
                    used[item["name"]] = used.get(item["name"], 0) + int(item["used_by"])
            except CellUnreachable as exc:
                unreachable.append({"cell": client.name, "error": exc.error})

        await asyncio.gather(*(one(c) for c in self._cells.clients()))
        return used, unreachable

    async def check_unused(self, name: str, identity: Identity | None) -> None:
        """Conflict if a cell has a VM of flavor `name`; CellUnreachable if a cell cannot
        tell."""
        used, unreachable = await self.usage(identity)
        if unreachable:
            first = unreachable[0]
            raise CellUnreachable(
                first["cell"], f"{first['error']} (it may have VMs of flavor {name})"
            )
        if used.get(name):
            raise Conflict(f"flavor {name} is in use by {used[name]} VMs in the cells")

    async def sync(self, client: CellClient) -> None:
        """Bring one cell's flavors in line with the API database: missing or different ones
        given, ones the API database does not have removed when unused."""
        wanted = {f.name: f for f in await self._work.run(self._all)}
        have = {i["name"]: i for i in await _pages(client, None)}
        for name, flavor in wanted.items():
            item = have.get(name)
            if item is None or any(item.get(k) != v for k, v in replica(flavor).items()):
                await self.push(flavor, [client])
        for name, item in have.items():
            if name not in wanted and not item.get("used_by"):
                await client.call("DELETE", f"/flavors/{name}")


async def _pages(client: CellClient, identity: Identity | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": MAX_LIMIT}
        if cursor:
            params["cursor"] = cursor
        page = await client.json("GET", "/flavors", params=params, identity=identity)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
