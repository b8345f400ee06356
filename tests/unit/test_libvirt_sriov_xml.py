"""SR-IOV NICs in the hypervisor drivers (issue 22): ``NicSpec`` checks, the libvirt domain
XML of both modes (macvtap passthrough, PCI hostdev) written, read back and defined on
libvirt's test driver, define's keep-by-MAC rule for them, and ``vf_users`` of the libvirt,
memory and sim drivers.

The libvirt test driver (in-process, one node file per test: ``test:///default`` is shared
by the whole process) parses and keeps the definitions as a real daemon does; it runs no
guest, so whether QEMU gets the VF is for real hardware (see the README).
"""

from __future__ import annotations

import asyncio
import importlib.util
import xml.etree.ElementTree as ET
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from bollard.agent.drivers.base import NETDEV_KEY, NicSpec, VfUseSource, VmSpec
from bollard.agent.drivers.libvirt.sriov import domain_nic
from bollard.agent.drivers.libvirt.vf_xml import pci_address, pci_attributes, vf_uses
from bollard.agent.drivers.libvirt.xml import (
    DomainNic,
    DomainSpec,
    HostSettings,
    domain_xml,
    nic_changes,
    parse_domain,
    with_devices,
)
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.drivers.nics import merged_nics
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.states import PowerState
from bollard.sim import Fabric

T = TypeVar("T")

UUID = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
FOREIGN = "33333333-3333-4333-8333-333333333333"
MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
PCI1, PCI2, PCI3 = "0000:03:10.2", "0000:03:10.4", "0000:81:00.7"
PCI_O = "0000:03:10.6"  # the other VM's VF

HAS_LIBVIRT = importlib.util.find_spec("libvirt") is not None
needs_libvirt = pytest.mark.skipif(not HAS_LIBVIRT, reason="libvirt-python is not installed")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def macvtap(mac: str = MAC1, pci: str = PCI1, netdev: str = "ens1f0v2") -> NicSpec:
    return NicSpec(mac=mac, sriov="fabric-a", mode="macvtap", vf_pci=pci, vf_netdev=netdev)


def hostdev(mac: str = MAC2, pci: str = PCI2) -> NicSpec:
    return NicSpec(mac=mac, sriov="fabric-a", mode="hostdev", vf_pci=pci)


def bridged(mac: str = MAC3) -> NicSpec:
    return NicSpec(mac=mac, bridge="br0")


def vm(uuid: str = UUID, nics: list[NicSpec] | None = None, epoch: int = 1) -> VmSpec:
    nics = [macvtap(), hostdev(), bridged()] if nics is None else nics
    return VmSpec(uuid=uuid, name="sriov", vcpus=1, memory_mb=128, epoch=epoch, nics=nics)


