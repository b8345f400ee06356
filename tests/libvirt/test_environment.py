"""The libvirt test environment itself, with raw libvirt-python: two libvirt hosts on this
machine, the tiny guest boots on them under TCG, counts on its serial console, powers off on
an ACPI shutdown, live-migrates from one host to the other without rebooting, and stopping a
host leaves no process behind."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulators import wait_for
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    count_boots,
    define_and_start_guest,
    guest_domain_xml,
    read_counter,
    start_libvirt_hosts,
)

pytestmark = pytest.mark.libvirt

BOOT_DEADLINE = 60.0  # boot to the first counter line takes ~3 s under TCG
STATE_DEADLINE = 30.0


def _within(seconds: float, predicate: Callable[[], object], what: str) -> None:
    wait_for(predicate, what, time.monotonic() + seconds)


def _counter_passes(console_log: Path, value: int) -> Callable[[], bool]:
    return lambda: (read_counter(console_log) or 0) > value


def _qemu_pids(host: LibvirtHost) -> list[int]:
    return [pid for pid, name in host.processes() if name.startswith("qemu")]


def _host_uuid(conn: Any) -> str | None:
    return ET.fromstring(conn.getCapabilities()).findtext("host/uuid")


def test_hosts_are_separate_and_answer_on_tcp_and_unix_sockets(
    clean_hosts: list[LibvirtHost], guest: Guest, tmp_path: Path
) -> None:
    import libvirt

    a, b = clean_hosts
    for host in (a, b):
        with closing(libvirt.open(host.uri)) as tcp, closing(libvirt.open(host.unix_uri)) as unix:
            assert tcp.getType() == unix.getType() == "QEMU"
            assert _host_uuid(tcp) == _host_uuid(unix) == host.host_uuid
    assert a.host_uuid != b.host_uuid
    assert a.migration_ports != b.migration_ports

    with closing(a.connect()) as conn_a, closing(b.connect()) as conn_b:
        conn_a.defineXML(guest_domain_xml("only-on-a", guest, tmp_path / "console.log"))
        assert conn_a.listDefinedDomains() == ["only-on-a"]
        assert conn_b.listDefinedDomains() == []
    # Each daemon keeps its configuration in its own directory, not in the machine's.
    assert (a.dir / "etc" / "qemu" / "only-on-a.xml").exists()
    assert not Path("/etc/libvirt/qemu/only-on-a.xml").exists()


def test_guest_counts_and_powers_off_on_acpi_shutdown(
    clean_hosts: list[LibvirtHost], guest: Guest, console_log: Path
) -> None:
    import libvirt

    a = clean_hosts[0]
    with closing(a.connect()) as conn:
        dom = define_and_start_guest(conn, "smoke-acpi", guest, console_log)
        _within(BOOT_DEADLINE, _counter_passes(console_log, 1), "the guest's counter to reach 2")
        seen = read_counter(console_log) or 0
        _within(10, _counter_passes(console_log, seen), "the guest's counter to advance")
        assert len(_qemu_pids(a)) == 1

        dom.shutdown()  # ACPI power button: the guest's acpid runs poweroff -f
        _within(
            STATE_DEADLINE,
            lambda: dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF,
            "the guest to shut off after an ACPI shutdown",
        )
        assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN]
        _within(10, lambda: not _qemu_pids(a), "QEMU to exit")

        dom.create()  # and it starts again, from the beginning
        _within(BOOT_DEADLINE, lambda: count_boots(console_log) == 2, "the guest to boot again")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_live_migration_keeps_the_guest_running(
    clean_hosts: list[LibvirtHost], guest: Guest, console_log: Path
) -> None:
    import libvirt

    a, b = clean_hosts
    with closing(a.connect()) as conn_a, closing(b.connect()) as conn_b:
        dom = define_and_start_guest(conn_a, "smoke-migrate", guest, console_log)
        _within(BOOT_DEADLINE, _counter_passes(console_log, 1), "the guest's counter to reach 2")
        before = read_counter(console_log) or 0

        dom.migrateToURI3(
            b.uri,
            {
                libvirt.VIR_MIGRATE_PARAM_URI: b.migration_uri,
                libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
            },
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
        )

        with pytest.raises(libvirt.libvirtError) as gone:
            conn_a.lookupByName("smoke-migrate")
        assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        assert conn_a.listAllDomains() == []
        moved = conn_b.lookupByName("smoke-migrate")
        assert moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert moved.isPersistent()
        # The same guest kept counting on host b: no reboot, the counter went on.
        _within(10, _counter_passes(console_log, before), "the counter to advance on host b")
        assert count_boots(console_log) == 1
        _within(10, lambda: not _qemu_pids(a), "QEMU to exit on host a")
        assert len(_qemu_pids(b)) == 1

        moved.destroy()
        assert moved.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        _within(10, lambda: not _qemu_pids(b), "QEMU to exit on host b")


def test_stopping_a_host_leaves_no_process_behind(
    libvirt_available: None, guest: Guest, tmp_path: Path
) -> None:
    console_log = tmp_path / "console.log"
    with (
        start_libvirt_hosts(tmp_path / "hosts", count=1) as (host,),
        closing(host.connect()) as conn,
    ):
        define_and_start_guest(conn, "left-running", guest, console_log)
        _within(BOOT_DEADLINE, _counter_passes(console_log, 0), "the guest to count")
        names = sorted(name for _, name in host.processes())
        assert names == ["libvirtd", "qemu-system-x86", "sh", "virtlockd"]
    # The context manager stopped the host with the guest still running.
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    leftovers = [line for line in ps.stdout.splitlines() if str(tmp_path) in line]
    assert leftovers == []
    assert host.processes() == []
