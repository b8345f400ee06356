"""Domain XML: what Bollard defines in libvirt for a VM, and what it reads back.

Every value goes through xml.etree.ElementTree, which escapes it; nothing untrusted is put
into XML by string concatenation. Characters XML 1.0 cannot carry at all (most control
characters) are replaced by U+FFFD.

A Bollard domain is named ``bollard-<uuid>`` (unique on the host, never renamed); the VM's
name is in its ``<title>`` and, with its uuid and ownership epoch, in Bollard's metadata::

    <metadata>
      <bollard:vm xmlns:bollard="https://bollard.dev/xmlns/vm/1" uuid="..." epoch="3"
                  name="web-1"/>
    </metadata>

Domains without that element are not Bollard's and are left alone.

SR-IOV NICs take the virtual function (VF) the server claimed on this host: macvtap as
``<interface type='direct'>`` on the VF's network device in passthrough mode (libvirt sets
the VF's MAC to the NIC's), hostdev as ``<interface type='hostdev' managed='yes'>`` on its
PCI address (libvirt binds the VF to vfio-pci while the guest runs and back after).
``vf_xml.vf_uses`` tells which VFs (and other PCI devices and network devices) a definition takes.
"""

from __future__ import annotations

import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bollard.agent.drivers.libvirt.vf_xml import pci_address, pci_attributes

NS = "https://bollard.dev/xmlns/vm/1"
NS_PREFIX = "bollard"
META_TAG = "vm"
DOMAIN_TYPES = ("kvm", "qemu")
NAME_PREFIX = "bollard-"

ET.register_namespace(NS_PREFIX, NS)

# Characters XML 1.0 allows (https://www.w3.org/TR/xml/#charsets); the others are replaced.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


VOLUME_ALIAS = "ua-bollard-vol-"  # + device: the user alias of a disk that is a pool's volume


@dataclass(frozen=True)
class DomainDisk:
    """A disk of the domain as its XML has it: an image attached to the VM. ``volume``: a
    volume of a pool (marked with the user alias ``ua-bollard-vol-<dev>``), which the VM
    does not own; else a legacy disk of the host's Bollard pool, which goes with the VM."""

    path: str
    target: str = "vda"
    format: str = "qcow2"
    bus: str = "virtio"
    readonly: bool = False
    volume: bool = False


@dataclass(frozen=True)
class DomainNic:
    """A network interface of the domain as its XML has it: on a libvirt network, on a
    host bridge, or on an SR-IOV VF (``mode`` macvtap on ``vf_netdev``, or hostdev at
    ``vf_pci``), one of the three. ``sriov`` (the VF's physical network) is written nowhere
    in the XML: read back, it is None, as is ``vf_pci`` of a macvtap NIC."""

    network: str | None = None
    bridge: str | None = None
    mac: str | None = None
    model: str = "virtio"
    sriov: str | None = None
    mode: str | None = None  # "macvtap" or "hostdev" for a NIC on a VF
    vf_pci: str | None = None  # 0000:03:10.2
    vf_netdev: str | None = None

    def vf_source(self) -> tuple[str, str | None] | None:
        """What the XML says of the VF this NIC is on (None: not on a VF): two NICs on one
        VF have equal sources."""
        if self.mode == "macvtap":
            return (self.mode, self.vf_netdev)
        if self.mode == "hostdev":
            return (self.mode, self.vf_pci)
        return None


@dataclass(frozen=True)
class DomainSpec:
    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    epoch: int = 0
    disks: tuple[DomainDisk, ...] = ()
    nics: tuple[DomainNic, ...] = ()


@dataclass(frozen=True)
class HostSettings:
    """What the host's configuration puts into every domain it defines.

    ``boot_kernel`` (with optional ``boot_initrd`` and ``boot_cmdline``) boots every VM from
    that kernel instead of its disks: a testing and demo facility for VMs without images.
    """

    console_dir: Path
    domain_type: str = "kvm"
    vnc_listen: str = "127.0.0.1"
    boot_kernel: str | None = None
    boot_initrd: str | None = None
    boot_cmdline: str | None = None

    def __post_init__(self) -> None:
        if self.domain_type not in DOMAIN_TYPES:
            raise ValueError(
                f"libvirt domain type must be one of {', '.join(DOMAIN_TYPES)}, "
                f"got {self.domain_type!r}"
            )
        if self.boot_kernel is None and (self.boot_initrd or self.boot_cmdline):
            raise ValueError("a boot initrd or command line needs a boot kernel")


@dataclass(frozen=True)
class BollardMeta:
    uuid: str
    name: str
    epoch: int


