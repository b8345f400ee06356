"""Which cell a new VM, node, volume or pool goes to.

A VM goes to the cell asked for (`cell`), else its node's cell (`node`), else to the enabled
cells in order of free memory (as each cell's nodes last said, discovery.py), trying the next
when a cell has no room. Its VM mapping is written before the cell is asked, so the name is
taken in every cell at once; it is removed if the cell refuses, and kept (to be checked by
routing.py) if the cell did not answer, since the VM may then exist.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from bollard.cells.directory import CellClient, CellDirectory
from bollard.cells.flavor_sync import FlavorSync
from bollard.cells.routing import Routes
from bollard.domain.errors import AlreadyExists, InsufficientCapacity, InvalidInput
from bollard.domain.policy import Identity
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import cells

if TYPE_CHECKING:
    from bollard.cells.proxy import Proxy

log = logging.getLogger(__name__)

NO_ROOM = ("insufficient-capacity",)


class Placement:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, directory: CellDirectory, routes: Routes,
        flavor_sync: FlavorSync,
    ) -> None:  # fmt: skip
        self.flavor_sync = flavor_sync
        self._work = work
        self._clock = clock
        self._cells = directory
        self._routes = routes
        self.free_memory: dict[str, int] = {}  # cell -> MiB free on its ready nodes

    def named(self, name: str) -> CellClient:
        client = self._cells.find(name)
        if client is None:
            raise InvalidInput(f"cell: no cell named {name!r}")
        return client

    async def cell_for(
        self, body: dict[str, Any], identity: Identity | None, *, what: str
    ) -> CellClient:
        """The cell a new node, volume or pool goes to: `cell`, else its `node`'s, else the
        only cell; 422 when there are several and nothing says which."""
        if body.get("cell"):
            return self.named(str(body["cell"]))
        if what != "node" and body.get("node"):
            return await self._routes.node(str(body["node"]), identity)
        names = self._cells.names()
        if len(names) == 1:
            return self._cells.get(names[0])
        raise InvalidInput(f"cell: give the cell of the new {what} (cells: {', '.join(names)})")

    def candidates(self) -> list[CellClient]:
        enabled = [c for c in self._cells.clients() if not c.cell.disabled]
        return sorted(enabled, key=lambda c: (-self.free_memory.get(c.name, 0), c.name))

    async def create_vm(
        self, request: Request, body: dict[str, Any], identity: Identity | None, proxy: Proxy
    ) -> Response:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("name: required")
        asked = body.pop("cell", None)
        if asked:
            client = self.named(str(asked))
            if client.cell.disabled:
                raise InvalidInput(f"cell: cell {client.name} is disabled (it takes no new VMs)")
            tries = [client]
        elif body.get("node"):
            tries = [await self._routes.node(str(body["node"]), identity)]
        else:
            tries = self.candidates()
            if not tries:
                raise InsufficientCapacity("no enabled cell to create the VM in")
        content = json.dumps(body).encode()
        answer: Response | None = None
        for client in tries:
            if isinstance(body.get("flavor"), str):
                await self.flavor_sync.ensure(body["flavor"], client)
            await self._map(name, client.name)
            # If the cell does not answer, the VM may exist there: the mapping is kept and
            # routing.py checks it against the cell at the next call about the VM.
            answer = await proxy.forward(client, request, [], content, identity)
            if answer.status_code < 300:
                uuid = json.loads(bytes(answer.body)).get("vm", {}).get("uuid")
                await self._routes.map_vm(name, client.name, uuid)
                return answer
            await self._routes.unmap_vm(name, client.name)
            if _code(answer) not in NO_ROOM:
                return answer
        assert answer is not None
        return answer

    async def _map(self, name: str, cell: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                found = cells.vm_cell(conn, name)
                if found is not None:
                    raise AlreadyExists(f"a VM named {name!r} exists (in cell {found.cell})")
                cells.map_vm(conn, name, cell, self._clock.now())

        await self._work.run(tx)

    async def mapped_node(self, name: object, cell: str) -> None:
        if not isinstance(name, str):
            return

        def tx() -> None:
            with self._work.write() as conn:
                cells.map_node(conn, name, cell, self._clock.now())

        await self._work.run(tx)

    async def unmapped_node(self, name: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                cells.unmap_node(conn, name)

        await self._work.run(tx)


def _code(answer: Response) -> str | None:
    try:
        return str(json.loads(bytes(answer.body))["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None
