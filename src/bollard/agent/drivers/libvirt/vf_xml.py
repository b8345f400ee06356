"""SR-IOV in libvirt's XML: PCI addresses both ways, and what a domain's definition takes
that may be a virtual function (VF) of the host.

A VF is named as ``domain.sriov`` names it: its PCI address ``0000:03:10.2`` (lower-case
hex), or, where the XML names only its network device (a macvtap interface),
``NETDEV_KEY + device``; the agent, which knows its VFs, maps those. Parsing is with
xml.etree.ElementTree, as in ``xml``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bollard.agent.drivers.base import NETDEV_KEY
from bollard.domain.sriov import PCI_ADDRESS


def pci_attributes(address: str) -> dict[str, str]:
    """The attributes of libvirt's ``<address type='pci'>`` for ``0000:03:10.2``;
    ValueError if it is not such an address."""
    if not PCI_ADDRESS.fullmatch(address):
        raise ValueError(f"PCI address {address!r}: expected DDDD:BB:SS.F (hex)")
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return {
        "type": "pci",
        "domain": f"0x{domain}",
        "bus": f"0x{bus}",
        "slot": f"0x{slot}",
        "function": f"0x{function}",
    }


def pci_address(el: ET.Element) -> str | None:
    """``0000:03:10.2`` from libvirt's ``<address type='pci'>`` (numbers in hex with 0x, or
    decimal); None if it is not a PCI address that can be read."""
    if el.get("type", "pci") != "pci":
        return None
    parts = []
    for name, width, top in (("domain", 4, 0xFFFF), ("bus", 2, 0xFF), ("slot", 2, 0xFF)):
        value = _number(el.get(name, "0" if name == "domain" else None))
        if value is None or value > top:
            return None
        parts.append(f"{value:0{width}x}")
    function = _number(el.get("function"))
    if function is None or function > 7:
        return None
    return f"{parts[0]}:{parts[1]}:{parts[2]}.{function:x}"


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip().lower()
    try:
        return int(text[2:], 16) if text.startswith("0x") else int(text, 10)
    except ValueError:
        return None


def vf_uses(text: str) -> dict[str, str]:
    """What a domain's XML takes that may be an SR-IOV VF, with the MAC of the NIC that
    takes it ("" for a plain ``<hostdev>``): a PCI address (``0000:03:10.2``) for a hostdev
    interface or a PCI ``<hostdev>``, ``NETDEV_KEY + device`` for a direct (macvtap)
    interface in any mode. Whether it is a VF of one of the host's PFs is for the caller to
    tell (the agent knows its VFs). ValueError if the XML cannot be read."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable domain XML: {exc}") from None
    uses: dict[str, str] = {}
    for el in root.findall("devices/interface"):
        mac_el, source = el.find("mac"), el.find("source")
        mac = (mac_el.get("address") or "").lower() if mac_el is not None else ""
        if source is None:
            continue
        if el.get("type") == "direct" and source.get("dev"):
            uses.setdefault(NETDEV_KEY + (source.get("dev") or ""), mac)
        address = source.find("address")
        if el.get("type") == "hostdev" and address is not None and (pci := pci_address(address)):
            uses.setdefault(pci, mac)
    for el in root.findall("devices/hostdev[@type='pci']/source/address"):
        if pci := pci_address(el):
            uses.setdefault(pci, "")
    return uses
