"""Which cell a new VM, node, volume or pool goes to.

A VM goes to the cell asked for (`cell`), else its node's cell (`node`), else to the enabled
cells in order of free memory (as each cell's nodes last said, discovery.py), trying the next
when a cell has no room. Its VM mapping is written before the cell is asked, so the name is
taken in every cell at once; it is removed if the cell refuses, and kept (to be checked by
routing.py) if the cell did not answer, since the VM may then exist. A batch (`POST
/vms/batch`, NAME-1 .. NAME-COUNT) goes whole to one cell, chosen as for one VM, its names
all mapped (or none) before that cell is asked.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from bollard.cells.directory import CellClient, CellDirectory
from bollard.cells.flavor_sync import FlavorSync
from bollard.cells.gather import with_cell
from bollard.cells.routing import Routes
from bollard.domain.errors import AlreadyExists, InsufficientCapacity, InvalidInput
from bollard.domain.policy import Identity
from bollard.server.clock import Clock
from bollard.server.operations.vm_batch import batch_names
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

    async def _tries(self, body: dict[str, Any], identity: Identity | None) -> list[CellClient]:
        """The cells a new VM may go to, in order (`cell` taken out of the body)."""
        asked = body.pop("cell", None)
        if asked:
            client = self.named(str(asked))
            if client.cell.disabled:
                raise InvalidInput(f"cell: cell {client.name} is disabled (it takes no new VMs)")
            return [client]
        if body.get("node"):
            return [await self._routes.node(str(body["node"]), identity)]
        tries = self.candidates()
        if not tries:
            raise InsufficientCapacity("no enabled cell to create the VM in")
        return tries

    async def create_vm(
        self, request: Request, body: dict[str, Any], identity: Identity | None, proxy: Proxy
    ) -> Response:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("name: required")
        tries = await self._tries(body, identity)
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

    async def create_batch(
        self, request: Request, body: dict[str, Any], identity: Identity | None, proxy: Proxy
    ) -> Response:
        """`POST /vms/batch`: the whole batch to one cell, tried as `create_vm` tries them
        (the next cell only when one has no room for all of it)."""
        name, count = body.get("name"), body.get("count")
        if not isinstance(name, str) or not name:
            raise InvalidInput("name: required")
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidInput("count: required, an integer (how many VMs)")
        names = batch_names(name, count)
        tries = await self._tries(body, identity)
        content = json.dumps(body).encode()
        answer: Response | None = None
        for client in tries:
            if isinstance(body.get("flavor"), str):
                await self.flavor_sync.ensure(body["flavor"], client)
            await self._map_all(names, client.name)
            answer = await proxy.forward(client, request, [], content, identity)
            if answer.status_code < 300:
                made = json.loads(bytes(answer.body))
                await self._set_uuids(client.name, [item["vm"] for item in made["items"]])
                for item in made["items"]:  # each VM and task says its cell, as one create's
                    with_cell(item["vm"], client.name)
                    with_cell(item["task"], client.name)
                return Response(json.dumps(made), status_code=answer.status_code,
                                media_type="application/json")  # fmt: skip
            await self._unmap_all(names, client.name)
            if _code(answer) not in NO_ROOM:
                return answer
        assert answer is not None
        return answer

    async def _map_all(self, names: list[str], cell: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                now = self._clock.now()
                for name in names:
                    cells.map_vm(conn, name, cell, now)  # AlreadyExists: none is mapped

        await self._work.run(tx)

    async def _unmap_all(self, names: list[str], cell: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                for name in names:
                    cells.unmap_vm(conn, name, cell=cell)

        await self._work.run(tx)

    async def _set_uuids(self, cell: str, made: list[dict[str, Any]]) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                now = self._clock.now()
                for vm in made:
                    if isinstance(vm.get("name"), str):
                        cells.set_vm(conn, vm["name"], cell, now, uuid=vm.get("uuid"))

        await self._work.run(tx)

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