# NicSpec


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one), got none"),
        ({"bridge": "br0", "sriov": "fabric-a"}, "got bridge and sriov"),
        ({"sriov": "fabric-a"}, "SR-IOV NIC on fabric-a needs mode and vf_pci"),
        ({"sriov": "fabric-a", "mode": "hostdev"}, "needs vf_pci"),
        ({"sriov": "fabric-a", "mode": "macvtap", "vf_pci": PCI1}, f"macvtap on VF {PCI1}"),
        ({"bridge": "br0", "mode": "hostdev"}, "mode only for an SR-IOV NIC, not on a bridge"),
        ({"network": "default", "vf_pci": PCI1}, "vf_pci only for an SR-IOV NIC"),
        ({"sriov": "fabric-a", "mode": "pci", "vf_pci": PCI1}, "'macvtap' or 'hostdev'"),
        ({"sriov": "fabric-a", "mode": "hostdev", "vf_pci": "0000:3:10.2"}, "0000:3:10.2"),
        ({"sriov": "fabric-a", "mode": "hostdev", "vf_pci": "0000:03:10.8"}, "0000:03:10.8"),
        ({"sriov": "fab ric", "mode": "hostdev", "vf_pci": PCI1}, "fab ric"),
        (
            {"sriov": "f", "mode": "macvtap", "vf_pci": PCI1, "vf_netdev": "a-name-too-long-1"},
            "a-name-too-long-1",
        ),
    ],
)
def test_nicspec_refuses_what_is_not_one_attachment(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NicSpec(mac=MAC1, **fields)
    assert message in str(caught.value)


def test_nicspec_of_both_modes() -> None:
    assert (macvtap().vf_key(), hostdev().vf_key(), bridged().vf_key()) == (PCI1, PCI2, None)
    as_sent = {"mac": MAC2, "sriov": "fabric-a", "mode": "hostdev", "vf_pci": PCI2}
    assert NicSpec.model_validate(as_sent) == hostdev()  # as a DEFINE command carries it
    # A hostdev NIC may carry the VF's network device (the claim has it); it is not used.
    assert hostdev().model_copy(update={"vf_netdev": "ens1f0v4"}).vf_key() == PCI2


# XML


def host(tmp_path: Path) -> HostSettings:
    return HostSettings(console_dir=tmp_path, domain_type="qemu")


def xml_of(nics: list[NicSpec], tmp_path: Path) -> str:
    spec = DomainSpec(UUID, "sriov", 1, 128, nics=tuple(domain_nic(n) for n in nics))
    return domain_xml(spec, host(tmp_path))


def test_the_xml_of_both_modes(tmp_path: Path) -> None:
    root = ET.fromstring(xml_of([macvtap(), hostdev()], tmp_path))
    direct, passthrough = root.findall("devices/interface")
    assert direct.attrib == {"type": "direct"}
    assert direct.find("source").attrib == {"dev": "ens1f0v2", "mode": "passthrough"}  # type: ignore[union-attr]
    assert direct.find("mac").attrib == {"address": MAC1}  # type: ignore[union-attr]
    assert direct.find("model").attrib == {"type": "virtio"}  # type: ignore[union-attr]
    assert passthrough.attrib == {"type": "hostdev", "managed": "yes"}
    assert passthrough.find("mac").attrib == {"address": MAC2}  # type: ignore[union-attr]
    assert passthrough.find("source/address").attrib == {  # type: ignore[union-attr]
        "type": "pci", "domain": "0x0000", "bus": "0x03", "slot": "0x10", "function": "0x4",
    }  # fmt: skip
    assert passthrough.find("model") is None  # the guest sees the VF itself


def test_the_xml_reads_back(tmp_path: Path) -> None:
    nics = parse_domain(xml_of([macvtap(), hostdev(), bridged()], tmp_path)).nics
    assert nics == [
        DomainNic(mac=MAC1, mode="macvtap", vf_netdev="ens1f0v2"),  # no PCI, no physnet
        DomainNic(mac=MAC2, mode="hostdev", vf_pci=PCI2),
        DomainNic(mac=MAC3, bridge="br0"),
    ]


def test_a_nic_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    cases = [
        (DomainNic(mac=MAC1, mode="macvtap", vf_pci=PCI1), "macvtap needs the VF's network"),
        (DomainNic(mac=MAC1, mode="hostdev"), "PCI address ''"),
        (DomainNic(mac=MAC1, mode="hostdev", vf_pci="3:10.2"), "PCI address '3:10.2'"),
        (DomainNic(mac=MAC1, mode="sriov", vf_pci=PCI1), "SR-IOV mode 'sriov'"),
        (DomainNic(mac=MAC1, bridge="br0", mode="hostdev", vf_pci=PCI1), "got bridge and VF"),
    ]
    for nic, message in cases:
        with pytest.raises(ValueError, match=message):
            domain_xml(DomainSpec(UUID, "x", 1, 128, nics=(nic,)), host(tmp_path))


def test_pci_addresses_both_ways() -> None:
    assert pci_address(ET.Element("address", pci_attributes(PCI3))) == PCI3
    decimal = {"type": "pci", "domain": "0", "bus": "129", "slot": "0", "function": "7"}
    assert pci_address(ET.Element("address", decimal)) == PCI3
    for bad in (
        {"type": "usb", "bus": "0x01", "slot": "0x01", "function": "0x0"},
        {"type": "pci", "bus": "0x100", "slot": "0x01", "function": "0x0"},
        {"type": "pci", "bus": "0x01", "slot": "0x01", "function": "0x8"},
        {"type": "pci", "bus": "0x01", "slot": "zz", "function": "0x0"},
        {"type": "pci", "bus": "0x01", "function": "0x0"},
    ):
        assert pci_address(ET.Element("address", bad)) is None, bad


def test_vf_uses_names_every_device_that_may_be_a_vf(tmp_path: Path) -> None:
    root = ET.fromstring(xml_of([macvtap(), hostdev(), bridged()], tmp_path))
    devices = root.find("devices")
    assert devices is not None
    vepa = ET.SubElement(devices, "interface", type="direct")  # another macvtap mode
    ET.SubElement(vepa, "source", dev="ens1f0v9", mode="vepa")
    plain = ET.SubElement(ET.SubElement(devices, "hostdev", mode="subsystem", type="pci"), "source")
    ET.SubElement(plain, "address", pci_attributes(PCI3))
    usb = ET.SubElement(ET.SubElement(devices, "hostdev", mode="subsystem", type="usb"), "source")
    ET.SubElement(usb, "address", bus="1", device="2")
    assert vf_uses(ET.tostring(root, encoding="unicode")) == {
        NETDEV_KEY + "ens1f0v2": MAC1,
        PCI2: MAC2,
        NETDEV_KEY + "ens1f0v9": "",
        PCI3: "",
    }
    assert parse_domain(ET.tostring(root, encoding="unicode")).nics[3:] == []  # not Bollard's
    with pytest.raises(ValueError, match="unreadable"):
        vf_uses("<domain>")


def test_define_again_keeps_one_nic_and_moves_a_sriov_nic_to_its_new_vf(tmp_path: Path) -> None:
    first = xml_of([macvtap(), hostdev(), bridged()], tmp_path)
    wanted = tuple(domain_nic(n) for n in (macvtap(), hostdev(), bridged()))
    assert nic_changes(parse_domain(first).nics, wanted) == []
    assert with_devices(first, (), wanted) == ET.tostring(ET.fromstring(first), encoding="unicode")

    moved = tuple(
        domain_nic(n)
        for n in (macvtap(netdev="ens1f0v7", pci=PCI3), hostdev(pci=PCI1), bridged(), bridged(MAC3))
    )
    assert [n.mac for n in nic_changes(parse_domain(first).nics, moved)] == [MAC1, MAC2]
    again = parse_domain(with_devices(first, (), moved)).nics
    assert again == [  # in place, one NIC per MAC
        DomainNic(mac=MAC1, mode="macvtap", vf_netdev="ens1f0v7"),
        DomainNic(mac=MAC2, mode="hostdev", vf_pci=PCI1),
        DomainNic(mac=MAC3, bridge="br0"),
    ]
    # A network or bridge NIC with a known MAC stays as it is (NICs are fixed at creation).
    other = (DomainNic(mac=MAC3, network="default"),)
    assert nic_changes(again, other) == []
    assert parse_domain(with_devices(first, (), other)).nics == parse_domain(first).nics
    # An SR-IOV NIC whose MAC the definition has on a bridge takes its VF.
    onto_vf = (domain_nic(hostdev(mac=MAC3, pci=PCI3)),)
    assert parse_domain(with_devices(first, (), onto_vf)).nics[2] == DomainNic(
        mac=MAC3, mode="hostdev", vf_pci=PCI3
    )


# the libvirt driver on libvirt's test driver

NODE = f"""<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
       <active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>2097152</memory>
  <domain type='test'>
    <name>not-bollards</name><uuid>{FOREIGN}</uuid>
    <memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x81' slot='0x00' function='0x7'/></source>
      </hostdev>
    </devices>
  </domain>
</node>
"""


def libvirt_driver(tmp_path: Path) -> Any:
    from bollard.agent.drivers.libvirt import LibvirtDriver

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    return LibvirtDriver(f"test://{node}", "qemu", tmp_path / "consoles", kernel_boot_id=boot_id)


async def persistent_xml(d: Any, uuid: str) -> str:
    return str(await d.conn.call("read", lambda c: c.lookupByUUIDString(uuid).XMLDesc(2)))


@needs_libvirt
def test_both_modes_are_defined_on_libvirt_and_read_back(tmp_path: Path) -> None:
    async def go() -> None:
        d = libvirt_driver(tmp_path)
        try:
            await d.define(vm())
            text = await persistent_xml(d, UUID)  # as libvirt keeps it, not as written
            root = ET.fromstring(text)
            kinds = [(i.get("type"), i.get("managed")) for i in root.findall("devices/interface")]
            assert kinds == [("direct", None), ("hostdev", "yes"), ("bridge", None)]
            assert parse_domain(text).nics == [
                DomainNic(mac=MAC1, mode="macvtap", vf_netdev="ens1f0v2"),
                DomainNic(mac=MAC2, mode="hostdev", vf_pci=PCI2),
                DomainNic(mac=MAC3, bridge="br0"),
            ]
            await d.define(vm())  # again: one NIC per MAC, the same definition
            assert await persistent_xml(d, UUID) == text
            moved = vm(nics=[macvtap(netdev="ens1f0v3", pci=PCI3), hostdev(pci=PCI1), bridged()])
            await d.define(moved)
            assert parse_domain(await persistent_xml(d, UUID)).nics == [
                DomainNic(mac=MAC1, mode="macvtap", vf_netdev="ens1f0v3"),
                DomainNic(mac=MAC2, mode="hostdev", vf_pci=PCI1),
                DomainNic(mac=MAC3, bridge="br0"),
            ]
        finally:
            await d.close()

    run(go())


@needs_libvirt
def test_libvirt_vf_users_from_the_defined_domains(tmp_path: Path) -> None:
    async def go() -> None:
        d = libvirt_driver(tmp_path)
        try:
            assert isinstance(d, VfUseSource)
            assert await d.vf_users() == {PCI3: FOREIGN}  # a domain not Bollard's counts too
            await d.define(vm())
            await d.define(vm(OTHER, [hostdev(mac="52:54:00:00:00:0a", pci=PCI_O)]))
            assert await d.vf_users() == {
                NETDEV_KEY + "ens1f0v2": UUID,
                PCI2: UUID,
                PCI_O: OTHER,
                PCI3: FOREIGN,
            }
            await d.start(UUID)
            # Running: the live definition counts as well as the persistent one, which the
            # next define moves to other VFs while the guest still has the old ones.
            await d.define(vm(nics=[macvtap(netdev="ens1f0v5"), hostdev(pci="0000:03:11.0")]))
            users = await d.vf_users()
            assert {k for k, v in users.items() if v == UUID} == {
                NETDEV_KEY + "ens1f0v2", NETDEV_KEY + "ens1f0v5", PCI2, "0000:03:11.0",
            }  # fmt: skip
            await d.stop(UUID)
            await d.undefine(UUID)
            assert await d.vf_users() == {PCI_O: OTHER, PCI3: FOREIGN}
        finally:
            await d.close()

    run(go())


# the memory and sim drivers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_memory_driver_keeps_nics_and_reports_their_vfs() -> None:
    async def go() -> None:
        clock = Clock()
        fabric = MemoryFabric(monotonic=clock)
        a, b = MemoryDriver(fabric, "n1"), MemoryDriver(fabric, "n2")
        assert isinstance(a, VfUseSource)
        await a.define(vm())
        await a.define(vm(OTHER, [hostdev(mac="52:54:00:00:00:0a", pci=PCI_O)]))
        assert await a.vf_users() == {PCI1: UUID, PCI2: UUID, PCI_O: OTHER}
        await a.define(vm(nics=[hostdev(pci=PCI3)]))  # its hostdev NIC moves to PCI3
        assert await a.vf_users() == {PCI1: UUID, PCI3: UUID, PCI_O: OTHER}
        await a.undefine(OTHER)
        assert await a.vf_users() == {PCI1: UUID, PCI3: UUID}
        # A migration takes the NICs along as they are (the server rewrites SR-IOV ones).
        await a.migrate("m1", UUID, "n2", live=False, new_epoch=2)
        assert await b.vf_users() == {}  # not there before its switchover
        clock.now += 60
        assert (await a.vf_users(), await b.vf_users()) == ({}, {PCI1: UUID, PCI3: UUID})
        [report] = await b.list_vms()
        assert (report.uuid, report.power) == (UUID, PowerState.STOPPED)

    run(go())


def test_merged_nics_keeps_one_nic_per_mac() -> None:
    have = (bridged(), macvtap())
    assert merged_nics(have, [macvtap(), bridged()]) == have
    assert merged_nics(have, [hostdev(mac=MAC1)]) == (bridged(), hostdev(mac=MAC1))
    assert merged_nics((), [hostdev(), hostdev(pci=PCI3)]) == (hostdev(pci=PCI3),)


def test_sim_driver_keeps_nics_and_reports_their_vfs(tmp_path: Path) -> None:
    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        assert isinstance(d, VfUseSource)
        await d.define(vm())
        await d.define(vm(OTHER, [hostdev(mac="52:54:00:00:00:0a", pci=PCI_O)]))
        assert await d.vf_users() == {PCI1: UUID, PCI2: UUID, PCI_O: OTHER}
        await d.define(vm(nics=[hostdev(pci=PCI3)]))  # its hostdev NIC moves to PCI3
        again = SimDriver(tmp_path, "n1", latency=0)  # an agent restart finds them
        assert await again.vf_users() == {PCI1: UUID, PCI3: UUID, PCI_O: OTHER}
        await again.undefine(OTHER)
        assert await again.vf_users() == {PCI1: UUID, PCI3: UUID}
        assert await SimDriver(tmp_path, "n2", latency=0).vf_users() == {}

    run(go())


def test_sim_nics_left_by_an_earlier_stay_do_not_count(tmp_path: Path) -> None:
    """A sim migration writes the VM's record on its target itself; the NIC file a former
    stay of the VM left there is of an older epoch and is not read."""

    async def go() -> None:
        d = SimDriver(tmp_path, "n1", latency=0)
        await d.define(vm(epoch=1))
        host = Fabric(tmp_path).host("n1")
        record = host.get_vm(UUID)
        assert record is not None
        host.delete_vm(UUID)  # as a migration's cleanup removes it from its source
        assert await d.vf_users() == {}
        host.put_vm(record.model_copy(update={"epoch": 3}))  # as a migration brings it back
        assert await d.vf_users() == {}
        await d.define(vm(nics=[hostdev(pci=PCI3)], epoch=3))  # only the NICs given now
        assert await d.vf_users() == {PCI3: UUID}
        await d.define(vm(nics=[hostdev(pci=PCI3)], epoch=4))  # a newer epoch keeps them
        assert await d.vf_users() == {PCI3: UUID}

    run(go())
