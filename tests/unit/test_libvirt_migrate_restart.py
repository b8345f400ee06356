"""A libvirt migration outlives the agent process that started it, on real libvirt hosts
(tests/support/libvirt_env.py; skipped, with the reason, where they cannot run).

An agent process starts a live migration and is killed (SIGKILL) while libvirt transfers
the VM. libvirt goes on with it (a peer-to-peer migration does not need its client); a new
driver on the same jobs directory, as the restarted agent has, answers from libvirt's real
state: the migration is RUNNING, then COMPLETED with the VM on the target and its new
epoch; or the cancel hook aborts it and the VM stays on the source as it was.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import JobInfo, JobStatus, VmSpec
from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.domain.states import PowerState
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    power_on_host,
    remove_bollard_domains,
)

pytestmark = pytest.mark.libvirt

T = TypeVar("T")

UUID = "11111111-1111-4111-8111-111111111111"

# The agent process: start the migration, say so, and wait to be killed.
AGENT = """
import asyncio, json, sys
from bollard.agent.drivers.libvirt import LibvirtDriver

uri, consoles, jobs, bandwidth, target, endpoint, uuid = sys.argv[1:]
d = LibvirtDriver(uri, "qemu", consoles, jobs_dir=jobs, node="a",
                  migration_bandwidth_mib=int(bandwidth))

async def main():
    job = await d.migrate("m1", uuid, target, live=True, new_epoch=4,
                          target_endpoint=json.loads(endpoint))
    print(job.model_dump_json(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def hosts(libvirt_hosts: list[LibvirtHost]) -> Iterator[tuple[LibvirtHost, LibvirtHost]]:
    def reset() -> None:
        for h in libvirt_hosts[:2]:
            power_on_host(h)
            remove_bollard_domains(h)

    reset()
    yield libvirt_hosts[0], libvirt_hosts[1]
    reset()


def driver(host: LibvirtHost, guest: Guest, tmp_path: Path) -> LibvirtDriver:
    return LibvirtDriver(
        host.uri,
        "qemu",
        tmp_path / "consoles",
        boot_kernel=str(guest.kernel),
        boot_initrd=str(guest.initrd),
        boot_cmdline="console=ttyS0 quiet panic=-1",
        migration_uri=host.uri,
        migration_address="127.0.0.1",
        jobs_dir=tmp_path / f"jobs-{host.name}",
        node=host.name,
    )


def start_and_kill_agent(
    a: LibvirtHost, b: LibvirtHost, guest: Guest, tmp_path: Path, bandwidth: int
) -> JobInfo:
    """Run a VM on `a`; an agent process starts migrating it to `b` and dies; its job as
    that agent last saw it."""
    source = driver(a, guest, tmp_path)
    run(source.define(VmSpec(uuid=UUID, name="web-1", vcpus=1, memory_mb=128, epoch=3)))
    run(source.start(UUID))
    endpoint = json.dumps(driver(b, guest, tmp_path).migration_endpoint())
    args = [a.uri, str(tmp_path / "consoles"), str(tmp_path / "jobs-a"), str(bandwidth), "b"]
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, *args, endpoint, UUID],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
    assert line, "the agent process did not start the migration"
    return JobInfo.model_validate_json(line)


def test_a_migration_goes_on_without_its_agent_and_completes(
    hosts: tuple[LibvirtHost, LibvirtHost], guest: Guest, tmp_path: Path
) -> None:
    a, b = hosts
    started = start_and_kill_agent(a, b, guest, tmp_path, bandwidth=16)  # ~9 s
    assert started.status == JobStatus.RUNNING
    restarted = driver(a, guest, tmp_path)  # the restarted agent's
    peer = driver(b, guest, tmp_path)

    async def go() -> JobInfo:
        job = await restarted.job("m1")
        assert job is not None and job.status == JobStatus.RUNNING
        assert await restarted.vm_busy(UUID) and await peer.vm_busy(UUID)
        while job.status == JobStatus.RUNNING:
            await asyncio.sleep(0.2)
            latest = await restarted.job("m1")
            assert latest is not None and latest.progress >= job.progress
            job = latest
        return job

    done = run(go())
    assert done.status == JobStatus.COMPLETED, done
    assert (done.result["vm"]["epoch"], done.result["vm"]["power"]) == (4, "running")
    assert run(restarted.list_vms()) == []
    (vm,) = run(peer.list_vms())
    assert (vm.uuid, vm.power, vm.epoch) == (UUID, PowerState.RUNNING, 4)
    assert not run(restarted.vm_busy(UUID)) and not run(peer.vm_busy(UUID))


def test_the_cancel_hook_of_a_restarted_agent_aborts_the_migration(
    hosts: tuple[LibvirtHost, LibvirtHost], guest: Guest, tmp_path: Path
) -> None:
    a, b = hosts
    start_and_kill_agent(a, b, guest, tmp_path, bandwidth=1)  # minutes
    restarted = driver(a, guest, tmp_path)
    peer = driver(b, guest, tmp_path)
    assert run(restarted.abort_jobs("cancel hook: agent restarted")) == ["m1"]
    job = run(restarted.job("m1"))
    assert job is not None and job.status == JobStatus.ABORTED
    assert job.message == "cancel hook: agent restarted"
    assert job.result["migration"]["vm_on"] == "a"
    (vm,) = run(restarted.list_vms())
    assert (vm.uuid, vm.power, vm.epoch) == (UUID, PowerState.RUNNING, 3)
    assert run(peer.list_vms()) == []
    assert not run(restarted.vm_busy(UUID))
