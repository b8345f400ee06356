"""What each host reports it has (``host_vms``), and the owner's view of it on ``vms``.

Written only when something changed: a full report replaces a node's rows (at connect),
a delta touches only the entries it carries. The VM rows owned by the reporting node get
their observed power from the same report; a row already holding a newer report (a higher
sequence) is left alone, so reports arriving out of order never regress.

A VM's move to another owner (`vms.move_owner`) takes its observed state from the new
owner's entry. On PostgreSQL a report of the new owner that commits while the move runs is
seen by neither (the move read the entry before the report committed; the report's update
found the VM still the old owner's): `replace_node` and `apply_delta` return the VMs they
carried that the node did not own, and `observe_arrived`, run after the report committed,
waits for such a move and applies the entry then.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from bollard.domain.drift import HostView
from bollard.domain.models import HostVm
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState
from bollard.store.db import raw_rows, utc
from bollard.store.tables import host_vms, vms


def _row(report: VmReport, node: str, seq: int, now: datetime) -> dict[str, Any]:
    return {
        "node": node,
        "uuid": report.uuid,
        "name": report.name[:63],
        "power": report.power.value,
        "vcpus": report.vcpus,
        "memory_mb": report.memory_mb,
        "epoch": report.epoch,
        "seq": seq,
        "changed_at": now,
    }


def _host_vm(row: Any) -> HostVm:
    m = row._mapping
    return HostVm(
        node=m["node"],
        uuid=m["uuid"],
        name=m["name"],
        power=PowerState(m["power"]),
        vcpus=m["vcpus"],
        memory_mb=m["memory_mb"],
        epoch=m["epoch"],
        seq=m["seq"],
        changed_at=utc(m["changed_at"]) or m["changed_at"],
    )


def replace_node(
    conn: Connection, node: str, reports: list[VmReport], seq: int, now: datetime
) -> list[str]:
    """A full report: the node's rows become exactly `reports`; VMs the database places on
    the node that the report lacks are observed ABSENT. Returns the VMs reported whose
    observed state was not written (not the node's, or holding a newer report)."""
    conn.execute(delete(host_vms).where(host_vms.c.node == node))
    if reports:
        conn.execute(insert(host_vms), [_row(r, node, seq, now) for r in reports])
    unowned = _observe(conn, node, reports, seq, now)
    newer = vms.c.observed_seq < seq
    present = [r.uuid for r in reports]
    conn.execute(
        update(vms)
        .where(vms.c.node == node, vms.c.uuid.not_in(present), newer)
        .values(observed_power=PowerState.ABSENT.value, observed_seq=seq, observed_at=now)
    )
    return unowned


def apply_delta(
    conn: Connection,
    node: str,
    changed: list[VmReport],
    gone: list[str],
    seq: int,
    now: datetime,
) -> list[str]:
    """A delta: only the entries it carries are written. Returns the VMs it carried whose
    observed state was not written (not the node's, or holding a newer report)."""
    unowned: list[str] = []
    if changed:
        uuids = [r.uuid for r in changed]
        conn.execute(delete(host_vms).where(host_vms.c.node == node, host_vms.c.uuid.in_(uuids)))
        conn.execute(insert(host_vms), [_row(r, node, seq, now) for r in changed])
        unowned += _observe(conn, node, changed, seq, now)
    if gone:
        conn.execute(delete(host_vms).where(host_vms.c.node == node, host_vms.c.uuid.in_(gone)))
        absent = conn.execute(
            update(vms)
            .where(vms.c.uuid.in_(gone), vms.c.node == node, vms.c.observed_seq < seq)
            .values(observed_power=PowerState.ABSENT.value, observed_seq=seq, observed_at=now)
            .returning(vms.c.uuid)
        )
        written = set(absent.scalars())
        unowned += [uuid for uuid in gone if uuid not in written]
    return unowned


def _observe(
    conn: Connection, node: str, reports: Iterable[VmReport], seq: int, now: datetime
) -> list[str]:
    """The owned VMs' observed power from the reports; the VMs not written."""
    by_power: dict[PowerState, list[str]] = {}
    for report in reports:
        by_power.setdefault(report.power, []).append(report.uuid)
    unowned: list[str] = []
    for power, uuids in by_power.items():
        result = conn.execute(
            update(vms)
            .where(vms.c.uuid.in_(uuids), vms.c.node == node, vms.c.observed_seq < seq)
            .values(observed_power=power.value, observed_seq=seq, observed_at=now)
            .returning(vms.c.uuid)
        )
        written = set(result.scalars())
        unowned += [uuid for uuid in uuids if uuid not in written]
    return unowned


def moving(conn: Connection, uuids: list[str]) -> list[str]:
    """Of `uuids` (VMs a report carried that its node did not own), those a task holds: a
    VM changes owner only under a task (a migration, a recovery, a resize)."""
    if not uuids:
        return []
    query = select(vms.c.uuid).where(vms.c.uuid.in_(uuids), vms.c.task_id.is_not(None))
    return sorted(conn.execute(query).scalars())


def observe_arrived(conn: Connection, node: str, uuid: str, seq: int, now: datetime) -> bool:
    """After a report of `node` at `seq` that carried VM `uuid` had committed, the VM not
    `node`'s then: wait for a move of its owner still running (its row's lock, taken first
    by `vms.move_owner`), then, if `node` owns it now, give it the observed state of
    `node`'s entry (ABSENT, at `seq`, if there is none), unless it holds a newer report.
    Alone in its transaction (it waits for the move's transaction, and holds no other
    lock meanwhile). Whether it wrote."""
    lock = select(vms.c.uuid).where(vms.c.uuid == uuid)
    if conn.dialect.name != "sqlite":
        lock = lock.with_for_update(read=True)
    conn.execute(lock).first()
    # A statement after the wait: it sees the move if it committed.
    owner = conn.execute(select(vms.c.node).where(vms.c.uuid == uuid)).scalar()
    if owner != node:
        return False
    entry = conn.execute(
        select(host_vms.c.power, host_vms.c.seq, host_vms.c.changed_at).where(
            host_vms.c.node == node, host_vms.c.uuid == uuid
        )
    ).first()
    values: dict[str, Any] = (
        {"observed_power": entry[0], "observed_seq": entry[1], "observed_at": entry[2]}
        if entry is not None
        else {"observed_power": PowerState.ABSENT.value, "observed_seq": seq, "observed_at": now}
    )
    result = conn.execute(
        update(vms)
        .where(
            vms.c.uuid == uuid,
            vms.c.node == node,
            vms.c.observed_seq < values["observed_seq"],
        )
        .values(**values)
    )
    return result.rowcount == 1


def forget_node(conn: Connection, node: str) -> None:
    """The node's inventory is no longer known (e.g. it was fenced: its VMs are gone)."""
    conn.execute(delete(host_vms).where(host_vms.c.node == node))


def on_node(conn: Connection, node: str) -> list[HostVm]:
    rows = conn.execute(select(host_vms).where(host_vms.c.node == node)).all()
    return [_host_vm(r) for r in rows]


def for_vm(conn: Connection, uuid: str) -> list[HostVm]:
    """Every host that reports having the VM."""
    rows = conn.execute(_FOR_VM, {"uuid": uuid}).all()
    return [_host_vm(r) for r in rows]


_FOR_VM = select(host_vms).where(host_vms.c.uuid == bindparam("uuid"))  # built once


_POWER = {p.value: p for p in PowerState}


def views(conn: Connection, nodes: Iterable[str]) -> list[tuple[str, HostView]]:
    """The entries of these nodes as the state reconciler classifies them: (node, view)
    pairs, only the columns it reads, unpacked by position. Every row is read and filtered
    here: a pass wants (nearly) every node, and ``IN`` over thousands of names costs more."""
    wanted = set(nodes)
    query = select(
        host_vms.c.node, host_vms.c.uuid, host_vms.c.name, host_vms.c.power, host_vms.c.vcpus,
        host_vms.c.memory_mb, host_vms.c.epoch,
    )  # fmt: skip
    return [
        (node, HostView(uuid, name, _POWER[power], vcpus, memory_mb, epoch))
        for node, uuid, name, power, vcpus, memory_mb, epoch in raw_rows(conn, query)
        if node in wanted
    ]


def all_entries(conn: Connection) -> list[HostVm]:
    return [_host_vm(r) for r in conn.execute(select(host_vms)).all()]
