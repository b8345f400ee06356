"""SR-IOV in the store (tables `sriov_pfs`, `sriov_vfs`): each node's PFs and VFs as its agent
reports them, and which VM NIC holds each VF (issue 22).

The agent's report owns what the host has: `sync_node` writes it (on change only) and drops
the PFs and VFs the host no longer has. The server owns who holds a VF: `claim` gives a free
VF to a VM NIC (its MAC), `commit` makes a task's claim permanent, `release` frees it. A
migration or HA restart claims on its target with its task id and commits at its end, so a
rollback releases exactly what the task claimed (`release(..., task_id=...)`) and never the
VF the VM keeps on its source: the bug PVC documents, where an aborted macvtap migration left
the VM's NICs and the VFs' holders disagreeing, cannot happen here.

Two claims never get one VF: on PostgreSQL the free VF is read `FOR UPDATE SKIP LOCKED` (a
concurrent claim takes the next one instead of waiting), on SQLite writers are serialized
(`Database.write` begins IMMEDIATE); the claim's UPDATE also checks the VF is still free.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bollard.domain.errors import InvalidInput, NotFound, TemporaryError
from bollard.domain.models import normalise_mac
from bollard.domain.sriov import (
    PCI_ADDRESS,
    SriovPf,
    SriovVf,
    VfSettings,
    check_device,
    check_mode,
    check_physnet,
)
from bollard.store.db import utc
from bollard.store.tables import sriov_pfs, sriov_vfs

# Claims whose VF a concurrent writer took between the read and the update before giving up
# (never seen with either database's locking: a guard, not a retry policy).
CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class PfRow:
    """A PF as its node last reported it. `updated_at`: when the report last changed it."""

    node: str
    device: str
    physnet: str
    pci: str
    mtu: int | None
    vfs_total: int
    vfs: int
    updated_at: datetime


@dataclass(frozen=True)
class VfRow:
    """A VF, with its PF's physical network and the VM NIC that holds it (`used_by`, `mac`;
    `task_id` while the claim is not committed)."""

    node: str
    pf: str
    idx: int
    physnet: str
    pci: str
    netdev: str | None
    settings: VfSettings  # as Bollard set them (desired)
    applied: VfSettings  # as the host reported them
    host_used_by: str | None  # the VM whose definition uses it on the host, as reported
    used_by: str | None
    mac: str | None
    task_id: str | None
    claimed_at: datetime | None

    @property
    def free(self) -> bool:
        return self.used_by is None


def _pf(row: Row[Any]) -> PfRow:
    m = row._mapping
    return PfRow(
        node=m["node"], device=m["device"], physnet=m["physnet"], pci=m["pci"], mtu=m["mtu"],
        vfs_total=m["vfs_total"], vfs=m["vfs"], updated_at=utc(m["updated_at"]) or m["updated_at"],
    )  # fmt: skip


def _vf(row: Row[Any]) -> VfRow:
    m = row._mapping
    return VfRow(
        node=m["node"], pf=m["pf"], idx=m["idx"], physnet=m["physnet"], pci=m["pci"],
        netdev=m["netdev"], settings=VfSettings.model_validate(m["settings"] or {}),
        applied=VfSettings.model_validate(m["applied"] or {}), host_used_by=m["host_used_by"],
        used_by=m["used_by"], mac=m["mac"], task_id=m["task_id"],
        claimed_at=utc(m["claimed_at"]),
    )  # fmt: skip


def _vfs() -> Select[Any]:
    """Every VF with its PF's physical network, in (node, pf, idx) order."""
    joined = sriov_vfs.join(
        sriov_pfs, and_(sriov_pfs.c.node == sriov_vfs.c.node, sriov_pfs.c.device == sriov_vfs.c.pf)
    )
    return (
        select(sriov_vfs, sriov_pfs.c.physnet)
        .select_from(joined)
        .order_by(sriov_vfs.c.node, sriov_vfs.c.pf, sriov_vfs.c.idx)
    )


def _key(node: str, pf: str, idx: int) -> Any:
    return and_(sriov_vfs.c.node == node, sriov_vfs.c.pf == pf, sriov_vfs.c.idx == idx)


# --- reads ---------------------------------------------------------------------------------


def pfs_of(conn: Connection, node: str) -> list[PfRow]:
    query = select(sriov_pfs).where(sriov_pfs.c.node == node).order_by(sriov_pfs.c.device)
    return [_pf(r) for r in conn.execute(query)]


