"""Contract suite for the SR-IOV backends (bollard.agent.sriov.backend.SriovBackend), run
against the simulated NIC (SimSriov) and the Linux backend (LinuxSriov) over a fake sysfs tree
and a recording fake netlink whose VF attributes cross pyroute2's real encoder and decoder
(tests/support/sriov_host.py). Then the tests only one backend can run.

"Restart" builds a new backend over the same host, as an agent restart does; "reboot" is a
cold boot of the host, which loses every VF and its settings.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.sriov.backend import SriovBackend, SriovError
from bollard.agent.sriov.sim import DEFAULT_VF, SimSriov
from bollard.domain.sriov import PCI_ADDRESS, PfConfig, VfSettings
from tests.support.sriov_host import FakeHost

T = TypeVar("T")
TOTAL = 8
PF = PfConfig(device="ens1f0", vfs=4, physnet="physnet1")
PF2 = PfConfig(device="ens1f1", vfs=2, physnet="physnet1")
FULL = VfSettings(
    mtu=9000,
    mac="52:54:00:12:34:56",
    vlan=100,
    qos=3,
    min_tx_rate=10,
    max_tx_rate=1000,
    spoof_check=False,
    link_state="enable",
    trust=True,
    query_rss=True,
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Harness:
    backend: Callable[[], SriovBackend]  # a new backend over the same host (agent restart)
    numvfs: Callable[[str], int]  # the host's VF count of a PF
    reboot: Callable[[], None]  # a cold boot of the host


def _sim(tmp_path: Path) -> Harness:
    state = tmp_path / "sim-sriov.json"

    def backend() -> SriovBackend:
        return SimSriov(state, vfs_total=TOTAL, devices=("ens1f0", "ens1f1"))

    def numvfs(device: str) -> int:
        pfs = json.loads(state.read_text())["pfs"] if state.exists() else {}
        return len(pfs[device]["vfs"]) if device in pfs else 0

    return Harness(backend, numvfs, lambda: SimSriov.reboot(state))


def _linux(tmp_path: Path) -> Harness:
    host = FakeHost(tmp_path / "sys", {"ens1f0": TOTAL, "ens1f1": TOTAL})
    return Harness(host.backend, host.numvfs, host.reboot)


@pytest.fixture(params=["sim", "linux"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    factory = {"sim": _sim, "linux": _linux}[request.param]
    return factory(tmp_path)


def test_setup_gives_the_vfs_with_addresses_devices_and_settings(harness: Harness) -> None:
    backend = harness.backend()
    pf = run(backend.setup(PF))
    other = run(backend.setup(PF2))
    assert (pf.device, pf.physnet, pf.vfs_total) == ("ens1f0", "physnet1", TOTAL)
    assert [vf.index for vf in pf.vfs] == [0, 1, 2, 3]
    addresses = [pf.pci, other.pci] + [vf.pci for vf in pf.vfs + other.vfs]
    assert all(PCI_ADDRESS.fullmatch(a) for a in addresses), addresses
    assert len(set(addresses)) == len(addresses)
    netdevs = [vf.netdev for vf in pf.vfs + other.vfs]
    assert None not in netdevs and len(set(netdevs)) == len(netdevs)
    assert all(vf.settings == DEFAULT_VF for vf in pf.vfs)
    assert all(vf.used_by is None for vf in pf.vfs)
    assert harness.numvfs("ens1f0") == 4


def test_a_count_above_the_device_is_refused_with_nothing_changed(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    run(backend.apply("ens1f0", 1, VfSettings(vlan=7)))
    with pytest.raises(SriovError, match=r"^PF ens1f0: VF count 9 is above the 8 the device"):
        run(backend.setup(PF.model_copy(update={"vfs": TOTAL + 1})))
    assert harness.numvfs("ens1f0") == 4
    assert run(backend.read("ens1f0", 1)).vlan == 7
    assert run(backend.vfs_total("ens1f0")) == TOTAL


def test_a_new_count_recreates_the_vfs(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    run(backend.apply("ens1f0", 0, VfSettings(vlan=7, trust=True)))
    pf = run(backend.setup(PF.model_copy(update={"vfs": 2})))
    assert [vf.index for vf in pf.vfs] == [0, 1]
    assert pf.vfs[0].settings == DEFAULT_VF  # new VFs: the device's defaults
    assert harness.numvfs("ens1f0") == 2
    assert run(backend.setup(PF.model_copy(update={"vfs": 0}))).vfs == []
    assert harness.numvfs("ens1f0") == 0


def test_a_restart_finds_the_vfs_and_their_settings(harness: Harness) -> None:
    first = run(harness.backend().setup(PF))
    run(harness.backend().apply("ens1f0", 2, VfSettings(vlan=42, spoof_check=False)))
    again = run(harness.backend().setup(PF))
    assert [(vf.pci, vf.netdev) for vf in again.vfs] == [(vf.pci, vf.netdev) for vf in first.vfs]
    assert (again.vfs[2].settings.vlan, again.vfs[2].settings.spoof_check) == (42, False)


def test_a_reboot_loses_the_settings_and_the_vfs(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF.model_copy(update={"mtu": 9000})))
    run(backend.apply("ens1f0", 0, VfSettings(vlan=42)))
    harness.reboot()
    assert harness.numvfs("ens1f0") == 0
    pf = run(harness.backend().setup(PF))
    assert pf.mtu == 1500
    assert [vf.settings for vf in pf.vfs] == [DEFAULT_VF] * 4


def test_setup_sets_the_mtu_of_the_pf_and_every_vf(harness: Harness) -> None:
    pf = run(harness.backend().setup(PF.model_copy(update={"mtu": 9000})))
    assert pf.mtu == 9000
    assert [vf.settings.mtu for vf in pf.vfs] == [9000] * 4


def test_apply_sets_every_field_and_reads_it_back(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    applied = run(backend.apply("ens1f0", 3, FULL))
    assert applied == FULL
    assert run(harness.backend().read("ens1f0", 3)) == FULL
    assert run(backend.read("ens1f0", 2)) == DEFAULT_VF  # its neighbour untouched


def test_apply_changes_only_the_given_fields(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    run(backend.apply("ens1f0", 0, VfSettings(trust=True, link_state="disable")))
    after = run(backend.apply("ens1f0", 0, VfSettings(vlan=5)))
    assert (after.trust, after.link_state, after.vlan) == (True, "disable", 5)
    assert after.spoof_check is True and after.mtu == 1500


def test_vlan_and_qos_and_the_two_rates_keep_their_partner(harness: Harness) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    run(backend.apply("ens1f0", 1, VfSettings(vlan=100, qos=3, min_tx_rate=10, max_tx_rate=90)))
    after = run(backend.apply("ens1f0", 1, VfSettings(vlan=200, max_tx_rate=50)))
    assert (after.vlan, after.qos, after.min_tx_rate, after.max_tx_rate) == (200, 3, 10, 50)
    after = run(backend.apply("ens1f0", 1, VfSettings(qos=5, min_tx_rate=20)))
    assert (after.vlan, after.qos, after.min_tx_rate, after.max_tx_rate) == (200, 5, 20, 50)
    after = run(backend.apply("ens1f0", 1, VfSettings(vlan=0)))
    assert (after.vlan, after.qos) == (0, 0)  # no VLAN, no priority


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.vfs_total("eth9"),
        lambda b: b.setup(PfConfig(device="eth9", vfs=1, physnet="p")),
        lambda b: b.apply("eth9", 0, VfSettings(vlan=1)),
        lambda b: b.read("eth9", 0),
    ],
    ids=["vfs_total", "setup", "apply", "read"],
)
def test_an_unknown_device_is_a_one_line_error(
    harness: Harness, call: Callable[[SriovBackend], Coroutine[Any, Any, Any]]
) -> None:
    with pytest.raises(SriovError, match=r"^no network device 'eth9' on this host$"):
        run(call(harness.backend()))


@pytest.mark.parametrize("index", [4, 99, -1])
def test_an_unknown_vf_is_a_one_line_error_with_nothing_changed(
    harness: Harness, index: int
) -> None:
    backend = harness.backend()
    run(backend.setup(PF))
    with pytest.raises(SriovError, match=rf"^PF ens1f0 has no VF {index}$"):
        run(backend.apply("ens1f0", index, VfSettings(vlan=1)))
    with pytest.raises(SriovError, match=rf"^PF ens1f0 has no VF {index}$"):
        run(backend.read("ens1f0", index))
    assert [run(backend.read("ens1f0", i)) for i in range(4)] == [DEFAULT_VF] * 4


# --- Linux only: the kernel's rules and what only a real host has -----------------------------


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "sys", {"ens1f0": TOTAL, "ens1f1": TOTAL})


def test_linux_writes_zero_before_a_new_non_zero_count(host: FakeHost) -> None:
    backend = host.backend()
    run(backend.setup(PF))
    run(backend.setup(PF))  # same count: nothing written
    run(backend.setup(PF.model_copy(update={"vfs": 2})))
    assert host.writes == [("ens1f0", "4"), ("ens1f0", "0"), ("ens1f0", "2")]


def test_linux_a_count_the_kernel_refuses_is_one_line(host: FakeHost) -> None:
    host.refuse_numvfs = errno.ENOMEM
    with pytest.raises(SriovError, match=r"^PF ens1f0: cannot set the VF count to 4: Cannot"):
        run(host.backend().setup(PF))
    assert host.numvfs("ens1f0") == 0


def test_linux_a_device_without_sriov_is_refused(host: FakeHost) -> None:
    with pytest.raises(SriovError, match=r"^network device lo: not an SR-IOV PF"):
        run(host.backend().setup(PfConfig(device="lo", vfs=1, physnet="p")))


def test_linux_a_vf_without_network_device(host: FakeHost) -> None:
    backend = host.backend()
    run(backend.setup(PF))
    host.unbind("ens1f0", 1)
    pf = run(backend.setup(PF))
    assert (pf.vfs[1].netdev, pf.vfs[1].settings.mtu) == (None, None)
    assert pf.vfs[1].pci == run(backend.setup(PF)).vfs[1].pci
    with pytest.raises(SriovError, match=r"^PF ens1f0 VF 1: mtu 9000: the VF has no network"):
        run(backend.apply("ens1f0", 1, VfSettings(mtu=9000, vlan=3)))
    assert run(backend.read("ens1f0", 1)).vlan == 0  # refused before anything changed
    assert run(backend.apply("ens1f0", 1, VfSettings(vlan=3))).vlan == 3


def test_linux_a_netlink_refusal_is_passed_on(host: FakeHost) -> None:
    backend = host.backend()
    run(backend.setup(PF))
    host.refuse_netlink = "Operation not supported"
    with pytest.raises(SriovError, match=r"^PF ens1f0 VF 0: Operation not supported$"):
        run(backend.apply("ens1f0", 0, VfSettings(trust=True)))


def test_linux_sends_one_message_with_both_halves_of_a_pair(host: FakeHost) -> None:
    backend = host.backend()
    run(backend.setup(PF))
    run(backend.apply("ens1f0", 0, VfSettings(vlan=9, qos=2)))
    host.netlink_calls.clear()
    run(backend.apply("ens1f0", 0, VfSettings(max_tx_rate=30, vlan=11, mtu=2000)))
    assert host.netlink_calls == [
        ("set_vf", "ens1f0", 0, VfSettings(vlan=11, qos=2, min_tx_rate=0, max_tx_rate=30)),
        ("set_mtu", "ens1f0v0", 2000),
    ]


# --- Sim only ------------------------------------------------------------------------------------


def test_sim_addresses_depend_only_on_the_device_name(tmp_path: Path) -> None:
    one = run(SimSriov(tmp_path / "a.json").setup(PF))
    two = run(SimSriov(tmp_path / "b.json").setup(PF))
    assert [vf.pci for vf in one.vfs] == [vf.pci for vf in two.vfs]
    assert [vf.netdev for vf in one.vfs] == ["ens1f0v0", "ens1f0v1", "ens1f0v2", "ens1f0v3"]


def test_sim_the_most_vfs_stay_apart_from_the_next_pf(tmp_path: Path) -> None:
    sim = SimSriov(tmp_path / "s.json", vfs_total=256)
    pfs = [run(sim.setup(PfConfig(device=f"p{n}", vfs=256, physnet="x"))) for n in range(6)]
    addresses = [pf.pci for pf in pfs] + [vf.pci for pf in pfs for vf in pf.vfs]
    assert len(set(addresses)) == len(addresses) == 6 * 257
    assert all(PCI_ADDRESS.fullmatch(a) for a in addresses)
