"""A VM's NICs in the hypervisors without networks (sim, memory): kept as ``define`` is
given them, by the rule of every driver (see ``base``), and the VFs their SR-IOV NICs use.

The libvirt driver keeps NICs in its domain XML by the same rule (``libvirt.xml``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bollard.agent.drivers.base import NicSpec


def same_vf(a: NicSpec, b: NicSpec) -> bool:
    """Whether the two NICs are on one VF, taken in one mode."""
    return (a.mode, a.vf_pci, a.vf_netdev) == (b.mode, b.vf_pci, b.vf_netdev)


def merged_nics(have: Sequence[NicSpec], wanted: Iterable[NicSpec]) -> tuple[NicSpec, ...]:
    """``have`` with each NIC of ``wanted`` whose MAC it lacks added at the end, and each
    SR-IOV NIC of ``wanted`` it has on another VF (or not on a VF) put in its place: the VF
    a VM holds on a host is the server's claim, never what an older definition says. The
    other NICs it has stay as they are."""
    nics = list(have)
    at = {nic.mac: i for i, nic in reversed(list(enumerate(nics)))}  # the first of a MAC
    for nic in wanted:
        i = at.get(nic.mac)
        if i is None:
            at[nic.mac] = len(nics)
            nics.append(nic)
        elif nic.sriov is not None and (nics[i].sriov is None or not same_vf(nics[i], nic)):
            nics[i] = nic
    return tuple(nics)


def vf_users_of(vms: Iterable[tuple[str, Iterable[NicSpec]]]) -> dict[str, str]:
    """``{VF PCI address: VM uuid}`` over ``(uuid, NICs)`` pairs (VfUseSource.vf_users);
    where two VMs name one VF, the first one given."""
    users: dict[str, str] = {}
    for uuid, nics in vms:
        for nic in nics:
            key = nic.vf_key()
            if key is not None:
                users.setdefault(key, uuid)
    return users
