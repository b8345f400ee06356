"""The libvirt host: its identity, its boot id and its capacity.

The boot id must change exactly when the host may have lost its VMs by a reboot, and not
otherwise: the server keeps a fenced node out of service until its boot id changes, so a
boot id that changed without a reboot would let a host whose VMs may still run rejoin. A
libvirtd restart does not stop the guests (QEMU processes outlive it), so nothing of the
daemon (its pid, its start time) may go into it.

Bollard's boot id is therefore the kernel's boot id of the machine that runs the daemon
(``/proc/sys/kernel/random/boot_id``: new at every boot) combined with the libvirt host's
uuid (``<host><uuid>`` of its capabilities; the URI when it has none), hashed into one
uuid. Several daemons on one machine (test set-ups) then have distinct boot ids, each
stable while the machine runs.

The kernel's boot id can only be read when the daemon runs on the agent's machine (a URI
without a host, or with a loopback one, as the agent is meant to run on its hypervisor
host). For a remote daemon libvirt offers no boot id: the boot id is then stable (the host
uuid only), which is the safe side: a fenced remote host stays out until an operator
confirms it.
"""

from __future__ import annotations

import socket
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

KERNEL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_BOOT_NS = uuidlib.UUID("5b3c8f0e-6a57-4d0e-9d5e-6f1f2b0a9c41")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "localhost.localdomain"}


def host_uuid(capabilities_xml: str) -> str | None:
    """The host uuid from ``virConnectGetCapabilities`` (None if it has none)."""
    try:
        root = ET.fromstring(capabilities_xml)
    except ET.ParseError:
        return None
    text = (root.findtext("host/uuid") or "").strip()
    return text or None


def domain_types(capabilities_xml: str) -> set[str]:
    """The domain types (kvm, qemu, ...) the host's guests can have."""
    try:
        root = ET.fromstring(capabilities_xml)
    except ET.ParseError:
        return set()
    return {t for d in root.iterfind("guest/arch/domain") if (t := d.get("type"))}


def is_local_uri(uri: str) -> bool:
    """Whether the daemon of ``uri`` runs on this machine."""
    host = (urlsplit(uri).hostname or "").lower()
    return host in ("", *_LOOPBACK) or host == socket.gethostname().lower()


def read_kernel_boot_id(path: Path = KERNEL_BOOT_ID) -> str:
    return path.read_text().strip()


def boot_id(kernel_boot_id: str | None, host_identity: str) -> str:
    """Bollard's boot id of a libvirt host (see the module's docstring)."""
    kernel = kernel_boot_id if kernel_boot_id is not None else "remote"
    return str(uuidlib.uuid5(_BOOT_NS, f"{kernel}\n{host_identity}"))
