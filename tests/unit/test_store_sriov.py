"""The SR-IOV store (store/sriov.py) on SQLite and PostgreSQL: an agent's report adds,
updates and removes PFs and VFs (handing back the held VFs it removed), claims take the lowest
free VF and are idempotent per NIC, a task's rollback releases only what it claimed, two
concurrent claims never get one VF, and migration 0016 upgrades and downgrades."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.sriov import SriovPf, SriovVf, VfSettings
from bollard.store import migrate, nodes, sriov
from bollard.store.db import Database
from tests.support.cluster import wait_until

NOW = datetime(2026, 12, 7, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
DEADLINE = 30.0  # seconds for a claim made in another thread


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    with database.write() as conn:
        nodes.create(conn, "node1", "hash1", NOW)
        nodes.create(conn, "node2", "hash2", NOW)
    yield database
    database.dispose()


def _pf(
    device: str = "ens1f0",
    physnet: str = "phys1",
    count: int = 3,
    bus: int = 3,
    *,
    netdevs: bool = True,
    mtu: int | None = 9000,
) -> SriovPf:
    vfs = [
        SriovVf(
            index=i,
            pci=f"0000:{bus:02x}:10.{i}",
            netdev=f"{device}v{i}" if netdevs else None,
            settings=VfSettings(vlan=0, spoof_check=True),
        )
        for i in range(count)
    ]
    return SriovPf(
        device=device, physnet=physnet, pci=f"0000:{bus:02x}:00.0", mtu=mtu, vfs_total=64, vfs=vfs
    )


def _sync(db: Database, node: str, pfs: list[SriovPf], now: datetime = NOW) -> list[sriov.VfRow]:
    with db.write() as conn:
        return sriov.sync_node(conn, node, pfs, now=now)


def _claim(
    db: Database,
    node: str,
    vm: str,
    mac: str,
    *,
    physnet: str = "phys1",
    task_id: str | None = None,
    mode: str | None = None,
) -> sriov.VfRow | None:
    with db.write() as conn:
        return sriov.claim(
            conn, node=node, physnet=physnet, vm=vm, mac=mac, now=NOW, task_id=task_id, mode=mode
        )


def _holders(db: Database) -> list[tuple[str, str, int, str | None, str | None, str | None]]:
    with db.read() as conn:
        rows = sriov.vfs_of(conn, "node1") + sriov.vfs_of(conn, "node2")
    return [(v.node, v.pf, v.idx, v.used_by, v.mac, v.task_id) for v in rows if v.used_by]


# --- the agent's report ----------------------------------------------------------------------


def test_a_report_adds_pfs_and_vfs(db: Database) -> None:
    assert _sync(db, "node1", [_pf(), _pf("ens1f1", "phys2", count=2, bus=4, mtu=None)]) == []
    with db.read() as conn:
        pfs = sriov.pfs_of(conn, "node1")
        assert [(p.device, p.physnet, p.pci, p.mtu, p.vfs_total, p.vfs) for p in pfs] == [
            ("ens1f0", "phys1", "0000:03:00.0", 9000, 64, 3),
            ("ens1f1", "phys2", "0000:04:00.0", None, 64, 2),
        ]
        assert pfs[0].updated_at == NOW
        vfs = sriov.vfs_of(conn, "node1")
        assert [(v.pf, v.idx, v.physnet, v.pci, v.netdev) for v in vfs] == [
            ("ens1f0", 0, "phys1", "0000:03:10.0", "ens1f0v0"),
            ("ens1f0", 1, "phys1", "0000:03:10.1", "ens1f0v1"),
            ("ens1f0", 2, "phys1", "0000:03:10.2", "ens1f0v2"),
            ("ens1f1", 0, "phys2", "0000:04:10.0", "ens1f1v0"),
            ("ens1f1", 1, "phys2", "0000:04:10.1", "ens1f1v1"),
        ]
        first = vfs[0]
        assert first.applied == VfSettings(vlan=0, spoof_check=True)
        assert first.settings == VfSettings()  # Bollard has set nothing yet
        assert (first.used_by, first.mac, first.task_id, first.claimed_at) == (None,) * 4
        assert first.free
        assert [v.idx for v in sriov.vfs_of(conn, "node1", "ens1f1")] == [0, 1]
        assert sriov.vfs_of(conn, "node2") == []
        assert sriov.vf(conn, "node1", "ens1f1", 1) == vfs[4]
        assert sriov.vf(conn, "node1", "ens1f1", 2) is None
        assert sriov.physnets(conn) == {"phys1", "phys2"}
        assert sriov.free_counts(conn, "phys1") == {"node1": 3}
        assert sriov.free_counts(conn, "nowhere") == {}


def test_a_report_updates_only_what_changed(db: Database) -> None:
    _sync(db, "node1", [_pf(), _pf("ens1f1", "phys2", count=1, bus=4)])
    changed = _pf(mtu=1500)
    moved = changed.vfs[1].model_copy(
        update={"netdev": None, "settings": VfSettings(vlan=100), "used_by": "vm-x"}
    )
    changed.vfs[1] = moved
    assert _sync(db, "node1", [changed, _pf("ens1f1", "phys2", count=1, bus=4)], LATER) == []
    with db.read() as conn:
        pfs = {p.device: p for p in sriov.pfs_of(conn, "node1")}
        assert (pfs["ens1f0"].mtu, pfs["ens1f0"].updated_at) == (1500, LATER)
        assert pfs["ens1f1"].updated_at == NOW  # reported as it was: not written
        vf1 = sriov.vf(conn, "node1", "ens1f0", 1)
        assert vf1 is not None
        assert (vf1.netdev, vf1.applied, vf1.host_used_by) == (None, VfSettings(vlan=100), "vm-x")
        assert vf1.used_by is None  # the host's view is not a claim
        assert sriov.free_counts(conn, "phys1") == {"node1": 3}
        assert sriov.free_counts(conn, "phys1", mode="macvtap") == {"node1": 2}


def test_a_report_removes_what_the_host_no_longer_has(db: Database) -> None:
    _sync(db, "node1", [_pf(count=4), _pf("ens1f1", "phys2", count=2, bus=4)])
    held_vf = _claim(db, "node1", "vm-a", "52:54:00:00:00:0a")
    assert held_vf is not None and (held_vf.pf, held_vf.idx) == ("ens1f0", 0)
    with db.write() as conn:
        sriov.set_settings(conn, "node1", "ens1f0", 3, VfSettings(vlan=7))
        sriov.claim(
            conn, node="node1", physnet="phys2", vm="vm-b", mac="52:54:00:00:00:0b", now=NOW
        )

    # ens1f0 now has 3 VFs (VF 3 is gone, free); ens1f1 is gone with its VFs (one held).
    lost = _sync(db, "node1", [_pf(count=3)], LATER)
    assert [(v.pf, v.idx, v.used_by, v.mac) for v in lost] == [
        ("ens1f1", 0, "vm-b", "52:54:00:00:00:0b")
    ]
    with db.read() as conn:
        assert [p.device for p in sriov.pfs_of(conn, "node1")] == ["ens1f0"]
        assert [(v.pf, v.idx) for v in sriov.vfs_of(conn, "node1")] == [
            ("ens1f0", 0), ("ens1f0", 1), ("ens1f0", 2)
        ]  # fmt: skip
        assert sriov.physnets(conn) == {"phys1"}
        assert sriov.holders(conn, "vm-b") == []
    assert _holders(db) == [("node1", "ens1f0", 0, "vm-a", "52:54:00:00:00:0a", None)]

    # VF 0's PCI address changes: another device now. Its holder loses it, its settings stay.
    with db.write() as conn:
        sriov.set_settings(conn, "node1", "ens1f0", 0, VfSettings(trust=True))
    readdressed = _pf(count=3)
    readdressed.vfs[0] = readdressed.vfs[0].model_copy(update={"pci": "0000:03:11.0"})
    lost = _sync(db, "node1", [readdressed], LATER)
    assert [(v.idx, v.pci, v.used_by) for v in lost] == [(0, "0000:03:10.0", "vm-a")]
    with db.read() as conn:
        vf0 = sriov.vf(conn, "node1", "ens1f0", 0)
        assert vf0 is not None
        assert (vf0.pci, vf0.used_by, vf0.settings) == (
            "0000:03:11.0",
            None,
            VfSettings(trust=True),
        )
    assert _holders(db) == []

    # A report without PFs clears the node.
    assert _sync(db, "node1", []) == []
    with db.read() as conn:
        assert sriov.pfs_of(conn, "node1") == [] and sriov.vfs_of(conn, "node1") == []


def test_a_pf_its_agent_could_not_set_up_keeps_its_records_and_holders(db: Database) -> None:
    """A PF reported with an error is away for this boot, not removed: its VFs stay, and so
    do their holders, so none is handed out again while a VM holds it."""
    _sync(db, "node1", [_pf(count=2), _pf("ens1f1", "phys2", count=2, bus=4)])
    assert _claim(db, "node1", "vm-a", "52:54:00:00:00:0a", physnet="phys2") is not None
    away = SriovPf(device="ens1f1", physnet="phys2", error="no such network device")
    assert _sync(db, "node1", [_pf(count=2), away], LATER) == []
    with db.read() as conn:
        assert [p.device for p in sriov.pfs_of(conn, "node1")] == ["ens1f0", "ens1f1"]
        assert len(sriov.vfs_of(conn, "node1", "ens1f1")) == 2
    assert _holders(db) == [("node1", "ens1f1", 0, "vm-a", "52:54:00:00:00:0a", None)]
    # Back at the next boot: synced as usual; left out of the configuration: removed.
    _sync(db, "node1", [_pf(count=2), _pf("ens1f1", "phys2", count=2, bus=4)], LATER)
    assert _holders(db) == [("node1", "ens1f1", 0, "vm-a", "52:54:00:00:00:0a", None)]
    lost = _sync(db, "node1", [_pf(count=2)], LATER)
    assert [(v.pf, v.used_by) for v in lost] == [("ens1f1", "vm-a")]


def test_a_report_that_is_not_valid_changes_nothing(db: Database) -> None:
    _sync(db, "node1", [_pf()])
    twice = _pf(count=2)
    twice.vfs[1] = twice.vfs[1].model_copy(update={"pci": twice.vfs[0].pci})
    with pytest.raises(
        InvalidInput, match=r"node node1: PCI address 0000:03:10\.0 reported for two"
    ):
        _sync(db, "node1", [twice, _pf("ens1f1", bus=4)])
    with pytest.raises(InvalidInput, match="PF ens1f0 reported twice"):
        _sync(db, "node1", [_pf(count=1), _pf(count=2)])
    bad_pci = _pf(count=1)
    bad_pci.vfs[0] = bad_pci.vfs[0].model_copy(update={"pci": "03:10.0"})
    with pytest.raises(InvalidInput, match=r"VF 0: PCI address '03:10\.0' not valid"):
        _sync(db, "node1", [bad_pci])
    with pytest.raises(InvalidInput, match="physical network 'a b'"):
        _sync(db, "node1", [_pf(physnet="a b")])
    with db.read() as conn:
        assert [p.device for p in sriov.pfs_of(conn, "node1")] == ["ens1f0"]
        assert len(sriov.vfs_of(conn, "node1")) == 3


def test_deleting_a_node_deletes_its_pfs_and_vfs(db: Database) -> None:
    _sync(db, "node2", [_pf()])
    with db.write() as conn:
        nodes.delete_node(conn, "node2")
    with db.read() as conn:
        assert sriov.pfs_of(conn, "node2") == [] and sriov.vfs_of(conn, "node2") == []
        assert sriov.physnets(conn) == set()


# --- claims ------------------------------------------------------------------------------------


def test_claims_take_the_lowest_free_vf_and_are_idempotent(db: Database) -> None:
    _sync(db, "node1", [_pf("ens2f0", count=1, bus=5), _pf("ens1f0", count=2)])
    _sync(db, "node2", [_pf(count=1)])
    first = _claim(db, "node1", "vm-a", "52:54:00:AA:00:01", task_id="t1")
    assert first is not None
    assert (first.pf, first.idx, first.used_by, first.mac, first.task_id, first.claimed_at) == (
        "ens1f0", 0, "vm-a", "52:54:00:aa:00:01", "t1", NOW
    )  # fmt: skip
    assert not first.free
    assert _claim(db, "node1", "vm-a", "52:54:00:aa:00:01", task_id="t2") == first  # same NIC
    second = _claim(db, "node1", "vm-a", "52:54:00:aa:00:02")
    assert second is not None and (second.pf, second.idx, second.task_id) == ("ens1f0", 1, None)
    third = _claim(db, "node1", "vm-b", "52:54:00:bb:00:01")
    assert third is not None and (third.pf, third.idx) == ("ens2f0", 0)
    assert _claim(db, "node1", "vm-c", "52:54:00:cc:00:01") is None  # all taken
    assert _claim(db, "node1", "vm-c", "52:54:00:cc:00:01", physnet="phys2") is None
    with db.read() as conn:
        assert sriov.free_counts(conn, "phys1") == {"node1": 0, "node2": 1}
        assert [(v.node, v.pf, v.idx) for v in sriov.holders(conn, "vm-a")] == [
            ("node1", "ens1f0", 0), ("node1", "ens1f0", 1)
        ]  # fmt: skip
        assert [v.idx for v in sriov.claims_of_task(conn, "t1")] == [0]
        assert sriov.claims_of_task(conn, "t2") == []


def test_a_macvtap_claim_needs_a_vf_with_a_network_device(db: Database) -> None:
    _sync(db, "node1", [_pf("ens1f0", count=1, netdevs=False), _pf("ens2f0", count=1, bus=5)])
    got = _claim(db, "node1", "vm-a", "52:54:00:00:00:01", mode="macvtap")
    assert got is not None and (got.pf, got.netdev) == ("ens2f0", "ens2f0v0")
    assert _claim(db, "node1", "vm-b", "52:54:00:00:00:02", mode="macvtap") is None
    hostdev = _claim(db, "node1", "vm-b", "52:54:00:00:00:02", mode="hostdev")
    assert hostdev is not None and hostdev.pf == "ens1f0"


def test_bad_claims_are_refused_with_the_value(db: Database) -> None:
    _sync(db, "node1", [_pf()])
    with pytest.raises(InvalidInput, match="'not-a-mac' is not a MAC address"):
        _claim(db, "node1", "vm-a", "not-a-mac")
    with pytest.raises(InvalidInput, match="SR-IOV mode 'vhost'"):
        _claim(db, "node1", "vm-a", "52:54:00:00:00:01", mode="vhost")
    with pytest.raises(InvalidInput, match="physical network 'bad net'"):
        _claim(db, "node1", "vm-a", "52:54:00:00:00:01", physnet="bad net")
    assert _holders(db) == []


def test_commit_and_release_follow_the_task(db: Database) -> None:
    """A migration of vm-a from node1 to node2: the target's claim belongs to the task until
    committed; a rollback releases it and keeps the source's; a committed migration releases
    the source's."""
    _sync(db, "node1", [_pf()])
    _sync(db, "node2", [_pf(bus=7)])
    mac = "52:54:00:00:00:01"
    assert _claim(db, "node1", "vm-a", mac) is not None  # placed: committed at once
    assert _claim(db, "node2", "vm-a", mac, task_id="mig-1") is not None
    with db.write() as conn:
        # An HA restart on the VM's own node finds the committed claim; its rollback keeps it.
        again = sriov.claim(
            conn, node="node1", physnet="phys1", vm="vm-a", mac=mac, now=NOW, task_id="ha-1"
        )
        assert again is not None and again.task_id is None
        assert sriov.release(conn, vm="vm-a", node="node1", task_id="ha-1") == 0
        # The migration rolls back: only its own claim goes.
        assert sriov.release(conn, vm="vm-a", node="node2", task_id="mig-1") == 1
    assert _holders(db) == [("node1", "ens1f0", 0, "vm-a", mac, None)]

    assert _claim(db, "node2", "vm-a", mac, task_id="mig-2") is not None
    with db.write() as conn:
        assert sriov.commit(conn, vm="vm-a", node="node2") == 1
        assert sriov.commit(conn, vm="vm-a", node="node2") == 0
        assert sriov.release(conn, vm="vm-a", node="node2", task_id="mig-2") == 0  # committed
        assert sriov.release(conn, vm="vm-a", node="node1") == 1
    assert _holders(db) == [("node2", "ens1f0", 0, "vm-a", mac, None)]
    with db.read() as conn:
        freed = sriov.vf(conn, "node1", "ens1f0", 0)
        assert freed is not None
        assert (freed.used_by, freed.mac, freed.task_id, freed.claimed_at) == (None,) * 4


