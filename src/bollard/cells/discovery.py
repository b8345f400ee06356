"""The API server's periodic look at every cell: is it up, which nodes does it have and how
much memory is free on them (placement.py), are its flavors those of the API database
(flavor_sync.py), and, less often, are the VM mappings those the cells hold (a VM made in a
cell directly is mapped; a mapping no cell backs is removed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from bollard.cells.directory import CellClient, CellDirectory
from bollard.cells.flavor_sync import FlavorSync
from bollard.cells.placement import Placement
from bollard.domain.errors import BollardError
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import cells
from bollard.store.pagination import MAX_LIMIT

log = logging.getLogger(__name__)

VM_SWEEP_EVERY = 6  # passes


class Discovery:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, directory: CellDirectory,
        placement: Placement, flavor_sync: FlavorSync, interval: float,
    ) -> None:  # fmt: skip
        self._work = work
        self._clock = clock
        self._cells = directory
        self._placement = placement
        self._flavors = flavor_sync
        self.interval = interval
        self._wake = asyncio.Event()
        self._passes = 0

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.once(sweep_vms=self._passes % VM_SWEEP_EVERY == 0)
            except (BollardError, KeyError, TypeError, ValueError) as exc:
                log.error("a discovery pass failed: %s", exc)
            self._passes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    async def once(self, *, sweep_vms: bool = True) -> None:
        await self._cells.reload()
        await asyncio.gather(*(self._one(c, sweep_vms) for c in self._cells.clients()))

    async def _one(self, client: CellClient, sweep_vms: bool) -> None:
        seen = await self._cells.check(client)
        if seen.state != "up":
            return
        try:
            nodes = await _all(client, "/nodes")
            free = sum(
                int(n.get("free", {}).get("memory_mb", 0))
                for n in nodes
                if n.get("connected") and n.get("health") == "up" and n.get("scheduling") == "ready"
            )
            self._placement.free_memory[client.name] = free
            await self._map_nodes(client.name, [str(n["name"]) for n in nodes])
            await self._flavors.sync(client)
            if sweep_vms:
                started = self._clock.now()
                vms = await _all(client, "/vms")
                await self._map_vms(client.name, vms, started)
        except BollardError as exc:
            self._cells.mark(client.name, exc.message)
            log.warning("discovery of cell %s stopped: %s", client.name, exc.message)

    async def _map_nodes(self, cell: str, names: list[str]) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                changed = cells.sync_nodes(conn, cell, names, self._clock.now())
            if changed:
                log.info("cell %s: %d host mappings changed", cell, changed)

        await self._work.run(tx)

    async def _map_vms(self, cell: str, vms: list[dict[str, Any]], started: datetime) -> None:
        """Map the cell's VMs no mapping names; remove mappings to this cell of VMs it does
        not have, made before the listing started (a newer one may be a VM being created)."""

        def tx() -> None:
            held = {str(v["name"]): v.get("uuid") for v in vms}
            now = self._clock.now()
            with self._work.write() as conn:
                # One read of the cell's mappings, then a look only at the names it lacks
                # (40,000 VMs a cell: one query each would cost the sweep most of a core).
                mine = cells.vm_names_of_cell(conn, cell)
                for name in held.keys() - mine:
                    if cells.map_vm_if_unmapped(conn, name, cell, now, uuid=held[name]):
                        log.info("VM %s found in cell %s: mapped", name, cell)
                for name in mine - held.keys():
                    if cells.mapped_before(conn, name, started):
                        cells.unmap_vm(conn, name, cell=cell)
                        log.info("VM %s is not in cell %s any more: unmapped", name, cell)

        await self._work.run(tx)


async def _all(client: CellClient, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": MAX_LIMIT}
        if cursor:
            params["cursor"] = cursor
        page = await client.json("GET", path, params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
