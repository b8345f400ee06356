"""MAC addresses of VM NICs (table `macs`): each belongs to at most one VM.

Callers claim and allocate inside their write transaction. Each takes a SELECT first and
then INSERTs inside a SAVEPOINT: on SQLite writers are serialized, so the SELECT decides; on
PostgreSQL a concurrent transaction may insert the same MAC between the two, and the
primary-key conflict then fails only the savepoint, not the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from secrets import token_bytes

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from bollard.domain.errors import AlreadyExists, TemporaryError
from bollard.domain.models import Nic
from bollard.store.tables import macs, vms

# QEMU/KVM's locally administered prefix, as libvirt assigns: 24 random bits follow.
PREFIX = "52:54:00"
ALLOCATE_ATTEMPTS = 20


def random_mac() -> str:
    """52:54:00 and three random bytes."""
    return PREFIX + "".join(f":{b:02x}" for b in token_bytes(3))


def owner(conn: Connection, mac: str) -> str | None:
    """The uuid of the VM that has `mac` (lower case), if any."""
    return conn.execute(select(macs.c.vm_uuid).where(macs.c.mac == mac)).scalar()


def _insert(conn: Connection, mac: str, vm_uuid: str) -> bool:
    """Take `mac` for the VM; False if it is taken (checked, then inserted in a savepoint)."""
    if owner(conn, mac) is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(insert(macs).values(mac=mac, vm_uuid=vm_uuid))
    except IntegrityError:
        return False  # taken by a concurrent transaction (PostgreSQL)
    return True


def claim(conn: Connection, mac: str, vm_uuid: str) -> None:
    """Take `mac` (normalised: lower case) for the VM, or AlreadyExists naming the VM that has
    it."""
    if _insert(conn, mac, vm_uuid):
        return
    uuid = owner(conn, mac)
    if uuid == vm_uuid:
        raise AlreadyExists(f"MAC address {mac} is given to two NICs of the VM")
    name = conn.execute(select(vms.c.name).where(vms.c.uuid == uuid)).scalar()
    holder = f"VM {name!r}" if name is not None else f"VM {uuid or '(being created)'}"
    raise AlreadyExists(f"MAC address {mac} is already taken by {holder}")


def allocate(conn: Connection, vm_uuid: str) -> str:
    """A free random MAC address (52:54:00:xx:xx:xx), taken for the VM."""
    for _ in range(ALLOCATE_ATTEMPTS):
        mac = random_mac()
        if _insert(conn, mac, vm_uuid):
            return mac
    raise TemporaryError(
        f"no free MAC address found in {ALLOCATE_ATTEMPTS} random picks; try again or give one"
    )


def assign(conn: Connection, vm_uuid: str, nics: Sequence[Nic]) -> tuple[Nic, ...]:
    """Take the MAC addresses of a new VM's NICs: first the given ones (AlreadyExists if one is
    taken), then a random free one for each NIC without (mac ""). The NICs, all with MACs."""
    for nic in nics:
        if nic.mac:
            claim(conn, nic.mac, vm_uuid)
    return tuple(nic if nic.mac else replace(nic, mac=allocate(conn, vm_uuid)) for nic in nics)


def of_vm(conn: Connection, vm_uuid: str) -> list[str]:
    return list(conn.execute(select(macs.c.mac).where(macs.c.vm_uuid == vm_uuid)).scalars())


def release(conn: Connection, vm_uuid: str) -> None:
    """Free the VM's MAC addresses (when its record is removed)."""
    conn.execute(delete(macs).where(macs.c.vm_uuid == vm_uuid))
