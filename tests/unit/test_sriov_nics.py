"""The server's SR-IOV NIC helpers on a real store (SQLite, and PostgreSQL when reachable):
what a VM's NICs need of a node, the claim of one VF per SR-IOV NIC (macvtap first, all or
nothing once the caller rolls back), and the DEFINE's NICs filled from the VFs held."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.models import Nic
from bollard.domain.sriov import SriovPf, SriovVf
from bollard.server import sriov_nics
from bollard.store import nodes, sriov
from bollard.store.db import Database

NOW = datetime(2025, 1, 1, tzinfo=UTC)
VM = "11111111-2222-3333-4444-555555555555"
MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"


class _RolledBack(Exception):
    pass


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """node1: PF ens1 on fast with VF 0 (network device ens1v0) and VF 1 bound to vfio-pci
    (no network device); PF ens2 on slow with one VF."""
    database = Database(db_url)
    fast = SriovPf(device="ens1", physnet="fast", vfs=[
        SriovVf(index=0, pci="0000:03:10.0", netdev="ens1v0"),
        SriovVf(index=1, pci="0000:03:10.1"),
    ])  # fmt: skip
    slow = SriovPf(device="ens2", physnet="slow", vfs=[
        SriovVf(index=0, pci="0000:04:10.0", netdev="ens2v0"),
    ])  # fmt: skip
    with database.write() as conn:
        nodes.create(conn, "node1", "hash1", NOW)
        sriov.sync_node(conn, "node1", [fast, slow], now=NOW)
    yield database
    database.dispose()


def _nic(mac: str, physnet: str | None, mode: str | None = None) -> Nic:
    if physnet is None:
        return Nic(mac=mac, bridge="br0")
    return Nic(mac=mac, sriov=physnet, mode=mode or "macvtap")


def _held(db: Database) -> dict[str, tuple[str, int]]:
    with db.read() as conn:
        return {v.mac or "": (v.pf, v.idx) for v in sriov.holders(conn, VM)}


def test_what_the_nics_need_of_a_node() -> None:
    nics = [_nic(MAC1, "fast", "hostdev"), _nic(MAC2, "fast"), _nic(MAC3, None)]
    assert sriov_nics.vf_needs(nics) == ({"fast": 2}, frozenset({"fast"}))
    assert sriov_nics.vf_needs([_nic(MAC1, "slow", "hostdev")]) == ({"slow": 1}, frozenset())
    assert sriov_nics.vf_needs([_nic(MAC3, None)]) == ({}, frozenset())


def test_free_vfs_count_only_network_devices_where_a_macvtap_nic_needs_one(
    db: Database,
) -> None:
    with db.read() as conn:
        assert sriov_nics.free_vfs(conn, {"fast": 1}, frozenset()) == {"node1": {"fast": 2}}
        assert sriov_nics.free_vfs(conn, {"fast": 1, "slow": 1}, frozenset({"fast"})) == {
            "node1": {"fast": 1, "slow": 1}
        }


def test_a_physnet_no_node_has_is_named_with_its_nic(db: Database) -> None:
    with db.read() as conn:
        sriov_nics.check_physnets(conn, [_nic(MAC1, None), _nic(MAC2, "fast")])
        with pytest.raises(InvalidInput, match=r"^nics\[1\]: no node has SR-IOV physical "
                           r"network nope$"):  # fmt: skip
            sriov_nics.check_physnets(conn, [_nic(MAC1, "fast"), _nic(MAC2, "nope")])


def test_macvtap_claims_first_so_a_hostdev_nic_does_not_take_its_only_netdev_vf(
    db: Database,
) -> None:
    # Listed hostdev first: claimed in NIC order, it would take VF 0 (the lowest free) and
    # leave the macvtap NIC only VF 1, which has no network device.
    nics = [_nic(MAC1, "fast", "hostdev"), _nic(MAC2, "fast", "macvtap")]
    with db.write() as conn:
        assert sriov_nics.claim_for(conn, VM, "node1", nics, NOW)
    assert _held(db) == {MAC2: ("ens1", 0), MAC1: ("ens1", 1)}
    with db.write() as conn:  # again: each NIC keeps what it holds
        assert sriov_nics.claim_for(conn, VM, "node1", nics, NOW)
    assert _held(db) == {MAC2: ("ens1", 0), MAC1: ("ens1", 1)}


def test_a_claim_short_of_a_vf_is_false_and_its_rollback_leaves_nothing(db: Database) -> None:
    nics = [_nic(MAC1, "slow"), _nic(MAC2, "slow")]  # slow has one VF
    with pytest.raises(_RolledBack), db.write() as conn:
        if not sriov_nics.claim_for(conn, VM, "node1", nics, NOW):
            raise _RolledBack
    assert _held(db) == {}


def test_define_nics_get_the_vf_each_holds_on_the_node(db: Database) -> None:
    nics = [_nic(MAC1, "fast", "hostdev"), _nic(MAC2, "fast"), _nic(MAC3, None)]
    with db.write() as conn:
        assert sriov_nics.claim_for(conn, VM, "node1", nics, NOW)
    args = [
        {"mac": MAC1, "sriov": "fast", "mode": "hostdev", "model": "virtio"},
        {"mac": MAC2.upper(), "sriov": "fast", "mode": "macvtap", "model": "virtio"},
        {"mac": MAC3, "bridge": "br0", "model": "virtio"},
    ]
    with db.read() as conn:
        filled = sriov_nics.with_vfs(conn, VM, "node1", args)
    assert filled == [
        {**args[0], "vf_pci": "0000:03:10.1"},
        {**args[1], "vf_pci": "0000:03:10.0", "vf_netdev": "ens1v0"},
        args[2],
    ]
    with db.read() as conn:  # no SR-IOV NIC: as given
        assert sriov_nics.with_vfs(conn, VM, "node1", [args[2]]) == [args[2]]


def test_a_nic_that_holds_no_vf_on_the_node_is_never_defined(db: Database) -> None:
    args = [{"mac": MAC1, "sriov": "fast", "mode": "macvtap", "model": "virtio"}]
    with db.read() as conn, pytest.raises(Conflict, match=f"NIC {MAC1} of VM {VM} holds no "
                                          "SR-IOV VF on node node1"):  # fmt: skip
        sriov_nics.with_vfs(conn, VM, "node1", args)
    with db.write() as conn:  # held on node1: not on node2
        assert sriov_nics.claim_for(conn, VM, "node1", [_nic(MAC1, "fast")], NOW)
    with db.read() as conn, pytest.raises(Conflict, match="on node node2"):
        sriov_nics.with_vfs(conn, VM, "node2", args)


def test_a_macvtap_nic_on_a_vf_without_a_network_device_is_refused(db: Database) -> None:
    nics = [_nic(MAC2, "fast"), _nic(MAC1, "fast", "hostdev")]
    with db.write() as conn:  # MAC1 holds VF 1 (bound to vfio-pci), then asked as macvtap
        assert sriov_nics.claim_for(conn, VM, "node1", nics, NOW)
    args = [{"mac": MAC1, "sriov": "fast", "mode": "macvtap", "model": "virtio"}]
    with db.read() as conn, pytest.raises(Conflict, match="has no network device"):
        sriov_nics.with_vfs(conn, VM, "node1", args)
