"""Two libvirt drivers on the test daemons, as two agents' would be, and waits on them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.agent.drivers.libvirt import LibvirtDriver
from tests.support.libvirt_env import Guest, LibvirtHost, read_counter

T = TypeVar("T")

TIMEOUT = 90.0


def run(coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def run_closing(coro: Coroutine[Any, Any, None], *drivers: LibvirtDriver) -> None:
    """Run the test's body, then close its drivers (whatever became of it)."""
    try:
        run(coro)
    finally:
        for driver in drivers:
            run(driver.close())


class Hosts:
    def __init__(self, hosts: list[LibvirtHost], guest: Guest, tmp_path: Path) -> None:
        self.a, self.b = hosts[0], hosts[1]
        self.console_dir = tmp_path / "consoles"
        self.guest, self.tmp_path = guest, tmp_path

    def driver(self, host: LibvirtHost, **kw: Any) -> LibvirtDriver:
        return LibvirtDriver(
            host.uri,
            "qemu",
            self.console_dir,
            boot_kernel=str(self.guest.kernel),
            boot_initrd=str(self.guest.initrd),
            boot_cmdline="console=ttyS0 quiet panic=-1",
            migration_uri=host.uri,
            migration_address="127.0.0.1",
            jobs_dir=self.tmp_path / f"jobs-{host.name}",
            node=host.name,
            **kw,
        )

    def console(self, uuid: str) -> Path:
        return self.console_dir / f"{uuid}.log"


async def until_ended(driver: LibvirtDriver, job: JobInfo) -> JobInfo:
    while job.status == JobStatus.RUNNING:
        await asyncio.sleep(0.1)
        latest = await driver.job(job.command_id)
        assert latest is not None
        job = latest
    return job


async def migrated(
    hosts: Hosts, a: LibvirtDriver, b: LibvirtDriver, command_id: str, uuid: str, *, live: bool
) -> JobInfo:
    """Migrate `uuid` from `a` (on hosts.a) to `b` (on hosts.b) as epoch 2, wait for the job
    to end, and check that it completed."""
    job = await a.migrate(
        command_id, uuid, hosts.b.name, live=live, new_epoch=2,
        target_endpoint=b.migration_endpoint(),
    )  # fmt: skip
    done = await until_ended(a, job)
    assert done.status == JobStatus.COMPLETED, done
    return done


async def until_counting(console: Path, past: int = -1) -> int:
    """The guest's counter once it printed one above ``past``."""
    while (n := read_counter(console)) is None or n <= past:
        await asyncio.sleep(0.2)
    return n
