"""The host's SR-IOV in its heartbeats (agent/reports.py with sriov_agent.AgentSriov.look):
every full report carries the PFs, a delta report only when they changed; and a VF whose VM
stopped or left gets its recorded settings back (libvirt handed it back with defaults)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bollard.agent.drivers.base import HypervisorDriver
from bollard.agent.reports import Reporter
from bollard.agent.seq import SeqCounter
from bollard.agent.sriov.sim import SimSriov
from bollard.agent.sriov_agent import AgentSriov, sim_state_file, start_sriov
from bollard.domain.errors import DriverTemporary
from bollard.domain.protocol import Heartbeat, VmReport
from bollard.domain.sriov import SriovPf, SriovVf, VfSettings
from bollard.domain.states import PowerState
from tests.unit.test_agent_reports import FakeDriver, build, one
from tests.unit.test_agent_reports import vm as report
from tests.unit.test_agent_sriov import UsersDriver, config, pf, run

VM = "11111111-1111-4111-8111-111111111111"


def pfs(user: str | None = None) -> list[SriovPf]:
    vfs = [SriovVf(index=0, pci="0000:03:00.0", netdev="ens1v0", used_by=user)]
    return [SriovPf(device="ens1", physnet="fast", vfs=vfs)]


class Source:
    """A SriovSource over what the test sets; records the VMs each look was given."""

    def __init__(self, found: list[SriovPf] | None) -> None:
        self.found = found
        self.given: list[list[str]] = []

    async def look(self, vms: Sequence[VmReport]) -> list[SriovPf] | None:
        self.given.append([v.uuid for v in vms])
        return None if self.found is None else [p.model_copy(deep=True) for p in self.found]


def reporter(driver: FakeDriver, source: Source) -> Reporter:
    return Reporter(cast(HypervisorDriver, driver), SeqCounter(generation=1), source)


def test_full_reports_carry_the_pfs_and_deltas_only_a_change() -> None:
    driver, source = FakeDriver([report(1)]), Source(pfs())
    r = reporter(driver, source)
    first = one(build(r))
    assert first.full and first.sriov == pfs()
    assert source.given == [[report(1).uuid]]  # looked at with the VMs of that report
    assert one(build(r)).sriov is None  # unchanged: nothing sent
    source.found = pfs(VM)
    changed = one(build(r))
    assert not changed.full and changed.sriov == pfs(VM)
    assert one(build(r)).sriov is None
    r.reset()  # the server asked for a resync: full again, with the PFs
    again = one(build(r))
    assert again.full and again.sriov == pfs(VM)


def test_an_agent_without_sriov_sends_none() -> None:
    r = reporter(FakeDriver([report(1)]), Source(None))
    assert [one(build(r)).sriov for _ in range(2)] == [None, None]
    plain = Reporter(cast(HypervisorDriver, FakeDriver()), SeqCounter(generation=1))
    assert one(build(plain)).sriov is None


def test_a_heartbeat_with_pfs_survives_the_wire() -> None:
    beat = one(build(reporter(FakeDriver([report(1)]), Source(pfs(VM)))))
    assert Heartbeat.model_validate_json(beat.model_dump_json()).sriov == pfs(VM)


# --- a VF whose VM stops gets its settings back ----------------------------------------


def vm_report(power: PowerState) -> VmReport:
    return VmReport(uuid=VM, name="web", power=power, vcpus=1, memory_mb=512)


def started(tmp_path: Path) -> tuple[AgentSriov, UsersDriver, SimSriov]:
    driver = UsersDriver()
    sriov = run(start_sriov(config(tmp_path, pf(vfs=2)), driver))
    assert sriov is not None and sriov.started
    return sriov, driver, SimSriov(sim_state_file(tmp_path / "fabric", "n1"))


def test_a_vf_whose_vm_stops_or_leaves_gets_its_recorded_settings_back(tmp_path: Path) -> None:
    sriov, driver, host = started(tmp_path)
    run(sriov.manager.set_vf("ens1f0", 1, VfSettings(vlan=42, trust=True)))
    [found] = run(sriov.look([]))
    pci = found.vfs[1].pci
    driver.users = {pci: VM}
    run(sriov.look([vm_report(PowerState.RUNNING)]))
    # The VM stops: libvirt gives the hostdev VF back to the host with the defaults...
    run(host.apply("ens1f0", 1, VfSettings(vlan=0, trust=False)))
    [after] = run(sriov.look([vm_report(PowerState.STOPPED)]))
    # ...and the next look puts the recorded ones back, and reports them.
    assert (run(host.read("ens1f0", 1)).vlan, run(host.read("ens1f0", 1)).trust) == (42, True)
    assert after.vfs[1].settings.vlan == 42 and after.vfs[1].used_by == VM

    # Started again, then undefined (it left): once more.
    run(sriov.look([vm_report(PowerState.RUNNING)]))
    run(host.apply("ens1f0", 1, VfSettings(vlan=0)))
    driver.users = {}
    run(sriov.look([]))
    assert run(host.read("ens1f0", 1)).vlan == 42


def test_nothing_is_reapplied_while_the_vm_runs_or_when_users_are_unknown(
    tmp_path: Path,
) -> None:
    sriov, driver, host = started(tmp_path)
    run(sriov.manager.set_vf("ens1f0", 0, VfSettings(vlan=7)))
    [found] = run(sriov.look([]))
    driver.users = {found.vfs[0].pci: VM}
    running = [vm_report(PowerState.RUNNING)]
    run(sriov.look(running))
    run(host.apply("ens1f0", 0, VfSettings(vlan=0)))  # changed behind the agent's back
    run(sriov.look(running))  # still running: its VF is the VM's business
    assert run(host.read("ens1f0", 0)).vlan == 0

    failing = FailingUsers(driver.users)
    sriov.driver = failing
    run(sriov.look([vm_report(PowerState.STOPPED)]))  # cannot tell who uses what
    assert run(host.read("ens1f0", 0)).vlan == 0
    failing.fail = False
    run(sriov.look([vm_report(PowerState.STOPPED)]))  # now it can: the VM stopped
    assert run(host.read("ens1f0", 0)).vlan == 7


class FailingUsers(UsersDriver):
    def __init__(self, users: dict[str, str]) -> None:
        super().__init__()
        self.users = dict(users)
        self.fail = True

    async def vf_users(self) -> dict[str, str]:
        if self.fail:
            raise DriverTemporary("libvirt is restarting")
        return dict(self.users)
