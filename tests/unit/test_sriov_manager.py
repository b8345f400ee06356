"""SriovManager (bollard.agent.sriov.manager): the agent's SR-IOV at start and on a VF change.

Over the simulated NIC (SimSriov) and, where a real host's behaviour matters (a VF without a
network device), the Linux backend over a fake host (tests/support/sriov_host.py). "Restart"
builds a new manager, backend and store over the same files, as an agent restart does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.sriov.backend import SriovBackend, SriovError
from bollard.agent.sriov.manager import SriovManager
from bollard.agent.sriov.settings_store import SriovSettingsStore
from bollard.agent.sriov.sim import DEFAULT_VF, SimSriov
from bollard.domain.errors import InvalidInput
from bollard.domain.sriov import PfConfig, SriovPf, VfSettings
from tests.support.sriov_host import FakeHost

T = TypeVar("T")
PF = PfConfig(device="ens1f0", vfs=4, physnet="physnet1", mtu=9000)
PF2 = PfConfig(device="ens1f1", vfs=2, physnet="physnet2")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Node:
    """A simulated host's SR-IOV files: the NIC's state and the agent's state dir."""

    def __init__(self, tmp_path: Path, vfs_total: int = 8) -> None:
        self.nic = tmp_path / "nic.json"
        self.state = tmp_path / "state"
        self.vfs_total = vfs_total

    def backend(self) -> SimSriov:
        return SimSriov(self.nic, vfs_total=self.vfs_total, devices=("ens1f0", "ens1f1"))

    def manager(self, pfs: list[PfConfig] | None = None) -> SriovManager:
        store = SriovSettingsStore.in_state_dir(self.state)
        return SriovManager(self.backend(), [PF, PF2] if pfs is None else pfs, store)

    def started(self, pfs: list[PfConfig] | None = None) -> SriovManager:
        manager = self.manager(pfs)
        run(manager.start())
        return manager

    def host(self, device: str, index: int) -> VfSettings:
        return run(self.backend().read(device, index))


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_start_sets_up_every_pf_and_reports_it(node: Node) -> None:
    pfs = run(node.manager().start())
    assert [(pf.device, pf.physnet, len(pf.vfs)) for pf in pfs] == [
        ("ens1f0", "physnet1", 4),
        ("ens1f1", "physnet2", 2),
    ]
    assert [vf.settings.mtu for vf in pfs[0].vfs] == [9000] * 4
    assert all(vf.used_by is None for pf in pfs for vf in pf.vfs)


def test_set_vf_applies_records_and_reports_the_vf(node: Node) -> None:
    manager = node.started()
    vf = run(manager.set_vf("ens1f0", 2, VfSettings(vlan=100, trust=True, mac="52:54:00:AB:CD:EF")))
    assert (vf.index, vf.settings.vlan, vf.settings.trust) == (2, 100, True)
    assert vf.settings.mac == "52:54:00:ab:cd:ef"
    assert node.host("ens1f0", 2) == vf.settings
    assert manager.pfs()[0].vfs[2].settings == vf.settings
    stored = SriovSettingsStore.in_state_dir(node.state).get("ens1f0", 2)
    assert stored == VfSettings(vlan=100, trust=True, mac="52:54:00:ab:cd:ef")


@pytest.mark.parametrize("restart", ["agent restart", "cold boot"])
def test_every_start_reapplies_the_recorded_settings(node: Node, restart: str) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 1, VfSettings(vlan=100, qos=2, max_tx_rate=500, mtu=4000)))
    run(manager.set_vf("ens1f1", 0, VfSettings(spoof_check=False, link_state="disable")))
    if restart == "cold boot":
        SimSriov.reboot(node.nic)
        with pytest.raises(SriovError, match="has no VF 0"):  # no VFs until the agent starts
            node.host("ens1f0", 0)
    pfs = run(node.manager().start())
    want = DEFAULT_VF.merged(VfSettings(vlan=100, qos=2, max_tx_rate=500, mtu=4000))
    assert pfs[0].vfs[1].settings == want == node.host("ens1f0", 1)
    assert node.host("ens1f1", 0) == DEFAULT_VF.merged(
        VfSettings(spoof_check=False, link_state="disable")
    )
    assert pfs[0].vfs[0].settings.mtu == 9000  # from the PF's configuration


def test_a_new_vf_count_keeps_the_settings_of_the_vfs_that_remain(node: Node) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 0, VfSettings(vlan=10)))
    run(manager.set_vf("ens1f0", 3, VfSettings(vlan=13)))
    fewer = PF.model_copy(update={"vfs": 2})
    run(node.manager([fewer, PF2]).start())
    assert node.host("ens1f0", 0).vlan == 10
    again = run(node.manager([PF, PF2]).start())
    assert again[0].vfs[3].settings.vlan == 0  # VF 3 was gone: its settings went with it
    stored = SriovSettingsStore.in_state_dir(node.state).all()
    assert stored == {"ens1f0": {0: VfSettings(vlan=10)}}


