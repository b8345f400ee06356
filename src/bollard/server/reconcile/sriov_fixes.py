"""How the state reconciler fixes the SR-IOV differences (bollard.domain.sriov_drift): the
record follows the host, in one write transaction that first checks the difference is still
there as it was detected (else `Skipped`: nothing done), and only where a fix is safe:

- vf-unrecorded: the VF the host says the VM uses is recorded as held by the VM's NIC on its
  physical network that holds no VF on that node (a macvtap NIC only on a VF with a network
  device). Refused, with the reason, for a VM unknown to Bollard or living on another node,
  and when the VM has no such NIC (none on that network, or each holds its VF already).
- vf-mismatch: the NIC's claim moves from the VF it holds to the VF the host says it uses.
- vf-leaked: the VF is released (its VM does not live on that node, nor uses it there).
- vf-conflict: never fixed by itself (two VMs, one VF); the refusal says what to do.

The DEFINE a host gets next is built from these records (`sriov_nics.with_vfs`), so after a
fix the host is given what it already uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from bollard.domain.drift import Drift, DriftClass
from bollard.domain.errors import BollardError
from bollard.domain.models import Nic, Vm
from bollard.domain.sriov_drift import vf_text
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import sriov, sriov_reconcile, vms
from bollard.store.sriov import VfRow

MACVTAP = "macvtap"


class Skipped(Exception):
    """The difference is gone or changed since it was detected; nothing was done."""


class SriovFixes:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock

    def fix(self, drift: Drift) -> str:
        """Fix one SR-IOV difference (blocking: run it in the unit of work's thread); what
        was done. Skipped when it is gone; BollardError when no fix is safe."""
        with self.work.write() as conn:
            if drift.kind is DriftClass.VF_UNRECORDED:
                return self._unrecorded(conn, drift)
            if drift.kind is DriftClass.VF_MISMATCH:
                return self._mismatch(conn, drift)
            if drift.kind is DriftClass.VF_LEAKED:
                return self._leaked(conn, drift)
            if drift.kind is DriftClass.VF_CONFLICT:
                raise BollardError(
                    f"{drift.record}, {drift.host}: no automatic fix for two VMs on one VF "
                    "(move or restart one of them, or delete it)"
                )
        raise BollardError(f"not an SR-IOV difference: {drift.kind}")

    def _vf(self, conn: Connection, drift: Drift, where: dict[str, Any]) -> VfRow:
        row = sriov.vf(conn, drift.node or "", str(where["pf"]), int(where["idx"]))
        if row is None or row.pci != where["pci"]:
            raise Skipped(f"{drift.node} no longer has that VF")
        if row.task_id is not None:
            raise Skipped(f"task {row.task_id} claimed the VF meanwhile")
        return row

    def _vm_here(self, conn: Connection, drift: Drift, uuid: str) -> Vm:
        vm = vms.find_by_uuid(conn, uuid)
        if vm is None:
            raise BollardError(
                f"VM {uuid} is not in the database: its use of the VF on {drift.node} is "
                "not recorded (delete the VM on the host, as an orphan)"
            )
        if vm.task_id is not None:
            raise Skipped(f"task {vm.task_id} holds the VM now")
        if vm.node != drift.node:
            raise BollardError(
                f"{vm.name} lives on {vm.node or 'no node'}, not {drift.node}: the VF its copy "
                f"uses there is not recorded (destroy the copy, as an orphan)"
            )
        return vm

    def _unrecorded(self, conn: Connection, drift: Drift) -> str:
        user = str(drift.data["user"])
        row = self._vf(conn, drift, drift.data)
        if row.used_by is not None or row.host_used_by != user:
            raise Skipped("the VF's holder or user changed meanwhile")
        vm = self._vm_here(conn, drift, user)
        nic = _nic_without_vf(conn, vm, row)
        if not sriov_reconcile.take(
            conn, node=row.node, pf=row.pf, idx=row.idx, vm=vm.uuid, mac=nic.mac,
            now=self.clock.now(),
        ):  # fmt: skip
            raise Skipped("the VF was claimed meanwhile")
        return f"{vf_text(row.pf, row.idx, row.pci)} recorded as held by {vm.name}'s NIC {nic.mac}"

    def _mismatch(self, conn: Connection, drift: Drift) -> str:
        held_at, used_at = drift.data["held"], drift.data["used"]
        held = self._vf(conn, drift, held_at)
        used = self._vf(conn, drift, used_at)
        user = drift.vm_uuid
        if held.used_by != user or held.host_used_by is not None or held.mac is None:
            raise Skipped("the VF the VM holds changed meanwhile")
        if used.used_by is not None or used.host_used_by != user:
            raise Skipped("the VF the host uses changed meanwhile")
        vm = self._vm_here(conn, drift, user)
        nic = next((n for n in vm.nics if n.mac.lower() == held.mac), None)
        if nic is not None and nic.mode == MACVTAP and used.netdev is None:
            raise BollardError(
                f"{vf_text(used.pf, used.idx, used.pci)} has no network device, which "
                f"{vm.name}'s macvtap NIC {nic.mac} needs: its claim is left as it is"
            )
        sriov.release(conn, vm=user, node=held.node, mac=held.mac)
        if not sriov_reconcile.take(
            conn, node=used.node, pf=used.pf, idx=used.idx, vm=user, mac=held.mac,
            now=self.clock.now(),
        ):  # fmt: skip
            raise Skipped("the VF the host uses was claimed meanwhile")
        return (
            f"{vm.name}'s NIC {held.mac}: claim moved from {vf_text(held.pf, held.idx, held.pci)}"
            f" to {vf_text(used.pf, used.idx, used.pci)}"
        )

    def _leaked(self, conn: Connection, drift: Drift) -> str:
        holder = str(drift.data["holder"])
        row = self._vf(conn, drift, drift.data)
        if row.used_by != holder or row.host_used_by is not None or row.mac is None:
            raise Skipped("the VF's holder or user changed meanwhile")
        vm = vms.find_by_uuid(conn, holder)
        if vm is not None and vm.task_id is not None:
            raise Skipped(f"task {vm.task_id} holds the VM now")
        if vm is not None and vm.node == row.node:
            raise Skipped(f"{vm.name} lives on {row.node} now")
        sriov.release(conn, vm=holder, node=row.node, mac=row.mac)
        name = holder if vm is None else vm.name
        return f"{vf_text(row.pf, row.idx, row.pci)} released (held by {name})"


def _nic_without_vf(conn: Connection, vm: Vm, row: VfRow) -> Nic:
    """The VM's first SR-IOV NIC on the VF's physical network that holds no VF on its node
    and can take this VF; BollardError saying why there is none."""
    held = {v.mac for v in sriov.holders(conn, vm.uuid) if v.node == row.node}
    on_physnet = [n for n in vm.nics if n.sriov == row.physnet]
    free = [n for n in on_physnet if n.mac.lower() not in held]
    fits = [n for n in free if n.mode != MACVTAP or row.netdev is not None]
    if fits:
        return fits[0]
    if not on_physnet:
        why = f"has no SR-IOV NIC on physical network {row.physnet}"
    elif not free:
        why = f"holds a VF on {row.node} for each of its NICs on {row.physnet} already"
    else:
        why = "has only macvtap NICs there without a VF, and this VF has no network device"
    raise BollardError(
        f"{vm.name} {why}: {vf_text(row.pf, row.idx, row.pci)} is not recorded as its"
    )