def test_release_by_nic_and_by_vm(db: Database) -> None:
    _sync(db, "node1", [_pf()])
    _sync(db, "node2", [_pf(bus=7)])
    for node, mac in (("node1", "52:54:00:00:00:01"), ("node1", "52:54:00:00:00:02")):
        assert _claim(db, node, "vm-a", mac) is not None
    assert _claim(db, "node2", "vm-a", "52:54:00:00:00:01", task_id="t") is not None
    assert _claim(db, "node1", "vm-b", "52:54:00:00:00:03") is not None
    with db.write() as conn:
        assert sriov.release(conn, vm="vm-a", node="node1", mac="52:54:00:00:00:02") == 1
        assert sriov.release(conn, vm="vm-a", node="node1", mac="52:54:00:00:00:02") == 0
        assert len(sriov.holders(conn, "vm-a")) == 2
        assert sriov.release_vm(conn, "vm-a") == 2
        assert sriov.holders(conn, "vm-a") == []
        assert sriov.release_vm(conn, "vm-a") == 0
    assert _holders(db) == [("node1", "ens1f0", 2, "vm-b", "52:54:00:00:00:03", None)]


# --- settings ----------------------------------------------------------------------------------


def test_settings_are_merged_and_bad_ones_change_nothing(db: Database) -> None:
    _sync(db, "node1", [_pf()])
    with db.write() as conn:
        row = sriov.set_settings(conn, "node1", "ens1f0", 1, VfSettings(vlan=100, qos=3))
        assert row.settings == VfSettings(vlan=100, qos=3)
        row = sriov.set_settings(
            conn, "node1", "ens1f0", 1, VfSettings(trust=True), applied=VfSettings(trust=True)
        )
        assert row.settings == VfSettings(vlan=100, qos=3, trust=True)
        assert row.applied == VfSettings(trust=True)
    with db.write() as conn:
        with pytest.raises(InvalidInput, match="vlan 4095"):
            sriov.set_settings(conn, "node1", "ens1f0", 1, VfSettings(vlan=4095))
        with pytest.raises(InvalidInput, match="min-tx-rate 20: above max-tx-rate 10"):
            sriov.set_settings(
                conn, "node1", "ens1f0", 1, VfSettings(min_tx_rate=20, max_tx_rate=10)
            )
        with pytest.raises(NotFound, match="node node1: PF ens1f0 has no VF 9"):
            sriov.set_settings(conn, "node1", "ens1f0", 9, VfSettings(vlan=1))
        with pytest.raises(NotFound, match="node node1 has no SR-IOV PF 'eth9'"):
            sriov.set_settings(conn, "node1", "eth9", 0, VfSettings(vlan=1))
    with db.read() as conn:
        kept = sriov.vf(conn, "node1", "ens1f0", 1)
        assert kept is not None and kept.settings == VfSettings(vlan=100, qos=3, trust=True)
    # A later report leaves the desired settings alone and records what the host applied.
    _sync(db, "node1", [_pf()], LATER)
    with db.read() as conn:
        kept = sriov.vf(conn, "node1", "ens1f0", 1)
        assert kept is not None and kept.settings == VfSettings(vlan=100, qos=3, trust=True)
        assert kept.applied == VfSettings(vlan=0, spoof_check=True)