def test_a_pf_removed_from_the_configuration_is_forgotten(node: Node) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f1", 1, VfSettings(trust=True)))
    pfs = run(node.manager([PF]).start())
    assert [pf.device for pf in pfs] == ["ens1f0"]
    assert SriovSettingsStore.in_state_dir(node.state).all() == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (VfSettings(vlan=4095), r"^vlan 4095: must be between 0 and 4094$"),
        (VfSettings(min_tx_rate=-1), r"^min-tx-rate -1: must be 0 to"),
        (VfSettings(min_tx_rate=200, max_tx_rate=100), r"^min-tx-rate 200: above max-tx-rate"),
        (VfSettings(qos=3), r"^qos 3: needs a vlan$"),
        (VfSettings(mtu=10), r"^mtu 10: must be between 68 and 65535$"),
        (VfSettings(mac="01:00:00:00:00:01"), r"multicast"),
        (VfSettings(vlan=5, max_tx_rate=50), r"^min-tx-rate 100: above max-tx-rate 50$"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    node: Node, change: VfSettings, message: str
) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 0, VfSettings(min_tx_rate=100, trust=True)))
    store_file = node.state / "sriov.json"
    recorded, on_host = store_file.read_bytes(), node.host("ens1f0", 0)
    with pytest.raises(InvalidInput, match=message) as caught:
        run(manager.set_vf("ens1f0", 0, change))
    assert "\n" not in str(caught.value)
    assert store_file.read_bytes() == recorded
    assert node.host("ens1f0", 0) == on_host


def test_an_unknown_pf_or_vf_is_one_line_and_changes_nothing(node: Node) -> None:
    manager = node.started()
    with pytest.raises(SriovError, match=r"^PF eth9 is not in this node's configuration$"):
        run(manager.set_vf("eth9", 0, VfSettings(vlan=1)))
    with pytest.raises(SriovError, match=r"^PF ens1f1 has no VF 2$"):
        run(manager.set_vf("ens1f1", 2, VfSettings(vlan=1)))
    assert not (node.state / "sriov.json").exists()
    assert [node.host("ens1f1", i) for i in (0, 1)] == [DEFAULT_VF] * 2


def test_a_pf_that_cannot_be_set_up_is_left_out_and_the_others_are_set_up(node: Node) -> None:
    run(node.manager([PF2, PF]).start())
    too_many = PF.model_copy(update={"vfs": 9})
    missing = PfConfig(device="ens9f0", vfs=1, physnet="physnet9")
    manager = node.manager([PF2.model_copy(update={"vfs": 1}), too_many, missing])
    pfs = run(manager.start())
    assert [(pf.device, len(pf.vfs)) for pf in pfs if pf.error is None] == [("ens1f1", 1)]
    assert manager.failed == {
        "ens1f0": "VF count 9 is above the 8 the device supports",
        "ens9f0": "no network device 'ens9f0' on this host",
    }
    assert len(run(node.backend().setup(PF)).vfs) == 4  # ens1f0 kept the 4 VFs it had
    # Reported with their error and no VFs: the server keeps their records as they were.
    assert [(p.device, p.physnet, len(p.vfs), p.error) for p in manager.pfs()] == [
        ("ens1f1", PF2.physnet, 1, None),
        ("ens1f0", PF.physnet, 0, "VF count 9 is above the 8 the device supports"),
        ("ens9f0", "physnet9", 0, "no network device 'ens9f0' on this host"),
    ]
    with pytest.raises(SriovError, match=r"^PF ens1f0 could not be set up at the agent's start: "):
        run(manager.set_vf("ens1f0", 0, VfSettings(vlan=1)))


def test_a_left_out_pf_keeps_its_recorded_settings_for_the_boot_it_is_back(node: Node) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 1, VfSettings(vlan=11)))
    SimSriov.reboot(node.nic)
    # One boot where ens1f0 cannot be set up (a count its device refuses): left out...
    too_many = PF.model_copy(update={"vfs": 9})
    run(node.manager([too_many, PF2]).start())
    assert SriovSettingsStore.in_state_dir(node.state).get("ens1f0", 1) == VfSettings(vlan=11)
    # ...and at the next start, set up again with its VF's settings.
    pfs = run(node.manager().start())
    assert pfs[0].vfs[1].settings.vlan == 11
    assert node.host("ens1f0", 1).vlan == 11


