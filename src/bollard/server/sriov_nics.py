"""A VM's SR-IOV NICs on the server side (issue 22): which VFs they need of a node, the claim
of those VFs where the VM is placed, and the VF each NIC holds, put into the DEFINE command
the host gets.

Who holds a VF is the store's (`store/sriov.py`, one row per VF with the VM and the NIC's
MAC); a VM's NIC list says only the physical network and the mode. Each SR-IOV NIC holds
exactly one VF of its VM's node, matched by MAC, so the DEFINE a host gets is always built
from the claim (`with_vfs`) and never from an older definition.

Moving such a VM to another node (migration, HA restart elsewhere, a resize to another node,
a move between cells) needs a VF claimed on the target and the source's released at the
end; until that is wired, `refuse_move` refuses the move with one line saying why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.models import Nic, Vm
from bollard.store import sriov

MACVTAP = "macvtap"


def sriov_nics(nics: Sequence[Nic]) -> list[Nic]:
    return [n for n in nics if n.sriov is not None]


def vf_needs(nics: Sequence[Nic]) -> tuple[dict[str, int], frozenset[str]]:
    """(physnet -> VFs needed, the physnets where a macvtap NIC needs a VF with a network
    device): what a placement request asks of a node."""
    wanted = sriov_nics(nics)
    counts = Counter(n.sriov for n in wanted if n.sriov is not None)
    netdev = frozenset(n.sriov for n in wanted if n.sriov is not None and n.mode == MACVTAP)
    return dict(counts), netdev


def free_vfs(
    conn: Connection, vfs: dict[str, int], netdev: frozenset[str]
) -> dict[str, dict[str, int]]:
    """node -> physnet -> the free VFs a request's NICs can take there, for each physnet
    the request needs. On a physnet where some NIC is macvtap only VFs with a network device
    count: a macvtap NIC needs one, a hostdev NIC takes any VF, so counting the narrower set
    never accepts a node whose claim then fails."""
    counts: dict[str, dict[str, int]] = {}
    for physnet in vfs:
        mode = MACVTAP if physnet in netdev else None
        for node, free in sriov.free_counts(conn, physnet, mode=mode).items():
            counts.setdefault(node, {})[physnet] = free
    return counts


def check_physnets(conn: Connection, nics: Sequence[Nic]) -> None:
    """Every SR-IOV NIC is on a physical network some node has a PF on; InvalidInput
    naming the first NIC that is not (before anything is written)."""
    if not sriov_nics(nics):
        return
    known = sriov.physnets(conn)
    for i, nic in enumerate(nics):
        if nic.sriov is not None and nic.sriov not in known:
            raise InvalidInput(f"nics[{i}]: no node has SR-IOV physical network {nic.sriov}")


def claim_for(
    conn: Connection,
    vm_uuid: str,
    node: str,
    nics: Sequence[Nic],
    now: datetime,
    task_id: str | None = None,
) -> bool:
    """Claim one VF of `node` for each SR-IOV NIC (by its MAC, so a NIC that holds one there
    already keeps it); `task_id`: the task whose rollback releases the claims (None:
    committed at once). macvtap NICs claim first: they need a VF with a network device, a
    hostdev NIC takes any. False when a NIC finds no free VF: the claims made so far are in
    the caller's transaction, which must then roll back (and place again, or fail)."""
    wanted = sorted(sriov_nics(nics), key=lambda n: n.mode != MACVTAP)
    for nic in wanted:
        assert nic.sriov is not None
        held = sriov.claim(
            conn, node=node, physnet=nic.sriov, vm=vm_uuid, mac=nic.mac, now=now,
            task_id=task_id, mode=nic.mode,
        )  # fmt: skip
        if held is None:
            return False
    return True


def with_vfs(
    conn: Connection, vm_uuid: str, node: str, nics: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A DEFINE command's NICs (`nic_args`) with each SR-IOV NIC's VF on `node`: the one the
    VM holds there for the NIC's MAC (`vf_pci`, and `vf_netdev` when the VF has a network
    device). Conflict naming the NIC when it holds none there (the claim was released, or
    never made): a host must never be given a VF the store does not give the VM."""
    if not any(n.get("sriov") for n in nics):
        return nics
    held = {v.mac: v for v in sriov.holders(conn, vm_uuid) if v.node == node}
    filled = []
    for nic in nics:
        if not nic.get("sriov"):
            filled.append(nic)
            continue
        mac = str(nic.get("mac", "")).lower()
        vf = held.get(mac)
        if vf is None:
            raise Conflict(
                f"NIC {mac} of VM {vm_uuid} holds no SR-IOV VF on node {node} "
                f"(physical network {nic['sriov']})"
            )
        if nic.get("mode") == MACVTAP and vf.netdev is None:
            raise Conflict(
                f"NIC {mac}: VF {vf.pci} ({vf.pf} VF {vf.idx}) on node {node} has no network "
                "device, which macvtap needs"
            )
        extra = {"vf_pci": vf.pci} | ({"vf_netdev": vf.netdev} if vf.netdev else {})
        filled.append({**nic, **extra})
    return filled


def release_claims(conn: Connection, vm_uuid: str, node: str, task_id: str) -> int:
    """Undo of a move's claim: the VFs `task_id` claimed on `node` for the VM and has not
    committed (a VF the VM held there before the task, e.g. an HA restart on its own node,
    stays the VM's)."""
    return sriov.release(conn, vm=vm_uuid, node=node, task_id=task_id)


def commit_move(conn: Connection, vm_uuid: str, source: str | None, target: str) -> None:
    """A move's commit, in its transaction: the VM's VFs on `target` become its own (their
    pending claim cleared) and those it held on `source` are freed. Nothing when source is
    target (a restart on the VM's own node keeps its VFs)."""
    sriov.commit(conn, vm=vm_uuid, node=target)
    if source is not None and source != target:
        sriov.release(conn, vm=vm_uuid, node=source)


def check_method(nics: Sequence[Nic], method: str | None, what: str = "migration_method") -> None:
    """A VM with a hostdev NIC (the VF's PCI device is the guest's) migrates by shutdown only:
    InvalidInput for its migration method `live`."""
    if method == "live" and any(n.hostdev for n in nics):
        raise InvalidInput(
            f"{what} live: the VM has a hostdev SR-IOV NIC (PCI passthrough), which migrates "
            "by shutdown only (use default or shutdown)"
        )


def has_sriov(vm: Vm) -> bool:
    return any(n.sriov is not None for n in vm.nics)


def refuse_move(vm: Vm) -> None:
    """Conflict for a VM with SR-IOV NICs asked to move to another node (not wired yet:
    its VFs would have to be claimed on the target and released on the source)."""
    if has_sriov(vm):
        raise Conflict(
            f"VM {vm.name} has SR-IOV NICs: moving it to another node is not supported yet"
        )
