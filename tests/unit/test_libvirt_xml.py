"""The libvirt driver's domain XML: generation, Bollard's metadata, and reading it back.

Pure XML: runs without libvirt-python.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bollard.agent.drivers.libvirt.xml import (
    NS,
    BollardMeta,
    DomainDisk,
    DomainNic,
    DomainSpec,
    HostSettings,
    canonical_uuid,
    console_path,
    display_of,
    domain_name,
    domain_xml,
    metadata_xml,
    parse_domain,
    parse_meta_xml,
    updated_domain_xml,
)

UUID = "11111111-1111-4111-8111-111111111111"


def host(tmp_path: Path, **kw: str) -> HostSettings:
    return HostSettings(console_dir=tmp_path / "consoles", **kw)  # type: ignore[arg-type]


def spec(name: str = "web-1", **kw: object) -> DomainSpec:
    values: dict[str, object] = {"uuid": UUID, "name": name, "vcpus": 2, "memory_mb": 512,
                                 "epoch": 3, **kw}  # fmt: skip
    return DomainSpec(**values)  # type: ignore[arg-type]


def test_domain_xml_has_the_vm_and_the_host_settings(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(), host(tmp_path, domain_type="qemu")))
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == f"bollard-{UUID}" == domain_name(UUID)
    assert root.findtext("uuid") == UUID
    assert root.findtext("title") == "web-1"
    memory = root.find("memory")
    assert memory is not None and (memory.text, memory.get("unit")) == ("512", "MiB")
    assert root.findtext("vcpu") == "2"
    assert root.find("features/acpi") is not None
    assert root.find("cpu") is None  # qemu (TCG): the default CPU model
    assert root.findtext("on_crash") == "destroy"
    serial = root.find("devices/serial[@type='file']/source")
    assert serial is not None
    assert serial.get("path") == str(tmp_path / "consoles" / f"{UUID}.log")
    assert serial.get("append") == "on"
    graphics = root.find("devices/graphics")
    assert graphics is not None
    assert (graphics.get("type"), graphics.get("autoport"), graphics.get("listen")) == (
        "vnc",
        "yes",
        "127.0.0.1",
    )
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.find("os/kernel") is None


def test_kvm_default_and_vnc_listen(tmp_path: Path) -> None:
    root = ET.fromstring(domain_xml(spec(), host(tmp_path, vnc_listen="0.0.0.0")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    listen = root.find("devices/graphics/listen")
    assert listen is not None and listen.get("address") == "0.0.0.0"


def test_kernel_boot(tmp_path: Path) -> None:
    settings = host(
        tmp_path, boot_kernel="/k/vmlinuz", boot_initrd="/k/initrd.gz",
        boot_cmdline="console=ttyS0 quiet x=<&>",
    )  # fmt: skip
    root = ET.fromstring(domain_xml(spec(), settings))
    assert root.findtext("os/kernel") == "/k/vmlinuz"
    assert root.findtext("os/initrd") == "/k/initrd.gz"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet x=<&>"
    assert root.find("os/boot") is None


def test_host_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="domain type"):
        host(tmp_path, domain_type="xen")
    with pytest.raises(ValueError, match="needs a boot kernel"):
        host(tmp_path, boot_initrd="/k/initrd.gz")
    with pytest.raises(ValueError, match="at least 1 vCPU"):
        domain_xml(spec(vcpus=0), host(tmp_path))
    with pytest.raises(ValueError):
        domain_xml(spec(uuid="not-a-uuid"), host(tmp_path))


def test_metadata_round_trip(tmp_path: Path) -> None:
    text = domain_xml(spec(epoch=7), host(tmp_path))
    assert f'xmlns:bollard="{NS}"' in text
    assert "<bollard:vm " in text
    facts = parse_domain(text)
    assert facts.uuid == UUID
    assert (facts.vcpus, facts.memory_mb) == (2, 512)
    assert facts.meta == BollardMeta(uuid=UUID, name="web-1", epoch=7)


@pytest.mark.parametrize(
    "name",
    [
        "a<b>&c\"d'e",
        "]]><evil/>",
        "</title><metadata/>",
        "ünïcødé 名前 🚀",
        "  spaced  ",
        "&amp; already escaped",
    ],
)
def test_odd_names_are_escaped_and_round_trip(tmp_path: Path, name: str) -> None:
    text = domain_xml(spec(name), host(tmp_path))
    root = ET.fromstring(text)  # well formed
    assert root.find("metadata/evil") is None and len(root.findall("metadata")) == 1
    assert root.findtext("title") == name
    meta = parse_domain(text).meta
    assert meta is not None and meta.name == name


def test_names_xml_cannot_carry(tmp_path: Path) -> None:
    text = domain_xml(spec("two\nlines\x01\x00bell"), host(tmp_path))
    root = ET.fromstring(text)
    assert root.findtext("title") == "two lines\ufffd\ufffdbell"  # one line for libvirt
    meta = parse_domain(text).meta
    assert meta is not None and meta.name == "two\nlines\ufffd\ufffdbell"


def test_bare_metadata_element(tmp_path: Path) -> None:
    """virDomainSetMetadata takes, and virDomainGetMetadata returns, the bare element."""
    meta = BollardMeta(uuid=UUID, name='x"<y', epoch=4)
    text = metadata_xml(meta)
    assert text.startswith("<vm ") and NS not in text
    assert parse_meta_xml(text) == meta
    assert parse_meta_xml("<vm name='x'/>") is None  # no uuid
    assert parse_meta_xml("<vm uuid='nope' name='x'/>") is None
    assert parse_meta_xml("not xml <") is None
    negative = parse_meta_xml(f"<vm uuid='{UUID}' name='x' epoch='-3'/>")
    assert negative is not None and negative.epoch == 0


def test_foreign_domains_have_no_metadata() -> None:
    text = f"""<domain type='kvm'><name>other</name><uuid>{UUID.upper()}</uuid>
      <metadata><app:x xmlns:app="https://example.com/x" uuid="{UUID}" name="n"/></metadata>
      <memory unit='KiB'>1048576</memory><vcpu placement='static' current='1'>4</vcpu>
    </domain>"""
    facts = parse_domain(text)
    assert facts.meta is None
    assert facts.uuid == UUID  # canonical form
    assert (facts.vcpus, facts.memory_mb) == (1, 1024)


@pytest.mark.parametrize(
    ("amount", "unit", "mib"),
    [("524288", None, 512), ("512", "MiB", 512), ("1", "GiB", 1024), ("1", "G", 1024),
     ("2147483648", "b", 2048), ("1000000", "KB", 953)],
)  # fmt: skip
def test_memory_units(amount: str, unit: str | None, mib: int) -> None:
    unit_attr = f" unit='{unit}'" if unit else ""
    text = f"<domain><uuid>{UUID}</uuid><memory{unit_attr}>{amount}</memory></domain>"
    assert parse_domain(text).memory_mb == mib


def test_updated_xml_keeps_devices_and_changes_size_and_metadata(tmp_path: Path) -> None:
    current = domain_xml(spec(epoch=3), host(tmp_path))
    root = ET.fromstring(current)
    devices = root.find("devices")
    assert devices is not None
    ET.SubElement(devices, "interface", {"type": "network"}).append(
        ET.Element("mac", {"address": "52:54:00:aa:bb:cc"})
    )
    ET.SubElement(root, "currentMemory", {"unit": "KiB"}).text = "524288"
    updated = updated_domain_xml(
        ET.tostring(root, encoding="unicode"), spec("renamed & <new>", memory_mb=1024,
                                                    vcpus=4, epoch=5)
    )  # fmt: skip
    new = ET.fromstring(updated)
    assert new.find("devices/interface/mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert new.findtext("currentMemory") == "1024"
    assert new.findtext("title") == "renamed & <new>"
    facts = parse_domain(updated)
    assert (facts.vcpus, facts.memory_mb) == (4, 1024)
    assert facts.meta == BollardMeta(uuid=UUID, name="renamed & <new>", epoch=5)
    assert len(new.findall(f"metadata/{{{NS}}}vm")) == 1
    with pytest.raises(ValueError, match="not that of VM"):
        updated_domain_xml(updated, spec(uuid="22222222-2222-4222-8222-222222222222"))


def test_updated_xml_adds_what_is_missing() -> None:
    bare = f"<domain type='kvm'><name>n</name><uuid>{UUID}</uuid><memory>1</memory></domain>"
    facts = parse_domain(updated_domain_xml(bare, spec()))
    assert facts.meta == BollardMeta(uuid=UUID, name="web-1", epoch=3)
    assert (facts.vcpus, facts.memory_mb) == (2, 512)


def test_disks_and_nics(tmp_path: Path) -> None:
    disks = (
        DomainDisk(path="/img/a b.qcow2"),
        DomainDisk(path="/img/seed.iso", target="vdb", format="raw", readonly=True),
    )
    nics = (DomainNic(network="default", mac="52:54:00:00:00:01"), DomainNic(bridge="br0"))
    root = ET.fromstring(domain_xml(spec(disks=disks, nics=nics), host(tmp_path)))  # fmt: skip
    sources = [d.find("source").get("file") for d in root.findall("devices/disk")]  # type: ignore[union-attr]
    assert sources == ["/img/a b.qcow2", "/img/seed.iso"]
    assert root.find("devices/disk[2]/readonly") is not None
    kinds = [i.get("type") for i in root.findall("devices/interface")]
    assert kinds == ["network", "bridge"]
    with pytest.raises(ValueError, match="network or a bridge"):
        domain_xml(spec(nics=(DomainNic(),)), host(tmp_path))


def test_display_from_live_xml() -> None:
    live = f"""<domain><uuid>{UUID}</uuid><devices>
      <graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>
        <listen type='address' address='127.0.0.1'/></graphics></devices></domain>"""
    assert display_of(parse_domain(live)) == {"type": "vnc", "listen": "127.0.0.1", "port": 5901}
    inactive = live.replace("port='5901'", "port='-1'")
    assert display_of(parse_domain(inactive)) is None
    only_listen_element = f"""<domain><uuid>{UUID}</uuid><devices>
      <graphics type='vnc' port='5902'><listen type='address' address='::1'/></graphics>
      </devices></domain>"""
    assert display_of(parse_domain(only_listen_element)) == {
        "type": "vnc",
        "listen": "::1",
        "port": 5902,
    }


def test_uuids_and_console_paths(tmp_path: Path) -> None:
    assert canonical_uuid(UUID.upper()) == UUID
    assert console_path(tmp_path, UUID) == tmp_path / f"{UUID}.log"
    for bad in ("../../etc/passwd", "", "x"):
        with pytest.raises(ValueError):
            console_path(tmp_path, bad)