@dataclass(frozen=True)
class DomainFacts:
    """What Bollard reads from a domain's XML."""

    uuid: str
    vcpus: int
    memory_mb: int
    meta: BollardMeta | None
    graphics: list[dict[str, Any]] = field(default_factory=list)
    disks: list[DomainDisk] = field(default_factory=list)  # file-backed disks, in XML order
    nics: list[DomainNic] = field(default_factory=list)  # NICs Bollard can write, in order


def canonical_uuid(value: str) -> str:
    """The lower-case, dashed form of a uuid (ValueError if it is not one)."""
    return str(uuidlib.UUID(value))


def domain_name(uuid: str) -> str:
    return NAME_PREFIX + canonical_uuid(uuid)


def console_path(console_dir: Path, uuid: str) -> Path:
    """The serial console log of a VM (the uuid is checked: no path tricks)."""
    return console_dir / f"{canonical_uuid(uuid)}.log"


def clean(text: str) -> str:
    """``text`` with the characters XML cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: clean(v) for k, v in attrs.items()})
    if text is not None:
        el.text = clean(text)
    return el


def meta_element(meta: BollardMeta, *, namespaced: bool = True) -> ET.Element:
    tag = f"{{{NS}}}{META_TAG}" if namespaced else META_TAG
    attrs = {"uuid": clean(meta.uuid), "epoch": str(meta.epoch), "name": clean(meta.name)}
    return ET.Element(tag, attrs)


def metadata_xml(meta: BollardMeta) -> str:
    """The metadata element alone and without its namespace, as ``virDomainSetMetadata``
    takes it (libvirt puts it in the namespace given with the call)."""
    return ET.tostring(meta_element(meta, namespaced=False), encoding="unicode")


def domain_xml(spec: DomainSpec, host: HostSettings) -> str:
    """The persistent definition of a Bollard VM."""
    uuid = canonical_uuid(spec.uuid)
    _check_size(spec)
    root = ET.Element("domain", {"type": host.domain_type})
    _sub(root, "name", domain_name(uuid))
    _sub(root, "uuid", uuid)
    _sub(root, "title", " ".join(spec.name.splitlines()))  # libvirt wants one line
    meta = _sub(root, "metadata")
    meta.append(meta_element(BollardMeta(uuid=uuid, name=spec.name, epoch=spec.epoch)))
    _sub(root, "memory", str(spec.memory_mb), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))

    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm")
    if host.boot_kernel is not None:
        _sub(os_el, "kernel", host.boot_kernel)
        if host.boot_initrd:
            _sub(os_el, "initrd", host.boot_initrd)
        if host.boot_cmdline:
            _sub(os_el, "cmdline", host.boot_cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if host.domain_type == "kvm":
        _sub(root, "cpu", mode="host-model")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    for nic in spec.nics:
        _nic(devices, nic)
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(console_path(host.console_dir, uuid)), append="on")
    _sub(serial, "target", port="0")
    graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen=host.vnc_listen)
    _sub(graphics, "listen", type="address", address=host.vnc_listen)
    return ET.tostring(root, encoding="unicode")


def _check_size(spec: DomainSpec) -> None:
    if spec.vcpus < 1 or spec.memory_mb < 1:
        raise ValueError(
            f"a VM needs at least 1 vCPU and 1 MiB of memory (got {spec.vcpus} vCPUs, "
            f"{spec.memory_mb} MiB)"
        )


def updated_domain_xml(current: str, spec: DomainSpec) -> str:
    """``current`` (a Bollard domain's persistent XML) with the VM's name, size and
    metadata of ``spec``; everything else (devices, addresses, MACs) is kept as it is."""
    _check_size(spec)
    try:
        root = ET.fromstring(current)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    uuid = canonical_uuid(spec.uuid)
    if canonical_uuid((root.findtext("uuid") or "").strip()) != uuid:
        raise ValueError(f"the domain XML is not that of VM {uuid}")
    _replace(root, "title", after="uuid").text = clean(" ".join(spec.name.splitlines()))
    metadata = _replace(root, "metadata", after="title", keep_children=True)
    for old in metadata.findall(f"{{{NS}}}{META_TAG}"):
        metadata.remove(old)
    metadata.append(meta_element(BollardMeta(uuid=uuid, name=spec.name, epoch=spec.epoch)))
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None:
            el.text, el.attrib = str(spec.memory_mb), {"unit": "MiB"}
    vcpu = _replace(root, "vcpu", after="memory")
    vcpu.text = str(spec.vcpus)
    vcpu.attrib.pop("current", None)
    return ET.tostring(root, encoding="unicode")


def nic_changes(
    have: list[DomainNic] | tuple[DomainNic, ...], wanted: tuple[DomainNic, ...]
) -> list[DomainNic]:
    """The NICs of ``wanted`` that ``with_devices`` would write into a definition that has
    the NICs ``have``: those whose MAC it lacks, and SR-IOV NICs it has on another VF (or
    not on a VF)."""
    by_mac = {n.mac.lower(): n for n in have if n.mac}
    changes = []
    for nic in wanted:
        old = by_mac.get(nic.mac.lower()) if nic.mac else None
        if old is None or (nic.mode is not None and old.vf_source() != nic.vf_source()):
            changes.append(nic)
    return changes


def with_devices(
    current: str,
    disks: list[DomainDisk] | tuple[DomainDisk, ...] = (),
    nics: tuple[DomainNic, ...] = (),
) -> str:
    """``current`` (a domain's XML) with the disks of ``disks`` whose target device it does
    not have yet, and the NICs of ``nics`` whose MAC it does not have yet, added; the
    devices it has are kept as they are, except an interface with the MAC of an SR-IOV NIC
    of ``nics`` that is not on that NIC's VF: it is replaced in place (the VF a VM holds on
    a host is the server's claim). A migration's target definition is made with it too."""
    try:
        root = ET.fromstring(current)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    devices = root.find("devices")
    if devices is None:
        devices = _sub(root, "devices")
    present = {t.get("dev") for t in root.findall("devices/disk/target")}
    for disk in disks:
        if disk.target not in present:
            _disk(devices, disk)
    by_mac: dict[str, ET.Element] = {}
    for el in devices.findall("interface"):
        mac = el.find("mac")
        if mac is not None:
            by_mac.setdefault((mac.get("address") or "").lower(), el)
    for nic in nics:
        old = by_mac.get(nic.mac.lower()) if nic.mac else None
        if old is None:
            devices.append(_nic_element(nic))
        elif nic.mode is not None:
            have = _read_nic(old)
            if have is None or have.vf_source() != nic.vf_source():
                devices[list(devices).index(old)] = _nic_element(nic)
    return ET.tostring(root, encoding="unicode")


def with_epoch(current: str, epoch: int) -> str:
    """``current`` (a Bollard domain's XML) with the epoch of its Bollard metadata set to
    ``epoch``, everything else as it is; ValueError if it has no Bollard metadata."""
    try:
        root = ET.fromstring(current)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    meta = root.find(f"metadata/{{{NS}}}{META_TAG}")
    if meta is None:
        raise ValueError("the domain XML has no Bollard metadata")
    meta.set("epoch", str(epoch))
    return ET.tostring(root, encoding="unicode")


def _replace(root: ET.Element, tag: str, *, after: str, keep_children: bool = False) -> ET.Element:
    """The child ``tag`` of ``root`` (emptied unless ``keep_children``), created after the
    child ``after`` (or first) when missing."""
    el = root.find(tag)
    if el is not None:
        if not keep_children:
            el.clear()
        return el
    el = ET.Element(tag)
    anchor = root.find(after)
    index = list(root).index(anchor) + 1 if anchor is not None else 0
    root.insert(index, el)
    return el


def _disk(devices: ET.Element, disk: DomainDisk) -> ET.Element:
    el = _sub(devices, "disk", type="file", device="disk")
    _sub(el, "driver", name="qemu", type=disk.format)
    _sub(el, "source", file=disk.path)
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly:
        _sub(el, "readonly")
    if disk.volume:
        _sub(el, "alias", name=VOLUME_ALIAS + disk.target)
    return el


def disk_xml(disk: DomainDisk) -> str:
    """One ``<disk>`` element, as ``virDomainAttachDeviceFlags`` takes it."""
    return ET.tostring(_disk(ET.Element("devices"), disk), encoding="unicode")


def _nic(devices: ET.Element, nic: DomainNic) -> None:
    devices.append(_nic_element(nic))


def _nic_element(nic: DomainNic) -> ET.Element:
    """The ``<interface>`` of ``nic``; ValueError if it is not on exactly one network,
    bridge or VF, or its VF is not given as its mode needs."""
    given = (("network", nic.network), ("bridge", nic.bridge), ("VF", nic.mode))
    kinds = [kind for kind, value in given if value is not None]
    if len(kinds) != 1:
        raise ValueError(
            f"{f'NIC {nic.mac}' if nic.mac else 'a NIC'}: needs a network or a bridge or a VF "
            f"(exactly one), got {' and '.join(kinds) or 'none'}"
        )
    el = ET.Element("interface")
    if nic.mac:
        _sub(el, "mac", address=nic.mac)
    if nic.network is not None:
        el.set("type", "network")
        _sub(el, "source", network=nic.network)
    elif nic.bridge is not None:
        el.set("type", "bridge")
        _sub(el, "source", bridge=nic.bridge)
    elif nic.mode == "macvtap":
        if not nic.vf_netdev:
            raise ValueError(f"NIC {nic.mac}: macvtap needs the VF's network device")
        el.set("type", "direct")
        _sub(el, "source", dev=nic.vf_netdev, mode="passthrough")
    elif nic.mode == "hostdev":
        el.attrib.update(type="hostdev", managed="yes")
        _sub(_sub(el, "source"), "address", **pci_attributes(nic.vf_pci or ""))
        return el  # the guest sees the VF itself: no model
    else:
        raise ValueError(f"NIC {nic.mac}: SR-IOV mode {nic.mode!r} is not macvtap or hostdev")
    _sub(el, "model", type=nic.model)
    return el


# reading


def parse_meta(el: ET.Element) -> BollardMeta | None:
    """Bollard's metadata from its element (namespaced, as in the domain XML, or bare, as
    ``virDomainGetMetadata`` returns it); None if it is not well formed."""
    uuid, name, epoch = el.get("uuid"), el.get("name"), el.get("epoch", "0")
    if not uuid or name is None:
        return None
    try:
        return BollardMeta(uuid=canonical_uuid(uuid), name=name, epoch=max(0, int(epoch)))
    except ValueError:
        return None


def parse_meta_xml(text: str) -> BollardMeta | None:
    try:
        return parse_meta(ET.fromstring(text))
    except ET.ParseError:
        return None


def parse_domain(text: str) -> DomainFacts:
    """The facts Bollard needs from a domain's XML (ValueError if it cannot be read)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    uuid = canonical_uuid((root.findtext("uuid") or "").strip())
    meta_el = root.find(f"metadata/{{{NS}}}{META_TAG}")
    meta = parse_meta(meta_el) if meta_el is not None else None
    vcpu = root.find("vcpu")
    vcpus = int((vcpu.get("current") or vcpu.text or "0").strip()) if vcpu is not None else 0
    return DomainFacts(
        uuid=uuid,
        vcpus=vcpus,
        memory_mb=_memory_mb(root.find("memory")),
        meta=meta,
        graphics=[_graphics(g) for g in root.findall("devices/graphics")],
        disks=[d for d in map(_read_disk, root.findall("devices/disk")) if d is not None],
        nics=[n for n in map(_read_nic, root.findall("devices/interface")) if n is not None],
    )


def _read_nic(el: ET.Element) -> DomainNic | None:
    """The NIC of an ``<interface>`` of a kind Bollard writes (None for the others, e.g. a
    direct interface in another mode than passthrough)."""
    kind, source = el.get("type"), el.find("source")
    if source is None:
        return None
    mac_el, model_el = el.find("mac"), el.find("model")
    mac = (mac_el.get("address") or "").lower() or None if mac_el is not None else None
    model = (model_el.get("type") if model_el is not None else None) or "virtio"
    if kind == "network" or kind == "bridge":
        return DomainNic(
            network=source.get("network") if kind == "network" else None,
            bridge=source.get("bridge") if kind == "bridge" else None,
            mac=mac,
            model=model,
        )
    if kind == "direct" and source.get("mode") == "passthrough" and source.get("dev"):
        return DomainNic(mac=mac, model=model, mode="macvtap", vf_netdev=source.get("dev"))
    address = source.find("address")
    if kind == "hostdev" and address is not None and (pci := pci_address(address)):
        return DomainNic(mac=mac, mode="hostdev", vf_pci=pci)
    return None


def _read_disk(el: ET.Element) -> DomainDisk | None:
    source, target = el.find("source"), el.find("target")
    if el.get("device", "disk") != "disk" or source is None or target is None:
        return None
    path, dev = source.get("file"), target.get("dev")
    if el.get("type") != "file" or not path or not dev:
        return None
    driver, alias = el.find("driver"), el.find("alias")
    return DomainDisk(
        path=path,
        target=dev,
        format=(driver.get("type") if driver is not None else None) or "raw",
        bus=target.get("bus") or "virtio",
        readonly=el.find("readonly") is not None,
        volume=alias is not None and (alias.get("name") or "").startswith(VOLUME_ALIAS),
    )


def _memory_mb(el: ET.Element | None) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    unit = (el.get("unit") or "KiB").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown memory unit {unit!r}")
    return int(el.text or "0") * _UNITS[unit] // _UNITS["mib"]


def _graphics(el: ET.Element) -> dict[str, Any]:
    listen = el.get("listen")
    if listen is None:
        sub = el.find("listen[@type='address']")
        listen = sub.get("address") if sub is not None else None
    port = el.get("port")
    return {
        "type": el.get("type", ""),
        "listen": listen,
        "port": int(port) if port is not None and port.lstrip("-").isdigit() else None,
    }


def display_of(facts: DomainFacts) -> dict[str, Any] | None:
    """How to reach the VM's display (from its live XML): the first graphics device with a
    port, e.g. ``{"type": "vnc", "listen": "127.0.0.1", "port": 5900}``; None if none has
    one yet (the VM is not running)."""
    for g in facts.graphics:
        if g["port"] is not None and g["port"] > 0:
            return g
    return None
