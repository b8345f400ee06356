"""Queries on migration records (domain/migrations.py): written by the migration, HA restart
and resize flows, each status change checked against the whitelisted table."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from bollard.domain.errors import InvalidState, NotFound
from bollard.domain.flavors import FlavorRef
from bollard.domain.migrations import (
    Hold,
    Migration,
    MigrationStatus,
    MigrationType,
    migration_allowed,
)
from bollard.domain.models import Page
from bollard.store import pagination
from bollard.store.any_of import PerDialect, any_of
from bollard.store.db import utc
from bollard.store.tables import migrations

log = logging.getLogger(__name__)

_OPEN = [s.value for s in MigrationStatus if not s.ended]  # statuses of a record under way


def _migration(row: Row[Any]) -> Migration:
    m = row._mapping
    hold = m["source_hold"]
    return Migration(
        id=m["id"],
        vm_uuid=m["vm_uuid"],
        vm_name=m["vm_name"],
        type=MigrationType(m["type"]),
        source=m["source"],
        dest=m["dest"],
        status=MigrationStatus(m["status"]),
        task_id=m["task_id"],
        old_flavor=FlavorRef.of(m["old_flavor"]) if m["old_flavor"] else None,
        new_flavor=FlavorRef.of(m["new_flavor"]) if m["new_flavor"] else None,
        source_hold=Hold(hold["node"], int(hold["vcpus"]), int(hold["memory_mb"]))
        if hold
        else None,
        error=m["error"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        finished_at=utc(m["finished_at"]),
    )


def create(
    conn: Connection,
    *,
    id: str,
    vm_uuid: str,
    vm_name: str,
    type: MigrationType,
    source: str | None,
    dest: str | None,
    status: MigrationStatus,
    task_id: str | None,
    now: datetime,
    old_flavor: FlavorRef | None = None,
    new_flavor: FlavorRef | None = None,
) -> Migration:
    conn.execute(
        insert(migrations).values(
            id=id, vm_uuid=vm_uuid, vm_name=vm_name, type=type.value, source=source,
            dest=dest, status=status.value, task_id=task_id,
            old_flavor=None if old_flavor is None else old_flavor.stored(),
            new_flavor=None if new_flavor is None else new_flavor.stored(),
            source_hold=None, error=None, created_at=now, updated_at=now, finished_at=None,
        )
    )  # fmt: skip
    return get(conn, id)


def find(conn: Connection, id: str) -> Migration | None:
    row = conn.execute(select(migrations).where(migrations.c.id == id)).first()
    return None if row is None else _migration(row)


def get(conn: Connection, id: str) -> Migration:
    found = find(conn, id)
    if found is None:
        raise NotFound(f"no migration with id {id!r}")
    return found


def of_task(conn: Connection, task_id: str) -> Migration | None:
    row = conn.execute(select(migrations).where(migrations.c.task_id == task_id)).first()
    return None if row is None else _migration(row)


def open_resize(conn: Connection, vm_uuid: str) -> Migration | None:
    """The VM's resize that is neither confirmed nor reverted (at most one), if any."""
    row = conn.execute(
        select(migrations).where(
            migrations.c.vm_uuid == vm_uuid,
            migrations.c.type == MigrationType.RESIZE.value,
            migrations.c.status.in_(_OPEN),
        )
    ).first()
    return None if row is None else _migration(row)


def holds_on(conn: Connection, node: str) -> list[Migration]:
    """The finished resizes whose source hold is on `node`."""
    rows = conn.execute(
        select(migrations).where(
            migrations.c.source == node,
            migrations.c.source_hold.is_not(None),
        )
    ).all()
    return [m for m in map(_migration, rows) if m.source_hold is not None]


def resized_before(conn: Connection, before: datetime) -> list[Migration]:
    """Resizes finished (VERIFY_RESIZE) before `before`, oldest first (auto-confirm)."""
    rows = conn.execute(
        select(migrations)
        .where(
            migrations.c.type == MigrationType.RESIZE.value,
            migrations.c.status == MigrationStatus.FINISHED.value,
            migrations.c.updated_at <= before,
        )
        .order_by(migrations.c.updated_at)
    ).all()
    return [_migration(r) for r in rows]


def open_resizes(conn: Connection) -> list[Migration]:
    """Every resize that is neither confirmed nor reverted nor failed."""
    rows = conn.execute(
        select(migrations).where(
            migrations.c.type == MigrationType.RESIZE.value,
            migrations.c.status.in_(_OPEN),
        )
    ).all()
    return [_migration(r) for r in rows]


