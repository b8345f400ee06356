"""A migration lands a VM's SR-IOV NICs on the target's VFs (issue 22), in every driver: the
``migrate`` command's ``nics`` reach the driver (a live one of a hostdev NIC is refused
first); the sim and memory drivers record them on the target, counted once the VM has landed
and never when the migration is aborted; the libvirt driver's call carries definitions with
them, changed only where the host's side of an interface is (checked on libvirt's test
driver, which defines the result); and the server's choice of method for a hostdev VM.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import JobInfo, JobStatus, NicSpec
from bollard.agent.drivers.libvirt import migrate_plan as P
from bollard.agent.drivers.libvirt.sriov import domain_nic
from bollard.agent.drivers.libvirt.xml import DomainNic, parse_domain, with_epoch
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.migrate import migration_starter
from bollard.domain.errors import Conflict, DriverInvalidState
from bollard.domain.models import Nic, Vm
from bollard.domain.protocol import Command
from bollard.domain.states import CommandType, DesiredPower, PowerState, VmState
from bollard.server.operations.migrate_ops import hostdev_method
from tests.unit.test_libvirt_sriov_xml import (
    MAC1,
    MAC2,
    MAC3,
    PCI1,
    UUID,
    bridged,
    hostdev,
    libvirt_driver,
    macvtap,
    needs_libvirt,
    persistent_xml,
    vm,
)

T = TypeVar("T")

# The VFs the server claimed on the target.
T_PCI1, T_PCI2 = "0000:04:10.0", "0000:04:10.1"
ON_TARGET = [macvtap(pci=T_PCI1, netdev="ens2f0v0"), hostdev(pci=T_PCI2), bridged()]


def run(coro: Awaitable[T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# -- the agent's command -------------------------------------------------------------------------


class _Driver:
    """A MigrationDriver that records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def migrate(self, command_id: str, uuid: str, target: str, **kw: Any) -> JobInfo:
        self.calls.append({"uuid": uuid, "target": target, **kw})
        return JobInfo(
            command_id=command_id, kind="migrate", vm_uuid=uuid, status="running", progress=0.0
        )


def _command(live: bool, nics: list[NicSpec] | None) -> Command:
    args: dict[str, Any] = {"target": "n2", "live": live, "new_epoch": 4}
    if nics is not None:
        args["nics"] = [n.model_dump(exclude_none=True) for n in nics]
    return Command(
        id="c1", command=CommandType.MIGRATE, vm_uuid=UUID, epoch=3, args=args, timeout=60
    )


def test_the_command_gives_the_driver_the_nics_and_refuses_a_live_hostdev_move() -> None:
    driver = _Driver()
    start = migration_starter(driver)
    run(start(_command(True, [ON_TARGET[0], ON_TARGET[2]])))
    assert driver.calls[-1]["nics"] == [ON_TARGET[0], ON_TARGET[2]]
    run(start(_command(True, None)))  # an older server's: the NICs move as they are
    assert driver.calls[-1]["nics"] is None
    run(start(_command(False, ON_TARGET)))  # offline: a hostdev NIC moves too
    assert driver.calls[-1]["nics"] == ON_TARGET and driver.calls[-1]["live"] is False
    with pytest.raises(DriverInvalidState) as refused:
        run(start(_command(True, ON_TARGET)))
    assert refused.value.message == (
        f"VM {UUID} has a hostdev SR-IOV NIC ({MAC2}): it cannot migrate live"
    )
    assert len(driver.calls) == 3  # the refused one never reached the driver


# -- memory driver -------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _memory_pair() -> tuple[_Clock, MemoryDriver, MemoryDriver]:
    clock = _Clock()
    fabric = MemoryFabric(monotonic=clock)
    src, dst = (MemoryDriver(fabric, n, migration_rate=128.0) for n in ("n1", "n2"))
    return clock, src, dst


def test_memory_a_migrated_vm_lands_on_the_targets_vfs() -> None:
    async def go() -> None:
        clock, src, dst = _memory_pair()
        await src.define(vm(nics=[macvtap(), bridged()], epoch=3))
        await src.start(UUID)
        await src.migrate("m1", UUID, "n2", live=True, new_epoch=4, nics=[ON_TARGET[0]])
        assert (await src.vf_users(), await dst.vf_users()) == ({PCI1: UUID}, {})
        clock.now += 2.0  # 128 MiB at 128 MiB/s: done
        assert (await src.vf_users(), await dst.vf_users()) == ({}, {T_PCI1: UUID})

    run(go())


