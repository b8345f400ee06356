"""What the state reconciler reads and writes of the SR-IOV tables (issue 22), next to the
claims of store/sriov.py: the VFs someone holds or uses, for its checks
(bollard.domain.sriov_drift), and the fixes that give one named VF to a VM's NIC, the VF its
host says the VM uses (a claim by the placement rules takes the lowest free VF instead).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, or_, select, update

from bollard.domain.drift import VfView
from bollard.store.db import utc
from bollard.store.tables import sriov_pfs, sriov_vfs


def vf_views(conn: Connection) -> list[VfView]:
    """Every VF that the record gives a VM or whose host says a VM uses it, with its PF's
    physical network, in (node, pf, idx) order. The free, unused ones (most of them) are not
    read: they can differ in nothing."""
    joined = sriov_vfs.join(
        sriov_pfs, and_(sriov_pfs.c.node == sriov_vfs.c.node, sriov_pfs.c.device == sriov_vfs.c.pf)
    )
    c = sriov_vfs.c
    query = (
        select(
            c.node,
            c.pf,
            c.idx,
            sriov_pfs.c.physnet,
            c.pci,
            c.netdev,
            c.used_by,
            c.mac,
            c.task_id,
            c.claimed_at,
            c.host_used_by,
        )
        .select_from(joined)
        .where(or_(c.used_by.is_not(None), c.host_used_by.is_not(None)))
        .order_by(c.node, c.pf, c.idx)
    )
    return [
        VfView(
            node=r.node,
            pf=r.pf,
            idx=r.idx,
            physnet=r.physnet,
            pci=r.pci,
            netdev=r.netdev,
            used_by=r.used_by,
            mac=r.mac,
            task_id=r.task_id,
            claimed_at=utc(r.claimed_at),
            host_used_by=r.host_used_by,
        )
        for r in conn.execute(query)
    ]


def take(
    conn: Connection, *, node: str, pf: str, idx: int, vm: str, mac: str, now: datetime
) -> bool:
    """Give VF `idx` of PF `pf` on `node` to the VM's NIC `mac` (committed: no task), if it
    is still free; whether it was. The caller makes sure the NIC holds no other VF on the
    node (one VF a NIC a node: the table refuses a second)."""
    result = conn.execute(
        update(sriov_vfs)
        .where(
            sriov_vfs.c.node == node,
            sriov_vfs.c.pf == pf,
            sriov_vfs.c.idx == idx,
            sriov_vfs.c.used_by.is_(None),
        )
        .values(used_by=vm, mac=mac.lower(), task_id=None, claimed_at=now)
    )
    return int(result.rowcount) == 1
