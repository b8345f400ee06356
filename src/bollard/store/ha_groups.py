"""Queries on HA groups (domain/ha.py): nodes with priorities, `restricted`, `nofailback`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from bollard.domain.errors import AlreadyExists, Conflict, NotFound
from bollard.domain.ha import HaGroup
from bollard.store.db import utc
from bollard.store.tables import ha_group_nodes, ha_groups, vms

_SHOWN = 10  # VM names listed in a refusal at most


def _nodes_of(conn: Connection, names: list[str]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {n: {} for n in names}
    if not names:
        return found
    rows = conn.execute(
        select(ha_group_nodes).where(ha_group_nodes.c.group_name.in_(names))
    ).mappings()
    for r in rows:
        found[r["group_name"]][r["node"]] = r["priority"]
    return found


def _group(m: RowMapping, nodes: dict[str, int]) -> HaGroup:
    return HaGroup(
        name=m["name"],
        nodes=nodes,
        restricted=bool(m["restricted"]),
        nofailback=bool(m["nofailback"]),
        description=m["description"] or "",
        created_at=utc(m["created_at"]),
        updated_at=utc(m["updated_at"]),
    )


def find(conn: Connection, name: str) -> HaGroup | None:
    row = conn.execute(select(ha_groups).where(ha_groups.c.name == name)).mappings().first()
    return None if row is None else _group(row, _nodes_of(conn, [name])[name])


def get(conn: Connection, name: str) -> HaGroup:
    found = find(conn, name)
    if found is None:
        raise NotFound(f"no HA group named {name!r} (`bollard ha group list` shows them)")
    return found


def all_groups(conn: Connection) -> list[HaGroup]:
    rows = list(conn.execute(select(ha_groups).order_by(ha_groups.c.name)).mappings())
    members = _nodes_of(conn, [r["name"] for r in rows])
    return [_group(r, members[r["name"]]) for r in rows]


def _write_nodes(conn: Connection, name: str, nodes: Mapping[str, int]) -> None:
    conn.execute(delete(ha_group_nodes).where(ha_group_nodes.c.group_name == name))
    if nodes:
        conn.execute(
            insert(ha_group_nodes),
            [{"group_name": name, "node": n, "priority": p} for n, p in nodes.items()],
        )


def create(
    conn: Connection,
    *,
    name: str,
    nodes: Mapping[str, int],
    restricted: bool,
    nofailback: bool,
    description: str,
    now: datetime,
) -> HaGroup:
    if find(conn, name) is not None:
        raise AlreadyExists(f"an HA group named {name!r} exists")
    conn.execute(
        insert(ha_groups).values(
            name=name, restricted=restricted, nofailback=nofailback, description=description,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    _write_nodes(conn, name, nodes)
    return get(conn, name)


def change(
    conn: Connection, name: str, now: datetime, *, nodes: Mapping[str, int] | None = None,
    **values: Any,
) -> HaGroup:  # fmt: skip
    """Change the given fields (restricted, nofailback, description) and, when given, the
    nodes with their priorities (all of them: the group's nodes become these)."""
    get(conn, name)
    unknown = set(values) - {"restricted", "nofailback", "description"}
    if unknown:
        raise ValueError(f"not an HA group column: {sorted(unknown)}")
    conn.execute(update(ha_groups).where(ha_groups.c.name == name).values(updated_at=now, **values))
    if nodes is not None:
        _write_nodes(conn, name, nodes)
    return get(conn, name)


def members(conn: Connection, name: str) -> list[str]:
    """The names of the VMs in the group."""
    query = select(vms.c.name).where(vms.c.ha_group == name).order_by(vms.c.name)
    return list(conn.execute(query).scalars())


def member_counts(conn: Connection) -> dict[str, int]:
    query = select(vms.c.ha_group, func.count()).where(vms.c.ha_group.is_not(None))
    return {g: n for g, n in conn.execute(query.group_by(vms.c.ha_group))}


def remove(conn: Connection, name: str) -> None:
    """Delete the group; refused (Conflict, naming them) while VMs are in it."""
    get(conn, name)
    used = members(conn, name)
    if used:
        shown = ", ".join(used[:_SHOWN]) + (
            f" and {len(used) - _SHOWN} more" if len(used) > _SHOWN else ""
        )
        raise Conflict(
            f"HA group {name} has {len(used)} VM(s): {shown}; move them to another group "
            "first (`bollard vm meta NAME --ha-group ''`)"
        )
    conn.execute(delete(ha_groups).where(ha_groups.c.name == name))


def groups_with_node(conn: Connection, node: str) -> list[str]:
    query = select(ha_group_nodes.c.group_name).where(ha_group_nodes.c.node == node)
    return sorted(conn.execute(query).scalars())
