"""The libvirt driver's NICs on real daemons: a VM on a host bridge (both "hosts" of this
machine share its network namespace, so one bridge is on both) keeps its MAC through a
live migration, and the guest keeps running."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from bollard.agent.drivers.base import NicSpec, VmSpec
from bollard.agent.drivers.libvirt.xml import parse_domain
from bollard.domain.states import PowerState
from tests.libvirt.driver_pair import Hosts, migrated, run_closing, until_counting
from tests.support.libvirt_env import Guest, LibvirtHost, remove_bollard_domains

UUID = "44444444-4444-4444-8444-444444444444"
MAC = "52:54:00:4b:4c:4d"


@pytest.fixture
def hosts(libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> Iterator[Hosts]:
    for host in libvirt_hosts:
        remove_bollard_domains(host)
    yield Hosts(libvirt_hosts, guest, tmp_path)
    for host in libvirt_hosts:
        remove_bollard_domains(host)


def _nics_on(host: LibvirtHost) -> list[tuple[str | None, str | None]]:
    with closing(host.connect()) as conn:
        facts = parse_domain(conn.lookupByUUIDString(UUID).XMLDesc(0))  # the live XML
    return [(n.mac, n.bridge) for n in facts.nics]


def test_a_vm_on_a_bridge_keeps_its_mac_through_a_live_migration(hosts: Hosts, bridge: str) -> None:
    a, b = hosts.driver(hosts.a), hosts.driver(hosts.b)
    spec = VmSpec(
        uuid=UUID, name="wired", vcpus=1, memory_mb=128, epoch=1,
        nics=[NicSpec(bridge=bridge, mac=MAC)],
    )  # fmt: skip

    async def go() -> None:
        await a.define(spec)
        await a.start(UUID)  # QEMU gets a tap device on the bridge
        assert _nics_on(hosts.a) == [(MAC, bridge)]
        counted = await until_counting(hosts.console(UUID))
        await migrated(hosts, a, b, "nic-move", UUID, live=True)
        assert [vm.power for vm in await b.list_vms()] == [PowerState.RUNNING]
        assert _nics_on(hosts.b) == [(MAC, bridge)]
        assert await until_counting(hosts.console(UUID), counted) > counted

    run_closing(go(), a, b)