def test_reapply_gives_a_vf_its_recorded_settings_again(node: Node) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 2, VfSettings(vlan=20, trust=True)))
    # What libvirt does to a hostdev VF when its VM stops: the device's defaults.
    run(node.backend().apply("ens1f0", 2, VfSettings(vlan=0, trust=False)))
    vf = run(manager.reapply("ens1f0", 2))
    assert (vf.settings.vlan, vf.settings.trust) == (20, True)
    assert node.host("ens1f0", 2) == vf.settings
    untouched = run(manager.reapply("ens1f0", 3))  # nothing recorded: nothing applied
    assert untouched.settings == node.host("ens1f0", 3)
    with pytest.raises(SriovError, match=r"^PF ens1f0 has no VF 9$"):
        run(manager.reapply("ens1f0", 9))


def test_a_pf_configured_twice_is_refused(node: Node) -> None:
    with pytest.raises(InvalidInput, match=r"^SR-IOV PF ens1f0: configured more than once$"):
        node.manager([PF, PF.model_copy(update={"vfs": 1})])


class Refusing:
    """A backend whose host refuses one field (as a driver without VF trust does)."""

    def __init__(self, inner: SriovBackend, field: str) -> None:
        self.inner, self.field = inner, field

    async def vfs_total(self, device: str) -> int:
        return await self.inner.vfs_total(device)

    async def setup(self, pf: PfConfig) -> SriovPf:
        return await self.inner.setup(pf)

    async def apply(self, device: str, index: int, settings: VfSettings) -> VfSettings:
        if getattr(settings, self.field) is not None:
            await self.inner.apply(device, index, settings.model_copy(update={self.field: None}))
            raise SriovError(f"PF {device} VF {index}: setting {self.field}: not supported")
        return await self.inner.apply(device, index, settings)

    async def read(self, device: str, index: int) -> VfSettings:
        return await self.inner.read(device, index)


def test_a_refused_change_is_not_recorded_and_the_host_gets_its_settings_back(
    node: Node,
) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 0, VfSettings(vlan=10)))
    store = SriovSettingsStore.in_state_dir(node.state)
    refusing = SriovManager(Refusing(node.backend(), "trust"), [PF, PF2], store)
    run(refusing.start())
    with pytest.raises(SriovError, match=r"^PF ens1f0 VF 0: setting trust: not supported$"):
        run(refusing.set_vf("ens1f0", 0, VfSettings(vlan=20, trust=True)))
    assert SriovSettingsStore.in_state_dir(node.state).get("ens1f0", 0) == VfSettings(vlan=10)
    assert node.host("ens1f0", 0).vlan == 10  # the half-applied VLAN was put back
    assert refusing.pfs()[0].vfs[0].settings.vlan == 10


def test_a_recorded_setting_the_host_refuses_at_start_does_not_stop_it(node: Node) -> None:
    manager = node.started()
    run(manager.set_vf("ens1f0", 0, VfSettings(trust=True)))
    store = SriovSettingsStore.in_state_dir(node.state)
    SimSriov.reboot(node.nic)
    pfs = run(SriovManager(Refusing(node.backend(), "trust"), [PF, PF2], store).start())
    assert pfs[0].vfs[0].settings.trust is False  # what the host has, reported as it is
    assert store.get("ens1f0", 0) == VfSettings(trust=True)  # still wanted


def test_set_vf_before_start_is_refused(node: Node) -> None:
    with pytest.raises(SriovError, match=r"^PF ens1f0: SR-IOV is not set up yet on this node$"):
        run(node.manager().set_vf("ens1f0", 0, VfSettings(vlan=1)))


def test_a_vf_without_network_device_gets_all_but_its_mtu_back(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "sys", {"ens1f0": 8})
    store = SriovSettingsStore(tmp_path / "state" / "sriov.json")
    pf = PF.model_copy(update={"mtu": None})
    manager = SriovManager(host.backend(), [pf], store)
    run(manager.start())
    run(manager.set_vf("ens1f0", 1, VfSettings(mtu=9000, vlan=30)))
    host.reboot()
    run(host.backend().setup(pf))
    host.unbind("ens1f0", 1)  # vfio-pci took it for a VM before the agent started
    pfs = run(SriovManager(host.backend(), [pf], store).start())
    assert (pfs[0].vfs[1].settings.vlan, pfs[0].vfs[1].settings.mtu) == (30, None)


def test_a_corrupt_record_is_set_aside_and_the_agent_starts(node: Node) -> None:
    node.state.mkdir(parents=True)
    (node.state / "sriov.json").write_text('{"pfs": {"ens1f0": {"0": {"vlan": "x"')
    pfs = run(node.manager().start())
    assert len(pfs[0].vfs) == 4
    assert [p.name.startswith("sriov.json.corrupt-") for p in node.state.iterdir()] == [True]
