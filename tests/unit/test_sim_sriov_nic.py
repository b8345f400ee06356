"""A sim host's power-on is a cold boot of its simulated SR-IOV NICs (bollard.sim.sriov_nic):
the VFs and the PF's MTU are lost as `SimSriov.reboot` loses them (the two agree on the
agent's file), the devices and their PCI addresses stay, and the agent's next start sets
them up again with their recorded settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bollard.agent.sriov.manager import SriovManager
from bollard.agent.sriov.settings_store import SriovSettingsStore
from bollard.agent.sriov.sim import DEFAULT_MTU, SimSriov
from bollard.agent.sriov_agent import SIM_STATE_DIR, sim_state_file
from bollard.domain.sriov import PfConfig, VfSettings
from bollard.sim import sriov_nic
from bollard.sim.fabric import Fabric

PF = PfConfig(device="ens1f0", vfs=3, physnet="fast", mtu=9000)


def set_up(tmp_path: Path) -> tuple[Path, SriovManager]:
    fabric = tmp_path / "fabric"
    Fabric(fabric).host("n1").ensure_host(4, 4096)
    store = SriovSettingsStore.in_state_dir(tmp_path / "state")
    manager = SriovManager(SimSriov(sim_state_file(fabric, "n1")), [PF], store)
    asyncio.run(manager.start())
    asyncio.run(manager.set_vf("ens1f0", 1, VfSettings(vlan=30)))
    return fabric, manager


def test_the_sim_and_the_agent_agree_on_where_and_what() -> None:
    assert sriov_nic.SRIOV_DIR == SIM_STATE_DIR
    assert sriov_nic.DEFAULT_MTU == DEFAULT_MTU
    assert sriov_nic.nic_file(Path("/f"), "n1") == sim_state_file(Path("/f"), "n1")


def test_power_on_loses_the_vfs_as_a_cold_boot_does(tmp_path: Path) -> None:
    fabric, _ = set_up(tmp_path)
    path = sim_state_file(fabric, "n1")
    before = json.loads(path.read_text())
    assert len(before["pfs"]["ens1f0"]["vfs"]) == 3

    host = Fabric(fabric).host("n1")
    host.power_off()
    assert json.loads(path.read_text()) == before  # powered off: nothing happens yet
    host.power_on()
    after = json.loads(path.read_text())
    assert after["pfs"]["ens1f0"]["vfs"] == [] and after["pfs"]["ens1f0"]["mtu"] == 1500
    assert after["pfs"]["ens1f0"]["bus"] == before["pfs"]["ens1f0"]["bus"]  # same device

    # The agent's own reboot does exactly the same to a copy of the file.
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(before))
    SimSriov.reboot(copy)
    assert json.loads(copy.read_text()) == after

    # The agent's next start: the VFs again, with the recorded VLAN.
    store = SriovSettingsStore.in_state_dir(tmp_path / "state")
    [pf] = asyncio.run(SriovManager(SimSriov(path), [PF], store).start())
    assert len(pf.vfs) == 3 and pf.vfs[1].settings.vlan == 30


def test_power_on_of_a_host_already_on_or_without_nics_changes_nothing(tmp_path: Path) -> None:
    fabric, _ = set_up(tmp_path)
    path = sim_state_file(fabric, "n1")
    before = path.read_bytes()
    Fabric(fabric).host("n1").power_on()  # already on: no boot
    assert path.read_bytes() == before
    assert sriov_nic.cold_boot(fabric, "n2") is False  # no NICs file
    (fabric / "sriov" / "n3.json").write_text('{"pfs": 3}')
    assert sriov_nic.cold_boot(fabric, "n3") is False
    assert (fabric / "sriov" / "n3.json").read_text() == '{"pfs": 3}'