def test_memory_an_aborted_migration_leaves_the_vfs_as_they_were() -> None:
    async def go() -> None:
        clock, src, dst = _memory_pair()
        await src.define(vm(nics=[macvtap(), bridged()], epoch=3))
        await src.start(UUID)
        await src.migrate("m1", UUID, "n2", live=True, new_epoch=4, nics=[ON_TARGET[0]])
        aborted = await src.abort_job("m1", "cancelled")
        assert aborted is not None and aborted.status == JobStatus.ABORTED
        clock.now += 5.0
        assert (await src.vf_users(), await dst.vf_users()) == ({PCI1: UUID}, {})
        # Without NICs given, a migration moves them as they are.
        await src.migrate("m2", UUID, "n2", live=True, new_epoch=4)
        clock.now += 2.0
        assert (await src.vf_users(), await dst.vf_users()) == ({}, {PCI1: UUID})

    run(go())


# -- sim driver ----------------------------------------------------------------------------------


def test_sim_the_targets_vfs_count_once_the_vm_landed_and_never_after_an_abort(
    tmp_path: Path,
) -> None:
    wall = [1000.0]

    def driver(node: str) -> SimDriver:
        return SimDriver(tmp_path, node, latency=0, migration_rate=128.0, wall=lambda: wall[0])

    async def go() -> None:
        src, dst = driver("n1"), driver("n2")
        await dst.host_info()  # the target host exists
        await src.define(vm(nics=[macvtap(), bridged()], epoch=3))
        await src.start(UUID)
        # Aborted during its transfer: the target's NICs never count.
        await src.migrate("m1", UUID, "n2", live=True, new_epoch=4, nics=[ON_TARGET[0]])
        assert (await src.vf_users(), await dst.vf_users()) == ({PCI1: UUID}, {})
        aborted = await src.abort_job("m1", "cancelled")
        assert aborted is not None and aborted.status == JobStatus.ABORTED
        wall[0] += 5.0
        assert (await src.vf_users(), await dst.vf_users()) == ({PCI1: UUID}, {})
        # Landed: the target's VF, with the NICs the source's definition has (merged).
        await src.migrate("m2", UUID, "n2", live=True, new_epoch=4, nics=[ON_TARGET[0]])
        wall[0] += 0.5  # mid-transfer: the incoming copy does not count yet
        assert (await src.vf_users(), await dst.vf_users()) == ({PCI1: UUID}, {})
        wall[0] += 5.0
        assert (await src.vf_users(), await dst.vf_users()) == ({}, {T_PCI1: UUID})
        landed = dst.host.get_vm(UUID)
        assert landed is not None and landed.epoch == 4
        assert [n.mac for n in dst.nics.of(landed)] == [MAC1, MAC3]

    run(go())


# -- libvirt -------------------------------------------------------------------------------------


def test_on_target_vfs_changes_only_the_host_side_of_each_sriov_interface() -> None:
    wanted = tuple(domain_nic(n) for n in ON_TARGET if n.sriov is not None)
    source = (
        "<domain type='kvm'><name>x</name><devices>"
        "<interface type='direct'><mac address='52:54:00:00:00:01'/>"
        "<source dev='ens1f0v2' mode='passthrough'/><model type='virtio'/>"
        "<alias name='net0'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00'"
        " function='0x0'/></interface>"
        "<interface type='hostdev' managed='yes'><mac address='52:54:00:00:00:02'/>"
        "<source><address type='pci' domain='0x0000' bus='0x03' slot='0x10'"
        " function='0x4'/></source>"
        "<address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>"
        "</interface>"
        "<interface type='bridge'><mac address='52:54:00:00:00:03'/><source bridge='br0'/>"
        "</interface></devices></domain>"
    )
    moved = ET.fromstring(P.on_target_vfs(source, wanted))
    direct, passthrough, bridge = moved.findall("devices/interface")
    assert direct.find("source").attrib == {"dev": "ens2f0v0", "mode": "passthrough"}  # type: ignore[union-attr]
    # The guest's side stays: its PCI slot, alias and model.
    assert direct.find("address").get("bus") == "0x01"  # type: ignore[union-attr]
    assert direct.find("alias").get("name") == "net0"  # type: ignore[union-attr]
    assert passthrough.find("address").get("bus") == "0x02"  # type: ignore[union-attr]
    assert passthrough.find("source/address").attrib == {  # type: ignore[union-attr]
        "type": "pci", "domain": "0x0000", "bus": "0x04", "slot": "0x10", "function": "0x1",
    }  # fmt: skip
    assert ET.tostring(bridge) == ET.tostring(ET.fromstring(source).findall("devices/interface")[2])
    assert P.on_target_vfs(source, ()) == source

    with pytest.raises(ValueError, match=r"^NIC 52:54:00:00:00:09: the definition has no"):
        P.on_target_vfs(source, (DomainNic(mac="52:54:00:00:00:09", mode="hostdev", vf_pci=PCI1),))
    as_hostdev = replace(wanted[0], mode="hostdev", vf_pci=T_PCI1)
    with pytest.raises(ValueError, match=r"has it as a direct interface, not hostdev on a VF"):
        P.on_target_vfs(source, (as_hostdev,))


