"""Queries on cells and on the host and VM mappings (the API database, domain/cells.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bollard.domain.cells import Cell, Mapping
from bollard.domain.errors import AlreadyExists, NotFound
from bollard.store.db import utc
from bollard.store.tables import cells, host_mappings, vm_mappings


def _cell(row: Row[Any]) -> Cell:
    m = row._mapping
    return Cell(
        name=m["name"],
        url=m["url"],
        ca_pem=m["ca_pem"],
        disabled=bool(m["disabled"]),
        weight_multiplier=m["weight_multiplier"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
    )


def create(
    conn: Connection, *, name: str, url: str, token_sealed: str, ca_pem: str | None, now: datetime
) -> Cell:
    if find(conn, name) is not None:
        raise AlreadyExists(f"a cell named {name!r} exists")
    conn.execute(
        insert(cells).values(
            name=name, url=url, token_sealed=token_sealed, ca_pem=ca_pem, disabled=False,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return get(conn, name)


def find(conn: Connection, name: str) -> Cell | None:
    row = conn.execute(select(cells).where(cells.c.name == name)).first()
    return None if row is None else _cell(row)


def get(conn: Connection, name: str) -> Cell:
    found = find(conn, name)
    if found is None:
        raise NotFound(f"no cell named {name!r} (`bollard cell list` shows the cells)")
    return found


def all_cells(conn: Connection) -> list[Cell]:
    return [_cell(r) for r in conn.execute(select(cells).order_by(cells.c.name))]


def sealed_tokens(conn: Connection) -> dict[str, str]:
    rows = conn.execute(select(cells.c.name, cells.c.token_sealed))
    return {r.name: r.token_sealed for r in rows}


def change(conn: Connection, name: str, now: datetime, **values: Any) -> Cell:
    get(conn, name)
    allowed = {"url", "token_sealed", "ca_pem", "disabled", "weight_multiplier"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not a cell column: {sorted(unknown)}")
    conn.execute(update(cells).where(cells.c.name == name).values(updated_at=now, **values))
    return get(conn, name)


def remove(conn: Connection, name: str) -> None:
    get(conn, name)
    conn.execute(delete(cells).where(cells.c.name == name))


def mapped_counts(conn: Connection) -> dict[str, tuple[int, int]]:
    """cell -> (nodes, VMs) mapped to it."""
    counts: dict[str, tuple[int, int]] = {}
    for row in conn.execute(
        select(host_mappings.c.cell, func.count()).group_by(host_mappings.c.cell)
    ):
        counts[row[0]] = (int(row[1]), 0)
    for row in conn.execute(select(vm_mappings.c.cell, func.count()).group_by(vm_mappings.c.cell)):
        nodes_of = counts.get(row[0], (0, 0))[0]
        counts[row[0]] = (nodes_of, int(row[1]))
    return counts


# --- VM mappings ---------------------------------------------------------------------------


def vm_cell(conn: Connection, name: str) -> Mapping | None:
    row = conn.execute(select(vm_mappings).where(vm_mappings.c.name == name)).first()
    if row is None:
        return None
    return Mapping(name=row.name, cell=row.cell, uuid=row.uuid)


def map_vm(
    conn: Connection, name: str, cell: str, now: datetime, *, uuid: str | None = None
) -> None:
    """Insert a new mapping (AlreadyExists naming the cell if the name is mapped)."""
    found = vm_cell(conn, name)
    if found is not None:
        raise AlreadyExists(f"a VM named {name!r} exists (in cell {found.cell})")
    conn.execute(
        insert(vm_mappings).values(name=name, uuid=uuid, cell=cell, created_at=now, updated_at=now)
    )


def map_vm_if_unmapped(
    conn: Connection, name: str, cell: str, now: datetime, *, uuid: str | None = None
) -> bool:
    """Map `name` to `cell` unless a mapping exists, also one another transaction has just
    written (the discovery sweep and a move's flip may map one VM at once); whether it
    mapped."""
    if vm_cell(conn, name) is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                insert(vm_mappings).values(
                    name=name, uuid=uuid, cell=cell, created_at=now, updated_at=now
                )
            )
    except IntegrityError:
        return False  # mapped meanwhile
    return True


def set_vm(conn: Connection, name: str, cell: str, now: datetime, *, uuid: str | None) -> bool:
    """Point `name` at `cell` (inserting it if unmapped); True if anything changed."""
    if map_vm_if_unmapped(conn, name, cell, now, uuid=uuid):
        return True
    found = vm_cell(conn, name)
    if found is None:  # unmapped again between the two reads: map it now
        map_vm(conn, name, cell, now, uuid=uuid)
        return True
    if found.cell == cell and (uuid is None or found.uuid == uuid):
        return False
    values: dict[str, Any] = {"cell": cell, "updated_at": now}
    if uuid is not None:
        values["uuid"] = uuid
    conn.execute(update(vm_mappings).where(vm_mappings.c.name == name).values(**values))
    return True


def unmap_vm(conn: Connection, name: str, *, cell: str | None = None) -> bool:
    """Remove `name`'s mapping (only if it points at `cell`, when given)."""
    query = delete(vm_mappings).where(vm_mappings.c.name == name)
    if cell is not None:
        query = query.where(vm_mappings.c.cell == cell)
    return conn.execute(query).rowcount > 0


def vms_of_cell(
    conn: Connection, cell: str, *, after: str | None, limit: int, descending: bool = False
) -> list[Mapping]:
    """A cell's mapped VMs in name order after `after` (a cell that did not answer a list)."""
    query = select(vm_mappings).where(vm_mappings.c.cell == cell)
    if after is not None:
        query = query.where(
            vm_mappings.c.name < after if descending else vm_mappings.c.name > after
        )
    order = vm_mappings.c.name.desc() if descending else vm_mappings.c.name
    rows = conn.execute(query.order_by(order).limit(limit))
    return [Mapping(name=r.name, cell=r.cell, uuid=r.uuid) for r in rows]


def vm_count(conn: Connection, cell: str) -> int:
    query = select(func.count()).select_from(vm_mappings).where(vm_mappings.c.cell == cell)
    return int(conn.execute(query).scalar_one())


def vm_names_of_cell(conn: Connection, cell: str) -> set[str]:
    rows = conn.execute(select(vm_mappings.c.name).where(vm_mappings.c.cell == cell))
    return {r.name for r in rows}


# --- host mappings -------------------------------------------------------------------------


def node_cell(conn: Connection, node: str) -> str | None:
    row = conn.execute(select(host_mappings.c.cell).where(host_mappings.c.node == node)).first()
    return None if row is None else str(row.cell)


def nodes_of_cell(
    conn: Connection, cell: str, *, after: str | None = None, limit: int | None = None
) -> list[str]:
    query = select(host_mappings.c.node).where(host_mappings.c.cell == cell)
    if after is not None:
        query = query.where(host_mappings.c.node > after)
    query = query.order_by(host_mappings.c.node)
    if limit is not None:
        query = query.limit(limit)
    return [r.node for r in conn.execute(query)]


def sync_nodes(conn: Connection, cell: str, nodes: Iterable[str], now: datetime) -> int:
    """Make the cell's host mappings exactly `nodes` (a full list the cell gave); a node
    mapped to another cell moves here (it was deleted there and enrolled here). Returns the
    number of mappings changed."""
    wanted = set(nodes)
    have = set(nodes_of_cell(conn, cell))
    changed = 0
    gone = have - wanted
    if gone:
        changed += conn.execute(
            delete(host_mappings).where(
                host_mappings.c.cell == cell, host_mappings.c.node.in_(sorted(gone))
            )
        ).rowcount
    for node in sorted(wanted - have):
        if node_cell(conn, node) is None:
            conn.execute(insert(host_mappings).values(node=node, cell=cell, updated_at=now))
        else:
            conn.execute(
                update(host_mappings)
                .where(host_mappings.c.node == node)
                .values(cell=cell, updated_at=now)
            )
        changed += 1
    return changed


def map_node(conn: Connection, node: str, cell: str, now: datetime) -> None:
    if node_cell(conn, node) is None:
        conn.execute(insert(host_mappings).values(node=node, cell=cell, updated_at=now))
    else:
        conn.execute(
            update(host_mappings)
            .where(host_mappings.c.node == node)
            .values(cell=cell, updated_at=now)
        )


def unmap_node(conn: Connection, node: str) -> None:
    conn.execute(delete(host_mappings).where(host_mappings.c.node == node))


def mapped_before(conn: Connection, name: str, when: datetime) -> bool:
    row = conn.execute(select(vm_mappings.c.updated_at).where(vm_mappings.c.name == name)).first()
    return row is not None and (utc(row.updated_at) or row.updated_at) < when
