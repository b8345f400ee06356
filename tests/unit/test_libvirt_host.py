"""The libvirt driver's pure helpers: power states, boot id, console tail (no libvirt needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bollard.agent.drivers.libvirt.console import tail
from bollard.agent.drivers.libvirt.domains import (
    PAUSED_CRASHED,
    SHUTOFF_CRASHED,
    DomState,
    power_of,
)
from bollard.agent.drivers.libvirt.host import boot_id, domain_types, host_uuid, is_local_uri
from bollard.domain.states import PowerState


@pytest.mark.parametrize(
    ("state", "reason", "power"),
    [
        (DomState.RUNNING, 1, PowerState.RUNNING),
        (DomState.BLOCKED, 0, PowerState.RUNNING),
        (DomState.SHUTDOWN, 1, PowerState.RUNNING),  # being shut down: still runs
        (DomState.NOSTATE, 0, PowerState.RUNNING),  # starting: may run
        (DomState.PAUSED, 1, PowerState.PAUSED),
        (DomState.PAUSED, PAUSED_CRASHED, PowerState.CRASHED),
        (DomState.PMSUSPENDED, 0, PowerState.PAUSED),
        (DomState.SHUTOFF, 1, PowerState.STOPPED),
        (DomState.SHUTOFF, 2, PowerState.STOPPED),  # destroyed
        (DomState.SHUTOFF, SHUTOFF_CRASHED, PowerState.CRASHED),
        (DomState.CRASHED, 0, PowerState.CRASHED),
        (99, 0, PowerState.RUNNING),  # unknown: assume it may run
    ],
)
def test_power_states(state: int, reason: int, power: PowerState) -> None:
    assert power_of(state, reason) == power


def test_boot_id_is_per_boot_and_per_host() -> None:
    a = boot_id("kernel-boot-1", "host-a")
    assert a == boot_id("kernel-boot-1", "host-a")  # stable
    assert a != boot_id("kernel-boot-2", "host-a")  # the machine rebooted
    assert a != boot_id("kernel-boot-1", "host-b")  # another daemon on the same machine
    assert boot_id(None, "host-a") == boot_id(None, "host-a")  # remote: stable


def test_host_uuid() -> None:
    caps = "<capabilities><host><uuid> 4c4c4544-0000-1000-8000-000000000001 </uuid></host>"
    assert host_uuid(caps + "</capabilities>") == "4c4c4544-0000-1000-8000-000000000001"
    assert host_uuid("<capabilities><host/></capabilities>") is None
    assert host_uuid("garbage <") is None


def test_domain_types() -> None:
    caps = """<capabilities><host/>
      <guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>
        <domain type='kvm'/></arch></guest>
      <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
    </capabilities>"""
    assert domain_types(caps) == {"qemu", "kvm"}
    assert domain_types("<capabilities/>") == set()
    assert domain_types("<") == set()


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///system?socket=/tmp/d/sock/libvirt-sock", True),
        ("qemu+tcp://127.0.0.1:16509/system", True),
        ("qemu+ssh://localhost/system", True),
        ("qemu+tcp://[::1]:16509/system", True),
        ("test:///default", True),
        ("qemu+ssh://root@hv7.example.com/system", False),
    ],
)
def test_local_uris(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local


def test_console_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert tail(log, 10) == ""  # not written yet
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(1, 1001)))
    assert tail(log, 2) == "line 999\r\nline 1000\r\n"
    assert tail(log, 0) == ""
    assert tail(log, 5000).count("\n") == 1000
    log.write_bytes(b"a\nb\nno newline at the end")
    assert tail(log, 2) == "b\nno newline at the end"


def test_console_tail_replaces_undecodable_bytes(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"ok\n\xff\xfe binary \x1b[0m\n" + "é".encode()[:1])
    assert tail(log, 2) == "\ufffd\ufffd binary \x1b[0m\n\ufffd"


def test_console_tail_reads_a_bounded_amount(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"x" * 300_000 + b"\nlast\n")
    text = tail(log, 10, max_bytes=100_000)
    assert text.endswith("\nlast\n")
    assert len(text) <= 100_000