# --- concurrency (PostgreSQL; SQLite serializes writers) ---------------------------------------


def _postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: claims cannot interleave")


def _claim_on(conn: Connection, vm: str, mac: str) -> sriov.VfRow | None:
    return sriov.claim(conn, node="node1", physnet="phys1", vm=vm, mac=mac, now=NOW)


def test_concurrent_claims_never_share_a_vf(db: Database) -> None:
    """Two open transactions claim on one node: the second skips the VF the first has locked
    (without waiting for it) and takes the next; a third finds none left."""
    _postgres_only(db)
    _sync(db, "node1", [_pf(count=2)])
    with (
        db.engine.connect() as one,
        db.engine.connect() as two,
        db.engine.connect() as three,
        one.begin(),
        two.begin(),
        three.begin(),
    ):
        for conn in (two, three):  # fail, not hang, if a claim waits for another
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        got_one = _claim_on(one, "vm-a", "52:54:00:00:00:01")
        got_two = _claim_on(two, "vm-b", "52:54:00:00:00:02")
        assert _claim_on(three, "vm-c", "52:54:00:00:00:03") is None
    assert got_one is not None and got_two is not None
    assert (got_one.idx, got_two.idx) == (0, 1)
    assert sorted(h[:5] for h in _holders(db)) == [
        ("node1", "ens1f0", 0, "vm-a", "52:54:00:00:00:01"),
        ("node1", "ens1f0", 1, "vm-b", "52:54:00:00:00:02"),
    ]