def _with_guest_addresses(definition: str) -> str:
    """The definition with a guest PCI address on each interface, as a daemon gives them
    (the test driver gives none)."""
    root = ET.fromstring(definition)
    for slot, el in enumerate(root.findall("devices/interface"), start=3):
        ET.SubElement(el, "address", type="pci", domain="0x0000", bus="0x00",
                      slot=f"0x{slot:02x}", function="0x0")  # fmt: skip
    return ET.tostring(root, encoding="unicode")


@needs_libvirt
def test_the_migration_calls_definitions_have_the_targets_vfs(tmp_path: Path) -> None:
    """Defined on libvirt's test driver (which keeps it as a daemon would, addresses given):
    the call's definitions name the target's VFs and keep the guest's addresses, and the
    target's definition is one libvirt accepts."""

    async def go() -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        source = libvirt_driver(tmp_path / "a")
        target = libvirt_driver(tmp_path / "b")
        try:
            await source.define(vm(epoch=3))
            definition = _with_guest_addresses(await persistent_xml(source, UUID))
            nics = tuple(domain_nic(n) for n in ON_TARGET if n.sriov is not None)
            offline, _ = P.migration_call(False, definition, 4, None, None, nics=nics)
            landed = offline[P.PARAM_DEST_XML]
            assert parse_domain(landed).nics == [
                DomainNic(mac=MAC1, mode="macvtap", vf_netdev="ens2f0v0"),
                DomainNic(mac=MAC2, mode="hostdev", vf_pci=T_PCI2),
                DomainNic(mac=MAC3, bridge="br0"),
            ]
            meta = parse_domain(landed).meta
            assert meta is not None and meta.epoch == 4

            def addresses(text: str) -> list[str | None]:
                found = ET.fromstring(text).findall("devices/interface/address")
                return [a.get("slot") for a in found]

            assert addresses(landed) == addresses(definition) == ["0x03", "0x04", "0x05"]
            await target.conn.call("define", lambda c: c.defineXML(landed))
            kept = await persistent_xml(target, UUID)
            assert parse_domain(kept).nics == parse_domain(landed).nics
            assert addresses(kept) == ["0x03", "0x04", "0x05"]

            running = with_epoch(definition, 3)  # (as the running domain's XML would be)
            live, _ = P.migration_call(True, definition, 4, None, None, nics=nics[:1],
                                       running=running)  # fmt: skip
            assert parse_domain(live[P.PARAM_DEST_XML]).nics[0].vf_netdev == "ens2f0v0"
            assert parse_domain(live[P.PARAM_PERSIST_XML]).nics[0].vf_netdev == "ens2f0v0"
            plain, _ = P.migration_call(True, definition, 4, None, None, running=running)
            assert P.PARAM_DEST_XML not in plain  # no SR-IOV NIC: libvirt's own live XML
        finally:
            await source.close()
            await target.close()

    run(go())


# -- the server's method ------------------------------------------------------------------------


def _vm_of(mode: str, *, method: str = "default", running: bool = True) -> Vm:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Vm(
        uuid=UUID, name="v", node="n1", vcpus=1, memory_mb=128, epoch=1,
        vm_state=VmState.ACTIVE if running else VmState.STOPPED, task_state=None,
        task_id=None, desired_power=DesiredPower.RUNNING, observed_power=PowerState.RUNNING,
        observed_at=now, observed_seq=1, fault=None, created_at=now, updated_at=now,
        migration_method=method, nics=(Nic(mac=MAC1, sriov="fast", mode=mode),),
    )  # fmt: skip


def test_a_hostdev_vm_migrates_by_shutdown_only() -> None:
    refused = "VM v has a hostdev SR-IOV NIC (PCI passthrough): it migrates by shutdown only"
    assert hostdev_method(_vm_of("hostdev"), None, False) == "shutdown"
    assert hostdev_method(_vm_of("hostdev"), "default", False) == "shutdown"
    assert hostdev_method(_vm_of("hostdev"), "shutdown", False) == "shutdown"
    for method, force in (("live", False), (None, True), ("default", True)):
        with pytest.raises(Conflict, match=f"^{re.escape(refused)}"):
            hostdev_method(_vm_of("hostdev"), method, force)
    with pytest.raises(Conflict, match=f"^{re.escape(refused)}"):  # its own, while it runs
        hostdev_method(_vm_of("hostdev", method="live"), None, False)
    # Stopped, it only moves its definition.
    assert hostdev_method(_vm_of("hostdev", method="live", running=False), None, False) == "live"
    # macvtap migrates live.
    assert hostdev_method(_vm_of("macvtap"), None, False) == "default"
    assert hostdev_method(_vm_of("macvtap"), "live", True) == "live"
