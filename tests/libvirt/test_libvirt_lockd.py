"""libvirt's lock manager on the test hosts (tests/support/libvirt_env.py: each runs its own
virtlockd, ``lock_manager = "lockd"``, a lease for every disk): a second guard underneath
Bollard's own lock files, which these tests bypass (raw libvirt, and the driver called
directly, as no agent takes Bollard's locks here).

Two hosts see one shared directory; a guest runs on host a with its disk there. Starting a
domain with the same disk on host b is refused by b's virtlockd, which finds the disk's
lease held by a's: "Lockspace resource '<disk>' is locked". On this one machine QEMU's own
image lock would refuse such a start too, and first: libvirt launches QEMU paused, QEMU
opens (and locks) its images then, and the leases are taken only when its CPUs are started.
So the domains that must meet lockd alone run under an emulator wrapper that turns QEMU's
image locking off (``locking: off`` on each file node); the refusal then still comes, from
lockd, before the guest ran a single instruction on b. Once host a is powered off (its
virtlockd dies with it, as a fenced host's leases go), the start on b succeeds. A live
migration hands the lease over to the target (the driver's migrations of VMs with shared
disks are in test_libvirt_volumes.py and run with lockd on as every libvirt test does).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.base import DiskSpec, VmSpec
from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.volume_locks import LOCKED
from bollard.domain.errors import DriverInvalidState
from bollard.domain.states import PowerState
from tests.libvirt.driver_pair import run, until_counting
from tests.support.emulators import wait_for
from tests.support.libvirt_env import (
    GUEST_CMDLINE,
    Guest,
    LibvirtHost,
    count_boots,
    guest_domain_xml,
    power_off_host,
    power_on_host,
    read_counter,
)

pytestmark = pytest.mark.libvirt

UUID = "77777777-7777-4777-8777-777777777777"
BOOT_DEADLINE = 60.0  # boot to the first counter line takes ~3 s under TCG
QEMU_IMAGE_LOCK = 'Failed to get "write" lock'

# QEMU with its image locking off: the -blockdev of every file node gets "locking": "off".
_NO_IMAGE_LOCKS = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
for i in range(1, len(args)):
    if args[i - 1] == "-blockdev" and args[i].startswith("{{"):
        spec = json.loads(args[i])
        if spec.get("driver") == "file":
            spec["locking"] = "off"
        args[i] = json.dumps(spec)
os.execv("{qemu}", ["qemu-system-x86_64", *args])
"""