def test_many_concurrent_claims_get_distinct_vfs(db: Database) -> None:
    _postgres_only(db)
    _sync(db, "node1", [_pf(count=6)])

    def one_claim(n: int) -> int | None:
        got = _claim(db, "node1", f"vm-{n}", f"52:54:00:00:01:{n:02x}")
        return None if got is None else got.idx

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one_claim, n) for n in range(8)]
        results = [f.result(timeout=DEADLINE) for f in futures]
    taken = sorted(r for r in results if r is not None)
    assert taken == [0, 1, 2, 3, 4, 5]
    assert results.count(None) == 2


def test_one_nic_claiming_twice_at_once_holds_one_vf(db: Database) -> None:
    """The same NIC's claim in two transactions (a step run twice): the second waits on the
    first's uncommitted claim (node+mac is unique) and then returns the VF the first took."""
    _postgres_only(db)
    _sync(db, "node1", [_pf(count=3)])
    mac = "52:54:00:00:00:01"
    with db.engine.connect() as first, first.begin():
        got = sriov.claim(first, node="node1", physnet="phys1", vm="vm-a", mac=mac, now=NOW)
        assert got is not None and got.idx == 0
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(_claim, db, "node1", "vm-a", mac)
            wait_until(lambda: _waiting_on_a_lock(db), "the second claim to wait", DEADLINE)
            first.commit()
            again = second.result(timeout=DEADLINE)
    assert again is not None and (again.idx, again.used_by) == (0, "vm-a")
    assert _holders(db) == [("node1", "ens1f0", 0, "vm-a", mac, None)]


