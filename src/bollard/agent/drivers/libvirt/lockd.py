"""Disk lock refusals from libvirt: its lock manager's (virtlockd, the ``lockd`` plugin) and
QEMU's own image locks, answered as Bollard's own lock refusal (agent/volume_locks.py):
``DriverInvalidState`` with the code ``volume-locked`` and one line naming the disk.

libvirt's lock manager is a second guard underneath Bollard's lock files, independent of
the agent and the server: a host whose qemu.conf says ``lock_manager = "lockd"`` and that
runs ``virtlockd`` gives every disk of a domain a lease (``auto_disk_leases`` in
qemu-lockd.conf), an fcntl lock virtlockd holds on the disk file itself (or, with a
``file_lockspace_dir``, on a file named by a hash of the disk's path there) for as long as
the domain runs. A start, a hot-plug or an incoming migration whose disk's lease another
virtlockd holds fails with ``VIR_ERR_RESOURCE_BUSY``: "resource busy: Lockspace resource
'<path>' is locked". The lease is taken when QEMU's CPUs are started (QEMU is launched
paused first), so on the same machine QEMU's own image lock ("Failed to get "write" lock
... Is another process using the image [<path>]?") usually refuses first; both are lock
refusals, told apart by their wording.

Whether a host runs a lock manager is not visible through libvirt's API (no capability
names it), so the driver does not report it in its host facts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bollard.agent.volume_locks import LOCKED
from bollard.domain.errors import DriverInvalidState

if TYPE_CHECKING:  # (errors.py imports this module)
    from bollard.agent.drivers.libvirt.errors import LibvirtErrorLike

RESOURCE_BUSY = 87  # VIR_ERR_RESOURCE_BUSY
FROM_LOCKING = 42  # VIR_FROM_LOCKING: the lock manager plugin
FROM_LOCKSPACE = 51  # VIR_FROM_LOCKSPACE: virtlockd's lockspaces

_LEASE = re.compile(r"Lockspace resource '(?P<resource>[^']*)' is locked")
_IMAGE_LOCK = re.compile(r"Failed to get (shared )?\"[^\"]*\" lock")
_IMAGE = re.compile(r"Is another process using the image \[(?P<path>[^\]]*)\]")


def _message(exc: LibvirtErrorLike) -> str:
    return exc.get_error_message() or str(exc)


def lease_held(exc: LibvirtErrorLike) -> str | None:
    """The disk (its path, or its lease's name in a lockspace directory) whose lease
    libvirt's lock manager refused because another host holds it; None for other errors."""
    found = _LEASE.search(_message(exc))
    if found is None:
        return None
    from_locks = exc.get_error_domain() in (FROM_LOCKING, FROM_LOCKSPACE)
    return found["resource"] if from_locks or exc.get_error_code() == RESOURCE_BUSY else None


def image_locked(exc: LibvirtErrorLike) -> str | None:
    """The image QEMU refused to open because another process holds its image lock (as
    QEMU names it, or "" when it does not); None for other errors."""
    message = _message(exc)
    if _IMAGE_LOCK.search(message) is None:
        return None
    found = _IMAGE.search(message)
    return found["path"] if found is not None else ""


def lock_refusal(exc: LibvirtErrorLike, action: str) -> DriverInvalidState | None:
    """Bollard's lock refusal for a libvirt error that is one, else None."""
    resource = lease_held(exc)
    if resource is not None:
        return DriverInvalidState(
            f"libvirt: {action}: disk {resource} is locked by another host (libvirt lock "
            "manager lease): refusing to use it here while that host may",
            code=LOCKED,
        )
    image = image_locked(exc)
    if image is not None:
        disk = f"disk {image}" if image else "a disk"
        return DriverInvalidState(
            f"libvirt: {action}: {disk} is in use by another process (QEMU image lock): "
            "refusing to use it here meanwhile",
            code=LOCKED,
        )
    return None
