"""Disk lock refusals from libvirt (its lock manager's leases, QEMU's image locks) answered
as Bollard's own lock refusal, with fake libvirtError objects (no libvirt needed)."""

from __future__ import annotations

import pytest

from bollard.agent.drivers.libvirt.errors import Err, map_error
from bollard.agent.drivers.libvirt.lockd import (
    FROM_LOCKSPACE,
    image_locked,
    lease_held,
    lock_refusal,
)
from bollard.agent.volume_locks import LOCKED
from bollard.domain.errors import DriverInvalidState, DriverPermanent, DriverTemporary
from tests.unit.test_libvirt_errors import FakeLibvirtError

DISK = "/srv/shared/vol-1.qcow2"
# As libvirt 9 words them (VIR_ERR_RESOURCE_BUSY from virtlockd; QEMU's image lock, which
# libvirt passes on as an internal error with QEMU's stderr).
LEASE = f"resource busy: Lockspace resource '{DISK}' is locked"
IMAGE = (
    "internal error: qemu unexpectedly closed the monitor: 2026-01-01T00:00:00.000000Z "
    'qemu-system-x86_64: -blockdev {"node-name":"libvirt-1-format","read-only":false,'
    '"driver":"qcow2","file":"libvirt-1-storage","backing":null}: Failed to get "write" lock'
    f"\nIs another process using the image [{DISK}]?"
)


def test_a_lease_held_elsewhere_is_a_lock_refusal_naming_the_disk() -> None:
    exc = FakeLibvirtError(Err.RESOURCE_BUSY, LEASE, FROM_LOCKSPACE)
    assert lease_held(exc) == DISK
    assert image_locked(exc) is None
    error = map_error(exc, "start 1234")
    assert type(error) is DriverInvalidState
    assert error.code == LOCKED == "volume-locked"
    assert error.message == (
        f"libvirt: start 1234: disk {DISK} is locked by another host (libvirt lock manager "
        "lease): refusing to use it here while that host may"
    )
    assert "\n" not in error.message


def test_qemus_image_lock_is_a_lock_refusal_told_apart_from_a_lease() -> None:
    exc = FakeLibvirtError(Err.INTERNAL_ERROR, IMAGE)
    assert lease_held(exc) is None
    assert image_locked(exc) == DISK
    error = map_error(exc, "start 1234")
    assert type(error) is DriverInvalidState
    assert error.code == LOCKED
    assert error.message == (
        f"libvirt: start 1234: disk {DISK} is in use by another process (QEMU image lock): "
        "refusing to use it here meanwhile"
    )


@pytest.mark.parametrize(
    "said",
    [
        'Failed to get shared "write" lock',
        'Failed to get "consistent read" lock',
    ],
)
def test_other_image_lock_wordings_without_a_path(said: str) -> None:
    exc = FakeLibvirtError(Err.OPERATION_FAILED, f"qemu-system-x86_64: {said}")
    assert image_locked(exc) == ""
    error = lock_refusal(exc, "attach vdb")
    assert error is not None and error.code == LOCKED
    assert "a disk is in use by another process" in error.message


@pytest.mark.parametrize(
    ("code", "message", "domain", "expected"),
    [
        # Busy for another reason: still worth a retry.
        (Err.RESOURCE_BUSY, "resource busy: device is busy", 10, DriverTemporary),
        # The wording alone, from neither the lock manager nor as "resource busy": not ours.
        (Err.INTERNAL_ERROR, LEASE, 10, DriverPermanent),
    ],
)
def test_other_errors_keep_their_mapping(
    code: int, message: str, domain: int, expected: type
) -> None:
    exc = FakeLibvirtError(code, message, domain)
    assert lock_refusal(exc, "start 1234") is None
    assert type(map_error(exc, "start 1234")) is expected


def test_a_lease_in_a_lockspace_directory_is_named_by_its_hash() -> None:
    resource = "5e3b" * 16  # file_lockspace_dir: the sha256 of the disk's path
    exc = FakeLibvirtError(
        Err.RESOURCE_BUSY, f"resource busy: Lockspace resource '{resource}' is locked", 42
    )
    error = map_error(exc, "migrate 1234")
    assert error.code == LOCKED
    assert f"disk {resource} is locked by another host" in error.message