def _waiting_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()
    return bool(waiting)


# --- migration 0016 ----------------------------------------------------------------------------


def test_migration_0016_upgrades_and_downgrades(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        cfg = migrate._config(db)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0015")
            conn.execute(
                text(
                    "INSERT INTO nodes (name, token_hash, health, scheduling, connected, vcpus,"
                    " memory_mb, allocated_vcpus, allocated_memory_mb, last_seq, created_at,"
                    " updated_at) VALUES ('node1', 'h', 'up', 'ready', :no, 8, 8192, 0, 0, 0,"
                    " :now, :now)"
                ),
                {"no": False, "now": NOW},
            )
        assert not {"sriov_pfs", "sriov_vfs"} & set(inspect(db.engine).get_table_names())
        assert migrate.upgrade(db).revision == migrate.head_revision()
        _sync(db, "node1", [_pf()])
        assert _claim(db, "node1", "vm-a", "52:54:00:00:00:01") is not None
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0015")
        assert migrate.current_revision(db) == "0015"
        assert not {"sriov_pfs", "sriov_vfs"} & set(inspect(db.engine).get_table_names())
        migrate.upgrade(db)
        with db.read() as conn:
            assert sriov.pfs_of(conn, "node1") == []  # the report comes again at connect
            assert nodes.get(conn, "node1").name == "node1"
    finally:
        db.dispose()
