"""Which cell a call goes to: a VM's and a node's from the mappings (learnt from the cells
and repaired whenever a cell says otherwise), anything else by asking every cell.

The mappings are a cache of what the cells hold, never trusted over them: a VM that its
mapped cell does not have is looked for in every cell, re-mapped where it is found and
unmapped when no cell has it. A cell that does not answer is never taken to lack anything.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from bollard.cells.directory import CellClient, CellDirectory, CellUnreachable
from bollard.domain.errors import Conflict, NotFound
from bollard.domain.policy import Identity
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import cells

log = logging.getLogger(__name__)


class Found:
    """The cells that have what was asked, and those that did not answer."""

    def __init__(self) -> None:
        self.having: list[tuple[CellClient, httpx.Response]] = []
        self.unreachable: list[CellUnreachable] = []

    def silent(self) -> str:
        return "; ".join(f"{u.cell}: {u.error}" for u in self.unreachable)


class Routes:
    def __init__(self, *, work: UnitOfWork, clock: Clock, directory: CellDirectory) -> None:
        self._work = work
        self._clock = clock
        self._cells = directory

    async def ask_all(
        self, path: str, identity: Identity | None, *, skip: str | None = None
    ) -> Found:
        """GET `path` of every cell (but `skip`) at once: which answered 200."""
        clients = [c for c in self._cells.clients() if c.name != skip]
        answers = await asyncio.gather(
            *(c.call("GET", path, identity=identity) for c in clients), return_exceptions=True
        )
        found = Found()
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, CellUnreachable):
                self._cells.mark(client.name, answer.error)
                found.unreachable.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer.status_code == 200:
                found.having.append((client, answer))
        return found

    async def find(self, kind: str, name: str, path: str, identity: Identity | None) -> CellClient:
        """The one cell that has `path` (a volume, a pool, a task...). NotFound if none has it
        (CellUnreachable if some did not answer); Conflict if several have it."""
        found = await self.ask_all(path, identity)
        if len(found.having) > 1:
            where = ", ".join(c.name for c, _ in found.having)
            raise Conflict(f"{kind} {name} exists in cells {where}: give ?cell=")
        if found.having:
            return found.having[0][0]
        if found.unreachable:
            first = found.unreachable[0]
            raise CellUnreachable(
                first.cell, f"{first.error} (no cell that answered has {kind} {name})"
            )
        raise NotFound(f"no {kind} named {name!r} in any cell")

    # --- VMs -----------------------------------------------------------------------------

    async def vm(self, name: str, identity: Identity | None) -> CellClient:
        """The cell of VM `name`: its mapping, else the cell that has it (then mapped)."""

        def read() -> str | None:
            with self._work.read() as conn:
                mapping = cells.vm_cell(conn, name)
            return None if mapping is None else mapping.cell

        mapped = await self._work.run(read)
        if mapped is not None and self._cells.find(mapped) is not None:
            return self._cells.get(mapped)
        return await self.relocate_vm(name, identity, stale=mapped)

    async def relocate_vm(
        self, name: str, identity: Identity | None, *, stale: str | None
    ) -> CellClient:
        """Look for VM `name` in every cell but `stale` (a cell whose mapping proved wrong),
        fix its mapping, and return its cell; NotFound (mapping removed) if no cell has it."""
        found = await self.ask_all(f"/vms/{name}", identity, skip=stale)
        if len(found.having) > 1:
            where = ", ".join(c.name for c, _ in found.having)
            log.warning("VM %s is listed by cells %s", name, where)
        if found.having:
            client, answer = found.having[0]
            uuid = str(answer.json().get("uuid") or "") or None
            await self.map_vm(name, client.name, uuid)
            return client
        if found.unreachable:
            first = found.unreachable[0]
            raise CellUnreachable(
                first.cell, f"{first.error} (VM {name} is in no cell that answered)"
            )
        await self.unmap_vm(name, stale)
        raise NotFound(f"no VM named {name!r}")

    async def map_vm(self, name: str, cell: str, uuid: str | None) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                if cells.set_vm(conn, name, cell, self._clock.now(), uuid=uuid):
                    log.info("VM %s mapped to cell %s", name, cell)

        await self._work.run(tx)

    async def unmap_vm(self, name: str, cell: str | None) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                if cells.unmap_vm(conn, name, cell=cell):
                    log.info("VM %s unmapped (no cell has it)", name)

        await self._work.run(tx)

    # --- nodes ---------------------------------------------------------------------------

    async def node(self, name: str, identity: Identity | None) -> CellClient:
        def read() -> str | None:
            with self._work.read() as conn:
                return cells.node_cell(conn, name)

        mapped = await self._work.run(read)
        if mapped is not None and self._cells.find(mapped) is not None:
            return self._cells.get(mapped)
        return await self.relocate_node(name, identity, stale=mapped)

    async def relocate_node(
        self, name: str, identity: Identity | None, *, stale: str | None
    ) -> CellClient:
        found = await self.ask_all(f"/nodes/{name}", identity, skip=stale)
        if found.having:
            client = found.having[0][0]

            def tx() -> None:
                with self._work.write() as conn:
                    cells.map_node(conn, name, client.name, self._clock.now())

            await self._work.run(tx)
            return client
        if found.unreachable:
            first = found.unreachable[0]
            raise CellUnreachable(
                first.cell, f"{first.error} (node {name} is in no cell that answered)"
            )
        if stale is not None:

            def forget() -> None:
                with self._work.write() as conn:
                    cells.unmap_node(conn, name)

            await self._work.run(forget)
        raise NotFound(f"no node named {name!r}")
