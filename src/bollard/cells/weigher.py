"""Where a VM moving between cells goes when no node is named: every cell's scheduler ranks
its own nodes for the VM's size (`POST /placement/candidates`, nothing claimed), and the
cross-cell weigher adds, to the nodes of the VM's own cell, the multiplier
(`scheduler.cross_cell_weight_multiplier`, 1,000,000 by default, or the cell's own
`weight_multiplier`), as Nova's CrossCellWeigher does: a VM stays in its cell while its cell
has room, unless the multiplier is negative (drain the cell).

Each cell's scores are normalised to 0..1 (its best node 1) before they are compared, so no
cell's selector outweighs another's; a cell that does not answer offers nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from bollard.cells.directory import CellClient, CellDirectory
from bollard.domain.errors import BollardError
from bollard.server.ports import SettingsReader, UnitOfWork

MULTIPLIER = "scheduler.cross_cell_weight_multiplier"


class Weigher:
    def __init__(
        self, *, work: UnitOfWork, directory: CellDirectory, settings: SettingsReader
    ) -> None:
        self._work = work
        self._cells = directory
        self._settings = settings

    async def best(
        self, own: str, vm: dict[str, Any], *, exclude: str | None
    ) -> tuple[str, str] | None:
        """(cell, node) of the best node for `vm` (its vcpus, memory_mb, disks and SR-IOV
        NICs), not `exclude`; None if no cell offers one."""
        ask = {
            "vcpus": int(vm["vcpus"]),
            "memory_mb": int(vm["memory_mb"]),
            "disks": [
                {"pool": d["pool"], "size_mb": d["size_mb"]}
                for d in vm.get("disks", [])
                if d.get("pool")
            ],
        }
        vfs = [
            {"sriov": n["sriov"], "mode": n.get("mode") or "macvtap"}
            for n in vm.get("nics", [])
            if n.get("sriov")
        ]
        if vfs:  # only where there are: a cell ranks its nodes by their free VFs too
            ask["nics"] = vfs
        clients = [c for c in self._cells.clients() if not c.cell.disabled or c.name == own]
        answers = await asyncio.gather(
            *(self._ask(c, ask) for c in clients), return_exceptions=True
        )
        own_client = self._cells.find(own)
        multiplier = (
            own_client.cell.weight_multiplier
            if own_client is not None and own_client.cell.weight_multiplier is not None
            else float(await self._work.run(self._settings.get, MULTIPLIER))
        )
        best: tuple[float, str, str] | None = None
        for client, answer in zip(clients, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, BollardError):
                    continue
                raise answer
            ranking = [r for r in answer if r["node"] != exclude]
            top = max((float(r["score"] or 0) for r in ranking), default=0.0) or 1.0
            for r in ranking:
                weight = float(r["score"] or 0) / top
                if client.name == own:
                    weight += multiplier
                key = (weight, client.name, str(r["node"]))
                if best is None or key[0] > best[0]:
                    best = key
        return None if best is None else (best[1], best[2])

    async def _ask(self, client: CellClient, ask: dict[str, Any]) -> list[dict[str, Any]]:
        answer = await client.json("POST", "/placement/candidates", json=ask)
        ranking: list[dict[str, Any]] = answer.get("ranking", [])
        return ranking
