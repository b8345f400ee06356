"""/api/v1/cells and /api/v1/status of the API server."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from bollard import __version__
from bollard.cells.directory import CellClient, CellUnreachable
from bollard.cells.services import CellsDep
from bollard.domain.cells import Cell, check_cell_name, check_cell_url
from bollard.domain.errors import BollardError, Conflict, InvalidInput
from bollard.server.api.deps import IdentityDep
from bollard.server.api.schemas import CellState, Counts, StatusOut, Unreachable, VmCounts
from bollard.store import cells, events

router = APIRouter(tags=["cells"])

CellName = Annotated[str, Path(description="The cell's name.", max_length=63)]


class CellOut(BaseModel):
    name: str
    url: str
    disabled: bool
    state: Literal["up", "unreachable", "unknown"]
    error: str | None
    checked_at: datetime | None
    latency_ms: float | None
    version: str | None
    database: str | None
    weight_multiplier: float | None = Field(
        description="How much a VM of this cell moving between cells prefers its nodes "
        "(null: the setting scheduler.cross_cell_weight_multiplier); negative drains it."
    )
    nodes: int = Field(description="Nodes mapped to the cell.")
    vms: int = Field(description="VMs mapped to the cell.")
    created_at: datetime


class CellDetail(CellOut):
    status: dict[str, Any] | None = Field(description="The cell's own /status (null: silent).")
    node_names: list[str]


class CellPage(BaseModel):
    items: list[CellOut]
    total: int


class CellCreate(BaseModel):
    name: str = Field(max_length=63)
    url: str = Field(max_length=500)
    token: str = Field(
        min_length=1, max_length=500, description="The cell server's admin token (write-only)."
    )
    ca_pem: str | None = Field(
        default=None, max_length=65536, description="The CA its TLS certificate is signed by."
    )


class CellUpdate(BaseModel):
    url: str | None = Field(default=None, max_length=500)
    token: str | None = Field(default=None, min_length=1, max_length=500)
    ca_pem: str | None = Field(default=None, max_length=65536)
    disabled: bool | None = None
    weight_multiplier: float | None = Field(default=None, ge=-1e9, le=1e9)


def _out(client: CellClient | None, cell: Cell, counts: tuple[int, int]) -> dict[str, Any]:
    seen = client.seen if client is not None else None
    return {
        "name": cell.name, "url": cell.url, "disabled": cell.disabled,
        "weight_multiplier": cell.weight_multiplier,
        "state": seen.state if seen else "unknown", "error": seen.error if seen else None,
        "checked_at": seen.checked_at if seen else None,
        "latency_ms": seen.latency_ms if seen else None,
        "version": seen.version if seen else None, "database": seen.database if seen else None,
        "nodes": counts[0], "vms": counts[1], "created_at": cell.created_at,
    }  # fmt: skip


@router.get("/cells", response_model=CellPage)
async def list_cells(s: CellsDep) -> CellPage:
    def read() -> tuple[list[Cell], dict[str, tuple[int, int]]]:
        with s.work.read() as conn:
            return cells.all_cells(conn), cells.mapped_counts(conn)

    found, counts = await s.work.run(read)
    items = [
        CellOut(**_out(s.directory.find(c.name), c, counts.get(c.name, (0, 0)))) for c in found
    ]
    return CellPage(items=items, total=len(items))


@router.get("/cells/{name}", response_model=CellDetail)
async def show_cell(name: CellName, s: CellsDep) -> CellDetail:
    def read() -> tuple[Cell, tuple[int, int], list[str]]:
        with s.work.read() as conn:
            cell = cells.get(conn, name)
            counts = cells.mapped_counts(conn).get(name, (0, 0))
            return cell, counts, cells.nodes_of_cell(conn, name)

    cell, counts, node_names = await s.work.run(read)
    client = s.directory.find(name)
    if client is not None:
        await s.directory.check(client)
    status = client.seen.status if client is not None else None
    return CellDetail(**_out(client, cell, counts), status=status, node_names=node_names)


async def _probe(s: CellsDep, name: str, url: str, token: str, ca_pem: str | None) -> None:
    """Refuse (422, one line) a cell that does not answer its status with this token, or that
    is itself an API server."""
    probe = Cell(name, url, ca_pem, False, s.clock.now(), s.clock.now())
    http = s.directory.client_for(probe, token)
    try:
        answer = await CellClient(probe, http, s.directory.deadline).json("GET", "/status")
    except BollardError as exc:
        raise InvalidInput(f"{name}: {url}: {exc.message}") from None
    finally:
        await http.aclose()
    if answer.get("mode") == "cells":
        raise InvalidInput(f"{name}: {url} is an API server, not a cell")


@router.post("/cells", status_code=201, response_model=CellOut)
async def create_cell(body: CellCreate, s: CellsDep) -> CellOut:
    """Add a cell: a `bollard server` with its own database, reached at `url` with its admin
    token (kept encrypted, never shown). The API server checks that the cell answers first."""
    check_cell_name(body.name)
    url = check_cell_url(body.url)
    await _probe(s, body.name, url, body.token, body.ca_pem)

    def tx() -> Cell:
        with s.work.write() as conn:
            now = s.clock.now()
            cell = cells.create(
                conn, name=body.name, url=url, token_sealed=s.directory.seal(body.token),
                ca_pem=body.ca_pem, now=now,
            )  # fmt: skip
            events.add(conn, "cell.created", f"cell {body.name} added at {url}", now,
                       data={"cell": body.name})  # fmt: skip
            return cell

    cell = await s.work.run(tx)
    await s.directory.reload()
    client = s.directory.get(cell.name)
    await s.directory.check(client)
    s.discover()
    return CellOut(**_out(client, cell, (0, 0)))


@router.patch("/cells/{name}", response_model=CellOut)
async def update_cell(name: CellName, body: CellUpdate, s: CellsDep) -> CellOut:
    """Change a cell's address, token or CA (checked as at creation), or disable it (it then
    gets no new VMs; everything else goes on)."""

    def current() -> tuple[Cell, str]:
        with s.work.read() as conn:
            return cells.get(conn, name), cells.sealed_tokens(conn)[name]

    cell, sealed = await s.work.run(current)
    values: dict[str, Any] = {}
    if body.url is not None:
        values["url"] = check_cell_url(body.url)
    if body.token is not None:
        values["token_sealed"] = s.directory.seal(body.token)
    if "ca_pem" in body.model_fields_set:
        values["ca_pem"] = body.ca_pem
    if body.disabled is not None:
        values["disabled"] = body.disabled
    if "weight_multiplier" in body.model_fields_set:
        values["weight_multiplier"] = body.weight_multiplier
    if {"url", "token_sealed", "ca_pem"} & set(values):
        token = body.token or s.directory.token(sealed)
        ca = values.get("ca_pem", cell.ca_pem)
        await _probe(s, name, values.get("url", cell.url), token, ca)

    def tx() -> tuple[Cell, tuple[int, int]]:
        with s.work.write() as conn:
            now = s.clock.now()
            changed = cells.change(conn, name, now, **values)
            what = ", ".join(sorted(k.replace("_sealed", "") for k in values)) or "nothing"
            events.add(conn, "cell.changed", f"cell {name} changed: {what}", now,
                       data={"cell": name})  # fmt: skip
            return changed, cells.mapped_counts(conn).get(name, (0, 0))

    changed, counts = await s.work.run(tx)
    await s.directory.reload()
    return CellOut(**_out(s.directory.find(name), changed, counts))


@router.delete("/cells/{name}", status_code=204, response_class=Response)
async def delete_cell(name: CellName, s: CellsDep) -> Response:
    """Remove a cell that has no node and no VM mapped to it (409 otherwise)."""

    def tx() -> None:
        with s.work.write() as conn:
            cells.get(conn, name)
            n_nodes, n_vms = cells.mapped_counts(conn).get(name, (0, 0))
            if n_nodes or n_vms:
                raise Conflict(f"cell {name} still has {n_nodes} nodes and {n_vms} VMs")
            cells.remove(conn, name)
            events.add(conn, "cell.deleted", f"cell {name} removed", s.clock.now(),
                       data={"cell": name})  # fmt: skip

    await s.work.run(tx)
    await s.directory.reload()
    return Response(status_code=204)


@router.get("/status", response_model=StatusOut)
async def status(s: CellsDep, identity: IdentityDep) -> StatusOut:
    """The sums over the cells that answered, each cell's state, and those that did not."""
    clients = s.directory.clients()
    answers = await asyncio.gather(
        *(c.json("GET", "/status", identity=identity) for c in clients), return_exceptions=True
    )
    nodes = Counts(total=0, connected=0)
    by_status: dict[str, int] = {}
    running = 0
    maintenance = False
    states: list[CellState] = []
    unreachable: list[Unreachable] = []
    for client, answer in zip(clients, answers, strict=True):
        if isinstance(answer, CellUnreachable | httpx.HTTPError):
            error = answer.error if isinstance(answer, CellUnreachable) else str(answer)
            s.directory.mark(client.name, error)
            states.append(CellState(name=client.name, state="unreachable", error=error))
            unreachable.append(Unreachable(cell=client.name, error=error))
            continue
        if isinstance(answer, BaseException):
            raise answer
        s.directory.mark(client.name, None)
        states.append(CellState(name=client.name, state="up", error=None))
        nodes.total += int(answer["nodes"]["total"])
        nodes.connected += int(answer["nodes"]["connected"])
        for key, n in answer["vms"]["by_status"].items():
            by_status[key] = by_status.get(key, 0) + int(n)
        running += int(answer.get("tasks_running", 0))
        maintenance = maintenance or bool(answer.get("maintenance"))
    return StatusOut(
        version=__version__,
        database=s.db_kind,
        nodes=nodes,
        vms=VmCounts(total=sum(by_status.values()), by_status=by_status),
        tasks_running=running,
        maintenance=maintenance,
        mode="cells",
        cells=states,
        unreachable=unreachable,
    )
