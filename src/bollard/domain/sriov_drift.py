"""SR-IOV differences: the VM the record gives each VF against the VM its host says uses it
(issue 22). Pure: the state reconciler gathers the facts (`Facts.vfs`: every VF that someone
holds or uses, with the record's holder and the host's last reported user), this decides.

On each node, a VM's VFs are looked at two ways: those the record gives it (``used_by``) and
those its definition on the host uses (``host_used_by``). Where the two agree, all is well.
Otherwise:

- vf-conflict: the record gives the VF to one VM and the host says another uses it. Two VMs
  have a claim on one device, and which one is right is not for a reconciler to guess:
  reported only (move or restart one of them, so its DEFINE names the VF it holds).
- vf-mismatch: the record gives VM X the VF v on X's node, and X's definition there uses
  another VF w of the same physical network that the record gives nobody. Fix: the claim
  moves from v to w (for the same NIC): the record follows what the VM really uses, and v
  is free again.
- vf-unrecorded: the host says VM X uses a VF w that the record gives nobody, with no VF of
  X's to account for it. Fix, for a VM the record has on that node: w is recorded as held by
  X's NIC on w's physical network that holds no VF there. A VM unknown to Bollard, or one
  whose record is on another node (a copy left behind, which an orphan difference names),
  is reported only.
- vf-leaked: the record gives VM X a VF on a node where X does not live (its record is on
  another node, or gone) and the host does not say X uses it: a claim that a move or a
  delete left behind. Fix: the VF is released.

Not called: a VF the record gives X on X's own node that the host does not show X using,
with no other VF to account for it. The host may not have defined X yet, or at all (then a
stale difference says so), and a VM that came in by migration may be listed before its
definition's NICs are.

As for the other classes, a difference is called only when the facts vouch for it: the
node's inventory is current (connected, full report in this session, not fenced), its last
report came after the VF was claimed and after every VM involved last changed (a report
built before a task ended says nothing of its outcome; the SR-IOV part goes with every report
that changes it), and neither the VF (a task's claim, not committed yet) nor a VM involved is
a task's business.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bollard.domain.drift import Drift, DriftClass, Facts, NodeView, VfView, VmView
from bollard.domain.states import NodeHealth, VmState

_SKIP_STATES = frozenset({VmState.BUILDING, VmState.DELETED})


def classify_vfs(facts: Facts) -> list[Drift]:
    """The SR-IOV differences of every node whose facts can vouch for them."""
    by_uuid = {vm.uuid: vm for vm in facts.vms}
    per_node: dict[str, list[VfView]] = defaultdict(list)
    for vf in facts.vfs:
        per_node[vf.node].append(vf)
    found: list[Drift] = []
    for name, vfs in sorted(per_node.items()):
        node = facts.nodes.get(name)
        if node is None or node.health is NodeHealth.FENCED or not node.inventory_known:
            continue
        found.extend(_Node(node, facts, by_uuid).drifts(vfs))
    return found


def vf_text(pf: str, idx: int, pci: str) -> str:
    """A VF as the differences name it: "ens1f0 VF 3 (0000:03:10.3)"."""
    return f"{pf} VF {idx} ({pci})"


def _text(vf: VfView) -> str:
    return vf_text(vf.pf, vf.idx, vf.pci)


def _where(vf: VfView) -> dict[str, Any]:
    return {"pf": vf.pf, "idx": vf.idx, "pci": vf.pci, "physnet": vf.physnet}


class _Node:
    """One node's VFs judged against its facts."""

    def __init__(self, node: NodeView, facts: Facts, by_uuid: Mapping[str, VmView]) -> None:
        self.node = node
        self.facts = facts
        self.by_uuid = by_uuid

    def drifts(self, vfs: Sequence[VfView]) -> Iterable[Drift]:
        judged = sorted(
            (vf for vf in vfs if vf.used_by != vf.host_used_by and self._judgeable(vf)),
            key=lambda vf: (vf.pf, vf.idx),
        )
        # The VFs the record gives a VM and its host does not show it using, by (VM, physnet):
        # what may account for a VF the host says the VM uses instead.
        spare: dict[tuple[str, str], list[VfView]] = defaultdict(list)
        for vf in judged:
            if vf.used_by is not None and vf.host_used_by is None:
                spare[(vf.used_by, vf.physnet)].append(vf)
        for vf in judged:
            user, holder = vf.host_used_by, vf.used_by
            if user is None:
                continue
            if holder is not None:
                yield self._conflict(vf, holder, user)
                continue
            pool = spare.get((user, vf.physnet))
            if pool and self._lives_here(user):
                yield self._mismatch(pool.pop(0), vf, user)
            else:
                yield self._unrecorded(vf, user)
        for pool in spare.values():
            for vf in pool:
                assert vf.used_by is not None
                if not self._lives_here(vf.used_by):
                    yield self._leaked(vf, vf.used_by)

    # -- when the facts vouch ----------------------------------------------------------

    def _after(self, when: datetime | None) -> bool:
        last = self.node.last_report
        return when is None or (last is not None and last > when)

    def _judgeable(self, vf: VfView) -> bool:
        if vf.task_id is not None or self.node.last_report is None:
            return False
        if not self._after(vf.claimed_at):
            return False
        for uuid in (vf.used_by, vf.host_used_by):
            if uuid is None:
                continue
            vm = self.by_uuid.get(uuid)
            if vm is None:
                if not self._after(self.facts.deleted_at.get(uuid)):
                    return False  # deleted just now: the host's next report drops it
            elif vm.task_id is not None or vm.vm_state in _SKIP_STATES:
                return False  # a task's business, or not made yet
            elif not self._after(vm.updated_at):
                return False  # reported before the VM's record last changed
        return True

    def _lives_here(self, uuid: str) -> bool:
        vm = self.by_uuid.get(uuid)
        return vm is not None and vm.node == self.node.name

    def _name(self, uuid: str) -> str:
        vm = self.by_uuid.get(uuid)
        if vm is not None:
            return vm.name
        entry = self.facts.hosts.get(self.node.name, {}).get(uuid)
        return entry.name if entry is not None else uuid

    # -- the classes -------------------------------------------------------------------

    def _conflict(self, vf: VfView, holder: str, user: str) -> Drift:
        return Drift(
            DriftClass.VF_CONFLICT, self.node.name, user, self._name(user),
            record=f"{_text(vf)} held by {self._name(holder)}",
            host=f"{_text(vf)} used by {self._name(user)}",
            detail="two VMs on one VF: reported only (move or restart one of them)",
            data=_where(vf) | {"holder": holder, "user": user},
        )  # fmt: skip

    def _mismatch(self, held: VfView, used: VfView, user: str) -> Drift:
        return Drift(
            DriftClass.VF_MISMATCH, self.node.name, user, self._name(user),
            record=f"holds {_text(held)}", host=f"uses {_text(used)}",
            detail="fix: the claim moves to the VF the host uses",
            data={
                "physnet": used.physnet, "mac": held.mac,
                "held": {"pf": held.pf, "idx": held.idx, "pci": held.pci},
                "used": {"pf": used.pf, "idx": used.idx, "pci": used.pci},
            },
        )  # fmt: skip

    def _unrecorded(self, vf: VfView, user: str) -> Drift:
        vm = self.by_uuid.get(user)
        if vm is None:
            detail = "a VM unknown to Bollard: reported only"
        elif vm.node != self.node.name:
            detail = f"{vm.name} lives on {vm.node or 'no node'}: reported only"
        else:
            detail = f"fix: recorded as held by {vm.name}'s NIC on {vf.physnet}"
        return Drift(
            DriftClass.VF_UNRECORDED, self.node.name, user, self._name(user),
            record=f"{_text(vf)} held by nobody", host=f"{_text(vf)} used by {self._name(user)}",
            detail=detail, data=_where(vf) | {"user": user},
        )  # fmt: skip

    def _leaked(self, vf: VfView, holder: str) -> Drift:
        vm = self.by_uuid.get(holder)
        where = "is not in the database" if vm is None else f"lives on {vm.node or 'no node'}"
        return Drift(
            DriftClass.VF_LEAKED, self.node.name, holder, self._name(holder),
            record=f"holds {_text(vf)}", host=f"{_text(vf)} unused; the VM {where}",
            detail="fix: the VF is released",
            data=_where(vf) | {"holder": holder, "mac": vf.mac},
        )  # fmt: skip