def vfs_of(conn: Connection, node: str, pf: str | None = None) -> list[VfRow]:
    query = _vfs().where(sriov_vfs.c.node == node)
    if pf is not None:
        query = query.where(sriov_vfs.c.pf == pf)
    return [_vf(r) for r in conn.execute(query)]


def vf(conn: Connection, node: str, pf: str, idx: int) -> VfRow | None:
    row = conn.execute(_vfs().where(_key(node, pf, idx))).first()
    return None if row is None else _vf(row)


def physnets(conn: Connection) -> set[str]:
    """The physical networks some node has a PF on."""
    return set(conn.execute(select(sriov_pfs.c.physnet).distinct()).scalars())


def free_counts(conn: Connection, physnet: str, *, mode: str | None = None) -> dict[str, int]:
    """node -> its free VFs on `physnet`, for every node with a PF on it (0: all taken). With
    mode "macvtap", only the VFs with a network device count (macvtap needs one)."""
    free = and_(
        sriov_vfs.c.node == sriov_pfs.c.node,
        sriov_vfs.c.pf == sriov_pfs.c.device,
        sriov_vfs.c.used_by.is_(None),
        *([sriov_vfs.c.netdev.is_not(None)] if mode == "macvtap" else []),
    )
    query = (
        select(sriov_pfs.c.node, func.count(sriov_vfs.c.idx))
        .select_from(sriov_pfs.outerjoin(sriov_vfs, free))
        .where(sriov_pfs.c.physnet == physnet)
        .group_by(sriov_pfs.c.node)
    )
    return {row[0]: int(row[1]) for row in conn.execute(query)}


def holders(conn: Connection, vm: str) -> list[VfRow]:
    """The VFs the VM holds, on any node (a migrating VM: its source's and its target's)."""
    return [_vf(r) for r in conn.execute(_vfs().where(sriov_vfs.c.used_by == vm))]


def claims_of_task(conn: Connection, task_id: str) -> list[VfRow]:
    """The claims `task_id` made and has not committed (what its rollback releases)."""
    return [_vf(r) for r in conn.execute(_vfs().where(sriov_vfs.c.task_id == task_id))]


# --- the agent's report ----------------------------------------------------------------------


def _check_report(node: str, pfs: Sequence[SriovPf]) -> None:
    """Refuse a report the tables cannot hold (before anything is written): names and
    addresses out of pattern, a PF, VF index or PCI address given twice."""
    devices: set[str] = set()
    addresses: set[str] = set()
    for pf in pfs:
        check_device(pf.device)
        check_physnet(pf.physnet)
        if pf.device in devices:
            raise InvalidInput(f"node {node}: PF {pf.device} reported twice")
        devices.add(pf.device)
        if pf.pci and not PCI_ADDRESS.fullmatch(pf.pci):
            raise InvalidInput(f"node {node}: PF {pf.device}: PCI address {pf.pci!r} not valid")
        indexes: set[int] = set()
        for vf_ in pf.vfs:
            if vf_.index in indexes:
                raise InvalidInput(f"node {node}: PF {pf.device}: VF {vf_.index} reported twice")
            indexes.add(vf_.index)
            if not PCI_ADDRESS.fullmatch(vf_.pci):
                raise InvalidInput(
                    f"node {node}: PF {pf.device} VF {vf_.index}: PCI address {vf_.pci!r} not valid"
                )
            if vf_.pci in addresses:
                raise InvalidInput(f"node {node}: PCI address {vf_.pci} reported for two VFs")
            addresses.add(vf_.pci)
            if vf_.netdev is not None:
                check_device(vf_.netdev)


def _pf_values(pf: SriovPf) -> dict[str, Any]:
    return {
        "physnet": pf.physnet, "pci": pf.pci, "mtu": pf.mtu, "vfs_total": pf.vfs_total,
        "vfs": len(pf.vfs),
    }  # fmt: skip


def _vf_values(reported: SriovVf) -> dict[str, Any]:
    return {
        "pci": reported.pci,
        "netdev": reported.netdev,
        "applied": reported.settings.given(),
        "host_used_by": reported.used_by,
    }


