"""Queries on affinity rules between VMs (domain/ha.py): together or apart, strict or not."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from bollard.domain.errors import AlreadyExists, NotFound
from bollard.domain.ha import AffinityKind, AffinityRule
from bollard.store.db import utc
from bollard.store.tables import affinity_rule_vms, affinity_rules, vms


def _members(conn: Connection, rules: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Each rule's VMs as (name, uuid), by name."""
    found: dict[str, list[tuple[str, str]]] = {r: [] for r in rules}
    if not rules:
        return found
    query = (
        select(affinity_rule_vms.c.rule, vms.c.name, vms.c.uuid)
        .join(vms, vms.c.uuid == affinity_rule_vms.c.vm_uuid)
        .where(affinity_rule_vms.c.rule.in_(rules))
        .order_by(vms.c.name)
    )
    for rule, name, uuid in conn.execute(query):
        found[rule].append((name, uuid))
    return found


def _rule(m: RowMapping, members: list[tuple[str, str]]) -> AffinityRule:
    return AffinityRule(
        name=m["name"],
        kind=AffinityKind(m["kind"]),
        strict=bool(m["strict"]),
        vms=tuple(n for n, _ in members),
        vm_uuids=tuple(u for _, u in members),
        description=m["description"] or "",
        created_at=utc(m["created_at"]),
        updated_at=utc(m["updated_at"]),
    )


def find(conn: Connection, name: str) -> AffinityRule | None:
    row = conn.execute(select(affinity_rules).where(affinity_rules.c.name == name)).mappings()
    first = row.first()
    return None if first is None else _rule(first, _members(conn, [name])[name])


def get(conn: Connection, name: str) -> AffinityRule:
    found = find(conn, name)
    if found is None:
        raise NotFound(f"no affinity rule named {name!r} (`bollard ha rule list` shows them)")
    return found


def all_rules(conn: Connection) -> list[AffinityRule]:
    rows = list(conn.execute(select(affinity_rules).order_by(affinity_rules.c.name)).mappings())
    members = _members(conn, [r["name"] for r in rows])
    return [_rule(r, members[r["name"]]) for r in rows]


def _write_members(conn: Connection, name: str, vm_uuids: Iterable[str]) -> None:
    conn.execute(delete(affinity_rule_vms).where(affinity_rule_vms.c.rule == name))
    rows = [{"rule": name, "vm_uuid": u} for u in dict.fromkeys(vm_uuids)]
    if rows:
        conn.execute(insert(affinity_rule_vms), rows)


def create(
    conn: Connection,
    *,
    name: str,
    kind: AffinityKind,
    strict: bool,
    vm_uuids: Iterable[str],
    description: str,
    now: datetime,
) -> AffinityRule:
    if find(conn, name) is not None:
        raise AlreadyExists(f"an affinity rule named {name!r} exists")
    conn.execute(
        insert(affinity_rules).values(
            name=name, kind=kind.value, strict=strict, description=description,
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    _write_members(conn, name, vm_uuids)
    return get(conn, name)


def change(
    conn: Connection, name: str, now: datetime, *, vm_uuids: Iterable[str] | None = None,
    **values: Any,
) -> AffinityRule:  # fmt: skip
    """Change the given fields (kind, strict, description) and, when given, the VMs (all of
    them: the rule's VMs become these)."""
    get(conn, name)
    unknown = set(values) - {"kind", "strict", "description"}
    if unknown:
        raise ValueError(f"not an affinity rule column: {sorted(unknown)}")
    if "kind" in values:
        values["kind"] = AffinityKind(values["kind"]).value
    conn.execute(
        update(affinity_rules).where(affinity_rules.c.name == name).values(updated_at=now, **values)
    )
    if vm_uuids is not None:
        _write_members(conn, name, vm_uuids)
    return get(conn, name)


def remove(conn: Connection, name: str) -> None:
    get(conn, name)
    conn.execute(delete(affinity_rules).where(affinity_rules.c.name == name))


def rules_of(conn: Connection, vm_uuid: str) -> list[AffinityRule]:
    """The rules the VM is in."""
    query = select(affinity_rule_vms.c.rule).where(affinity_rule_vms.c.vm_uuid == vm_uuid)
    names = sorted(conn.execute(query).scalars())
    if not names:
        return []
    rows = conn.execute(
        select(affinity_rules)
        .where(affinity_rules.c.name.in_(names))
        .order_by(affinity_rules.c.name)
    ).mappings()
    members = _members(conn, names)
    return [_rule(r, members[r["name"]]) for r in rows]