def list_page(
    conn: Connection, *, limit: int, cursor: str | None, vm_uuid: str | None = None
) -> Page:
    """Newest first."""
    where = None if vm_uuid is None else migrations.c.vm_uuid == vm_uuid
    return pagination.page(
        conn, migrations, migrations.c.id, _migration, limit=limit, cursor=cursor,
        where=where, descending=True,
    )  # fmt: skip


def set_status(
    conn: Connection,
    id: str,
    status: MigrationStatus,
    now: datetime,
    *,
    error: str | None = None,
    **values: Any,
) -> Migration:
    """Move the record to `status` (InvalidState if the table does not allow it); `values`
    are other columns written with it (source_hold, dest, task_id)."""
    current = get(conn, id)
    if not migration_allowed(current.status, status):
        raise InvalidState(f"migration {id}: {current.status} -> {status} is not allowed")
    written: dict[str, Any] = {**values, "status": status.value, "updated_at": now}
    if error is not None:
        written["error"] = error
    if status.ended:
        written["finished_at"] = now
    conn.execute(
        update(migrations)
        .where(migrations.c.id == id, migrations.c.status == current.status.value)
        .values(**written)
    )
    return get(conn, id)


def hold(node: str, vcpus: int, memory_mb: int) -> dict[str, Any]:
    """A source hold as the column stores it."""
    return {"node": node, "vcpus": vcpus, "memory_mb": memory_mb}


def count_open_for_flavor(conn: Connection, flavor_id: str) -> int:
    """Resizes not yet ended that name the flavor (old or new): it must not be deleted."""
    rows = conn.execute(
        select(migrations.c.old_flavor, migrations.c.new_flavor).where(
            migrations.c.type == MigrationType.RESIZE.value,
            migrations.c.status.in_(_OPEN),
        )
    ).all()
    return sum(
        1
        for old, new in rows
        if (old or {}).get("id") == flavor_id or (new or {}).get("id") == flavor_id
    )


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(migrations)).scalar_one())


def set_fields(conn: Connection, id: str, now: datetime, **values: Any) -> None:
    """Change columns other than the status (source_hold, error)."""
    if "status" in values:
        raise ValueError("the status changes only through set_status()")
    conn.execute(update(migrations).where(migrations.c.id == id).values(**values, updated_at=now))


# One statement whatever the number of VMs (store/any_of.py): every page of VMs reads this.
_OPEN_FOR_VMS = PerDialect(
    lambda dialect: select(migrations).where(
        any_of(migrations.c.vm_uuid, "vm_uuids", dialect),
        migrations.c.type == MigrationType.RESIZE.value,
        migrations.c.status.in_(_OPEN),
    )
)


def open_for_vms(conn: Connection, vm_uuids: list[str]) -> dict[str, Migration]:
    """The open resize of each of these VMs that has one, by VM uuid."""
    if not vm_uuids:
        return {}
    rows = conn.execute(_OPEN_FOR_VMS.of(conn), {"vm_uuids": list(vm_uuids)}).all()
    return {m.vm_uuid: m for m in map(_migration, rows)}


def force_end(conn: Connection, id: str, now: datetime, error: str) -> None:
    """End a record nothing drives any more in `error` (the state reconciler's fix), whatever
    its status: an open record with no task and no resized VM has nothing left to wait for."""
    conn.execute(
        update(migrations)
        .where(migrations.c.id == id)
        .values(status=MigrationStatus.ERROR.value, error=error, updated_at=now, finished_at=now)
    )


def open_by_name(conn: Connection, vm_name: str) -> list[Migration]:
    """The records of VM `vm_name` not ended yet (newest first)."""
    rows = conn.execute(
        select(migrations)
        .where(migrations.c.vm_name == vm_name, migrations.c.status.in_(_NOT_ENDED))
        .order_by(migrations.c.id.desc())
    ).all()
    return [_migration(r) for r in rows]


def open_all(conn: Connection) -> list[Migration]:
    rows = conn.execute(select(migrations).where(migrations.c.status.in_(_NOT_ENDED))).all()
    return [_migration(r) for r in rows]


_NOT_ENDED = [s.value for s in MigrationStatus if not s.ended]


def of_name(conn: Connection, vm_name: str, limit: int) -> list[Migration]:
    """The records of VMs named `vm_name`, newest first."""
    rows = conn.execute(
        select(migrations)
        .where(migrations.c.vm_name == vm_name)
        .order_by(migrations.c.id.desc())
        .limit(limit)
    ).all()
    return [_migration(r) for r in rows]