class Shared:
    """The session's two hosts, a directory both see with one qcow2 disk in it, and an
    emulator without QEMU's image locks."""

    def __init__(self, hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> None:
        self.a, self.b = hosts[0], hosts[1]
        self.guest, self.tmp_path = guest, tmp_path
        shared = tmp_path / "shared"
        shared.mkdir()
        self.disk = shared / "vol-lockd.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(self.disk), "16M"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        qemu = subprocess.run(
            ["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True, text=True
        ).stdout.strip()
        self.no_image_locks = tmp_path / "qemu-no-image-locks"
        self.no_image_locks.write_text(_NO_IMAGE_LOCKS.format(python=sys.executable, qemu=qemu))
        self.no_image_locks.chmod(0o755)

    def console(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def domain_xml(self, name: str, *, image_locks: bool = True) -> str:
        """The tiny guest with the shared disk as vda (and QEMU's image locks or not)."""
        root = ET.fromstring(guest_domain_xml(name, self.guest, self.console(name)))
        devices = root.find("devices")
        assert devices is not None
        if not image_locks:
            ET.SubElement(devices, "emulator").text = str(self.no_image_locks)
        add_disk(devices, self.disk)
        return ET.tostring(root, encoding="unicode")


def add_disk(devices: ET.Element, path: Path) -> None:
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=str(path))
    ET.SubElement(disk, "target", dev="vda", bus="virtio")


@pytest.fixture
def env(clean_hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> Iterator[Shared]:
    """(clean_hosts removes every domain afterwards; a host a test powered off is powered
    on again first.)"""
    try:
        yield Shared(clean_hosts, guest, tmp_path)
    finally:
        for host in clean_hosts:
            power_on_host(host)


def _within(seconds: float, predicate: Callable[[], object], what: str) -> None:
    wait_for(predicate, what, time.monotonic() + seconds)


def _qemus(host: LibvirtHost) -> list[int]:
    return [pid for pid, name in host.processes() if name.startswith("qemu")]


def _lockd_answers(host: LibvirtHost) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(host.virtlockd_socket))
        except OSError:
            return False
    return True


def _refusal(dom: Any) -> Any:
    import libvirt

    with pytest.raises(libvirt.libvirtError) as refused:
        dom.create()
    return refused.value


def assert_lease_refused(error: Any, disk: Path) -> None:
    """``error`` is lockd's refusal of ``disk`` (not QEMU's image lock)."""
    import libvirt

    assert error.get_error_code() == libvirt.VIR_ERR_RESOURCE_BUSY, error
    assert error.get_error_domain() == libvirt.VIR_FROM_LOCKSPACE, error
    assert f"Lockspace resource '{disk}' is locked" in error.get_error_message()
    assert QEMU_IMAGE_LOCK not in error.get_error_message()


def test_each_host_runs_its_virtlockd_and_loses_it_with_its_power(env: Shared) -> None:
    for host in (env.a, env.b):
        assert [name for _, name in host.processes()].count("virtlockd") == 1
        assert _lockd_answers(host)
        assert 'lock_manager = "lockd"' in (host.dir / "etc" / "qemu.conf").read_text()
    power_off_host(env.a)
    assert env.a.processes() == []
    assert not _lockd_answers(env.a)
    power_on_host(env.a)
    assert [name for _, name in env.a.processes()].count("virtlockd") == 1
    assert _lockd_answers(env.a)


def test_a_disk_leased_by_a_running_guest_on_a_is_refused_on_b_until_a_is_off(
    env: Shared,
) -> None:
    import libvirt

    with closing(env.a.connect()) as conn_a, closing(env.b.connect()) as conn_b:
        on_a = conn_a.defineXML(env.domain_xml("lockd-a"))
        on_a.create()
        _within(BOOT_DEADLINE, lambda: read_counter(env.console("lockd-a")), "a's guest to count")

        # With QEMU's image locks, as QEMU runs by default: QEMU refuses on its own first.
        locked_by_qemu = conn_b.defineXML(env.domain_xml("lockd-qemu"))
        said = _refusal(locked_by_qemu).get_error_message()
        assert QEMU_IMAGE_LOCK in said and str(env.disk) in said
        assert "Lockspace resource" not in said

        # Without them, lockd refuses: b's virtlockd finds the lease held by a's.
        on_b = conn_b.defineXML(env.domain_xml("lockd-b", image_locks=False))
        assert_lease_refused(_refusal(on_b), env.disk)
        # ... before the guest ran on b: QEMU was launched paused and killed again.
        assert on_b.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        assert count_boots(env.console("lockd-b")) == 0
        assert _qemus(env.b) == []
        assert on_a.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    # Host a loses its power: its virtlockd, and with it the lease, are gone.
    power_off_host(env.a)
    with closing(env.b.connect()) as conn_b:
        on_b = conn_b.lookupByName("lockd-b")
        on_b.create()
        _within(BOOT_DEADLINE, lambda: read_counter(env.console("lockd-b")), "b's guest to count")
        assert count_boots(env.console("lockd-b")) == 1

        # Host a is back: now b holds the lease, and a's start of its guest is refused.
        power_on_host(env.a)
        with closing(env.a.connect()) as conn_a:
            on_a = conn_a.lookupByName("lockd-a")
            assert_lease_refused(_refusal(on_a), env.disk)
            assert _qemus(env.a) == []
        assert on_b.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_a_live_migration_hands_the_lease_over(env: Shared) -> None:
    import libvirt

    with closing(env.a.connect()) as conn_a, closing(env.b.connect()) as conn_b:
        dom = conn_a.defineXML(env.domain_xml("lockd-moving"))
        dom.create()
        dom.migrateToURI3(
            env.b.uri,
            {
                libvirt.VIR_MIGRATE_PARAM_URI: env.b.migration_uri,
                libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
            },
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            # (libvirt cannot tell that a directory on this machine is shared storage)
            | libvirt.VIR_MIGRATE_UNSAFE,
        )
        moved = conn_b.lookupByName("lockd-moving")
        assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        _within(BOOT_DEADLINE, lambda: not _qemus(env.a), "QEMU to exit on host a")

        # The lease went with the guest: host a may no longer start a domain on the disk ...
        again = conn_a.defineXML(env.domain_xml("lockd-again", image_locks=False))
        assert_lease_refused(_refusal(again), env.disk)
        # ... until host b lets it go.
        moved.destroy()
        again.create()
        assert again.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def _driver(env: Shared, host: LibvirtHost) -> LibvirtDriver:
    return LibvirtDriver(
        host.uri,
        "qemu",
        env.tmp_path / f"consoles-{host.name}",
        boot_kernel=str(env.guest.kernel),
        boot_initrd=str(env.guest.initrd),
        boot_cmdline=GUEST_CMDLINE,
        jobs_dir=env.tmp_path / f"jobs-{host.name}",
        node=host.name,
    )


def _without_image_locks(env: Shared, host: LibvirtHost, uuid: str) -> None:
    """Redefine Bollard's domain ``uuid`` on ``host`` with the emulator that has QEMU's
    image locks off (its metadata and disks as the driver wrote them)."""
    with closing(host.connect()) as conn:
        root = ET.fromstring(conn.lookupByUUIDString(uuid).XMLDesc(XML_INACTIVE))
        devices = root.find("devices")
        assert devices is not None
        emulator = devices.find("emulator")
        if emulator is None:
            emulator = ET.SubElement(devices, "emulator")
        emulator.text = str(env.no_image_locks)
        conn.defineXML(ET.tostring(root, encoding="unicode"))


def test_the_driver_answers_a_held_lease_with_bollards_lock_refusal(env: Shared) -> None:
    a, b = _driver(env, env.a), _driver(env, env.b)
    spec = VmSpec(
        uuid=UUID, name="lockd", vcpus=1, memory_mb=128, epoch=1,
        disks=[DiskSpec(size_mb=16, device="vda", path=str(env.disk), format="qcow2")],
    )  # fmt: skip
    console_b = env.tmp_path / "consoles-b" / f"{UUID}.log"

    async def go() -> None:
        await a.define(spec)
        assert (await a.start(UUID)).power == PowerState.RUNNING
        # The same VM on host b (as after a wrong takeover), its disk on a still leased.
        await b.define(spec)
        with pytest.raises(DriverInvalidState) as by_qemu:
            await b.start(UUID)
        assert by_qemu.value.code == LOCKED
        assert f"disk {env.disk} is in use by another process (QEMU image lock)" in (
            by_qemu.value.message
        )
        _without_image_locks(env, env.b, UUID)
        with pytest.raises(DriverInvalidState) as by_lockd:
            await b.start(UUID)
        assert by_lockd.value.code == LOCKED
        assert by_lockd.value.message == (
            f"libvirt: start {UUID}: disk {env.disk} is locked by another host (libvirt lock "
            "manager lease): refusing to use it here while that host may"
        )
        assert [v.power for v in await b.list_vms()] == [PowerState.STOPPED]
        assert count_boots(console_b) == 0

        power_off_host(env.a)
        assert (await b.start(UUID)).power == PowerState.RUNNING
        assert await until_counting(console_b) >= 0

    try:
        run(go())
    finally:
        for driver in (a, b):
            run(driver.close())