def sync_node(conn: Connection, node: str, pfs: Sequence[SriovPf], *, now: datetime) -> list[VfRow]:
    """Make the node's PFs and VFs what its agent reports (rows written on change only).
    A PF or VF the report leaves out is deleted (not a PF reported with an `error`: away for
    this boot, its rows stay), and so is a VF whose PCI address changed
    (another device now: its desired settings stay with its PF and index, its holder does
    not). Returns the deleted VFs that a VM held, as they were, for the reconciler. A report
    that is not valid is refused with InvalidInput before anything changes."""
    _check_report(node, pfs)
    # A PF its agent could not set up (`error`) is away for this boot, not removed: its rows
    # stay as they are, holders included, so none of its VFs is handed out twice.
    away = {pf.device for pf in pfs if pf.error is not None}
    pfs = [pf for pf in pfs if pf.error is None]
    reported = {pf.device: pf for pf in pfs}
    reported_vfs = {(pf.device, v.index): v for pf in pfs for v in pf.vfs}
    known_pfs = {p.device: p for p in pfs_of(conn, node)}
    known_vfs = {(v.pf, v.idx): v for v in vfs_of(conn, node)}

    lost: list[VfRow] = []
    kept_settings: dict[tuple[str, int], VfSettings] = {}
    gone: dict[str, list[int]] = defaultdict(list)
    for key, row in known_vfs.items():
        if row.pf in away:
            continue
        now_there = reported_vfs.get(key)
        if now_there is not None and now_there.pci == row.pci:
            continue
        gone[row.pf].append(row.idx)
        if row.used_by is not None:
            lost.append(row)
        if now_there is not None:
            kept_settings[key] = row.settings
    for pf_name, indexes in gone.items():
        conn.execute(
            delete(sriov_vfs).where(
                sriov_vfs.c.node == node, sriov_vfs.c.pf == pf_name, sriov_vfs.c.idx.in_(indexes)
            )
        )
    dropped = [device for device in known_pfs if device not in reported and device not in away]
    if dropped:
        conn.execute(
            delete(sriov_pfs).where(sriov_pfs.c.node == node, sriov_pfs.c.device.in_(dropped))
        )

    for pf in pfs:
        values = _pf_values(pf)
        known = known_pfs.get(pf.device)
        if known is None:
            conn.execute(
                insert(sriov_pfs).values(node=node, device=pf.device, updated_at=now, **values)
            )
        elif any(getattr(known, name) != value for name, value in values.items()):
            conn.execute(
                update(sriov_pfs)
                .where(sriov_pfs.c.node == node, sriov_pfs.c.device == pf.device)
                .values(updated_at=now, **values)
            )

    new_rows: list[dict[str, Any]] = []
    for (pf_name, idx), reported_vf in reported_vfs.items():
        values = _vf_values(reported_vf)
        existing = known_vfs.get((pf_name, idx))
        if existing is None or (pf_name, idx) in kept_settings:
            desired = kept_settings.get((pf_name, idx), VfSettings())
            new_rows.append(
                {"node": node, "pf": pf_name, "idx": idx, "settings": desired.given(), **values}
            )
        elif (
            existing.netdev != reported_vf.netdev
            or existing.applied != reported_vf.settings
            or existing.host_used_by != reported_vf.used_by
        ):
            conn.execute(update(sriov_vfs).where(_key(node, pf_name, idx)).values(**values))
    if new_rows:
        conn.execute(insert(sriov_vfs), new_rows)  # one statement for a new PF's many VFs
    return lost


# --- claims ------------------------------------------------------------------------------------


def _held(conn: Connection, *, node: str, vm: str, mac: str) -> VfRow | None:
    row = conn.execute(
        _vfs().where(sriov_vfs.c.node == node, sriov_vfs.c.used_by == vm, sriov_vfs.c.mac == mac)
    ).first()
    return None if row is None else _vf(row)


def claim(
    conn: Connection,
    *,
    node: str,
    physnet: str,
    vm: str,
    mac: str,
    now: datetime,
    task_id: str | None = None,
    mode: str | None = None,
) -> VfRow | None:
    """A VF on `node`'s `physnet` for the VM's NIC `mac`: the one this NIC already holds
    there, as it is (its task_id unchanged: a committed claim stays committed), else the
    lowest free one (PF, index order; with mode "macvtap" only one with a network device),
    claimed for `task_id` (None: committed at once). None when the node has no free VF."""
    check_physnet(physnet)
    if mode is not None:
        check_mode(mode)
    try:
        mac = normalise_mac(mac)
    except ValueError as exc:
        raise InvalidInput(f"mac: {exc}") from None
    held = _held(conn, node=node, vm=vm, mac=mac)
    if held is not None:
        return held
    query = (
        _vfs()
        .where(
            sriov_vfs.c.node == node,
            sriov_pfs.c.physnet == physnet,
            sriov_vfs.c.used_by.is_(None),
            *([sriov_vfs.c.netdev.is_not(None)] if mode == "macvtap" else []),
        )
        .limit(1)
        .with_for_update(of=sriov_vfs, skip_locked=True)
    )
    for _ in range(CLAIM_ATTEMPTS):
        row = conn.execute(query).first()
        if row is None:
            return None
        free = _vf(row)
        try:
            with conn.begin_nested():
                taken = conn.execute(
                    update(sriov_vfs)
                    .where(_key(node, free.pf, free.idx), sriov_vfs.c.used_by.is_(None))
                    .values(used_by=vm, mac=mac, task_id=task_id, claimed_at=now)
                ).rowcount
        except IntegrityError:
            # node+mac is unique: this NIC's claim in a concurrent transaction won.
            held = _held(conn, node=node, vm=vm, mac=mac)
            if held is not None:
                return held
            raise TemporaryError(
                f"node {node}: MAC {mac} holds a VF there already (another VM's, or a claim "
                "still in progress); try again"
            ) from None
        if taken == 1:
            return vf(conn, node, free.pf, free.idx)
    raise TemporaryError(
        f"node {node}: the free VFs on {physnet} were taken by concurrent claims "
        f"{CLAIM_ATTEMPTS} times; try again"
    )


def commit(conn: Connection, *, vm: str, node: str) -> int:
    """Make the VM's claims on `node` permanent (no task's rollback releases them now); how
    many there were."""
    result = conn.execute(
        update(sriov_vfs)
        .where(
            sriov_vfs.c.node == node, sriov_vfs.c.used_by == vm, sriov_vfs.c.task_id.is_not(None)
        )
        .values(task_id=None)
    )
    return int(result.rowcount)


_FREE = {"used_by": None, "mac": None, "task_id": None, "claimed_at": None}


def release(
    conn: Connection, *, vm: str, node: str, mac: str | None = None, task_id: str | None = None
) -> int:
    """Free the VFs the VM holds on `node` (only its NIC `mac`'s, only the uncommitted
    claims of `task_id`, when given); how many were freed."""
    where = [sriov_vfs.c.node == node, sriov_vfs.c.used_by == vm]
    if mac is not None:
        where.append(sriov_vfs.c.mac == mac.lower())
    if task_id is not None:
        where.append(sriov_vfs.c.task_id == task_id)
    return int(conn.execute(update(sriov_vfs).where(*where).values(**_FREE)).rowcount)


def release_vm(conn: Connection, vm: str) -> int:
    """Free every VF the VM holds, on every node (when its record is removed)."""
    return int(
        conn.execute(update(sriov_vfs).where(sriov_vfs.c.used_by == vm).values(**_FREE)).rowcount
    )


# --- settings ----------------------------------------------------------------------------------


def set_settings(
    conn: Connection,
    node: str,
    pf: str,
    idx: int,
    settings: VfSettings,
    *,
    applied: VfSettings | None = None,
) -> VfRow:
    """Record the settings Bollard set on a VF: the fields `settings` gives replace the
    stored ones (the others stay); `applied`, when given, is what the host read back. The
    settings are checked first (InvalidInput, nothing written); NotFound names a PF or VF
    the node does not have."""
    settings.check()
    row = vf(conn, node, pf, idx)
    if row is None:
        has_pf = conn.execute(
            select(sriov_pfs.c.device).where(sriov_pfs.c.node == node, sriov_pfs.c.device == pf)
        ).first()
        if has_pf is None:
            raise NotFound(f"node {node} has no SR-IOV PF {pf!r}")
        raise NotFound(f"node {node}: PF {pf} has no VF {idx}")
    values: dict[str, Any] = {"settings": row.settings.merged(settings).given()}
    if applied is not None:
        values["applied"] = applied.given()
    conn.execute(update(sriov_vfs).where(_key(node, pf, idx)).values(**values))
    found = vf(conn, node, pf, idx)
    assert found is not None  # updated in this transaction
    return found
