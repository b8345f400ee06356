"""The storage contract suite's harness for the libvirt driver (tests/contract/
test_storage_contract.py): two real libvirt hosts (tests/support/libvirt_env.py, the
session's daemons "a" and "b") with the tiny guest.

What a path means to each party: every daemon runs in a mount namespace of its own, where
its own directory (``<host dir>/lib``) is mounted over /var/lib/libvirt; every other path is
the machine's, the same for both daemons and for the test process.

- The local pool is at ``/var/lib/libvirt/bollard-test/<id>/local``: the same path on both
  hosts, a different directory for each (``<host dir>/lib/bollard-test/<id>/local`` as the
  test process sees it), as a local pool is on real hosts.
- The shared pool is at ``<tmp_path>/shared``: one directory both daemons see.
- The agent (the test process) does not see the daemons' /var/lib/libvirt: each driver
  runs its tools (qemu-img) in its daemon's mount namespace (``tool_prefix``: nsenter),
  and ``write`` maps a local pool's path to the host's directory itself.

Each test gets pools of its own (names and directories made from a random id); their libvirt
definitions and directories, and the VMs the test defined, are removed afterwards.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.libvirt import LibvirtDriver
from bollard.agent.drivers.storage import PoolRef
from tests.support.libvirt_env import (
    LIBVIRT_DIRS,
    Guest,
    LibvirtHost,
    power_on_host,
    remove_bollard_domains,
)
from tests.support.storage_harness import StorageHarness

LOCAL_ROOT = Path(LIBVIRT_DIRS["lib"]) / "bollard-test"
SLOW_MIB_PER_S = 1.0  # the slow driver's copies: 64 s for the suite's 64 MiB volume
TIMEOUT = 120.0  # one test's driver calls (a running guest's hot-unplug waits for its boot)


def daemon_pid(host: LibvirtHost) -> int:
    """A process in the daemon's mount namespace (libvirtd itself)."""
    found = [pid for pid, name in host.processes() if name == "libvirtd"]
    if not found:
        raise RuntimeError(f"libvirtd of host {host.name} does not run")
    return found[0]


def tool_prefix(host: LibvirtHost) -> list[str]:
    """Runs a command in the daemon's mount namespace (where its pools' paths are)."""
    return ["nsenter", f"--mount=/proc/{daemon_pid(host)}/ns/mnt", "--"]


def seen_here(host: LibvirtHost, pool: PoolRef, file: str) -> Path:
    """Where the test process finds ``file`` of ``pool`` on ``host``."""
    path = Path(pool.path) / file
    lib = Path(LIBVIRT_DIRS["lib"])
    if path.is_relative_to(lib):
        return host.dir / "lib" / path.relative_to(lib)
    return path


def write_into(image: Path, data: bytes) -> None:
    """Write ``data`` at the start of the image's guest-visible content (qemu-io; the
    image must not be open in a running VM)."""
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(image)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    fmt = json.loads(info.stdout)["format"]
    source = image.parent / f".write-{uuid.uuid4().hex}"
    source.write_bytes(data)
    try:
        subprocess.run(
            ["qemu-io", "-f", fmt, "-c", f"write -s {source} 0 {len(data)}", str(image)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    finally:
        source.unlink(missing_ok=True)


def drop_pools(host: LibvirtHost, names: list[str]) -> None:
    """Remove the daemon's definitions of these pools (their files stay)."""
    libvirt: Any = importlib.import_module("libvirt")
    with closing(host.connect()) as conn:
        for name in names:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                continue
            if pool.isActive():
                pool.destroy()
            pool.undefine()


def libvirt_storage_harness(request: pytest.FixtureRequest, tmp_path: Path) -> StorageHarness:
    guest: Guest = request.getfixturevalue("guest")
    hosts: list[LibvirtHost] = request.getfixturevalue("libvirt_hosts")
    host, peer = hosts[0], hosts[1]
    by_name = {h.name: h for h in hosts}
    test_id = uuid.uuid4().hex[:10]
    local = PoolRef(name=f"t{test_id}-local", type="local", path=f"{LOCAL_ROOT}/{test_id}/local")
    shared_dir = tmp_path / "shared"
    shared_dir.mkdir()
    shared = PoolRef(name=f"t{test_id}-shared", type="shared", path=str(shared_dir))

    for h in (host, peer):
        power_on_host(h)  # (a test of another suite may have powered it off)
        remove_bollard_domains(h)

    drivers: list[LibvirtDriver] = []

    def clean_up() -> None:
        for d in drivers:
            asyncio.run(d.close())
        for h in (host, peer):
            remove_bollard_domains(h)
            drop_pools(h, ["bollard-" + local.name, "bollard-" + shared.name])
            shutil.rmtree(h.dir / "lib" / "bollard-test" / test_id, ignore_errors=True)

    request.addfinalizer(clean_up)

    def driver_on(h: LibvirtHost, **kw: Any) -> LibvirtDriver:
        d = LibvirtDriver(
            h.uri,
            "qemu",
            tmp_path / "consoles",
            boot_kernel=str(guest.kernel),
            boot_initrd=str(guest.initrd),
            boot_cmdline="console=ttyS0 quiet panic=-1",
            migration_uri=h.uri,
            migration_address="127.0.0.1",
            jobs_dir=tmp_path / f"jobs-{h.name}",
            node=h.name,
            tool_prefix=tool_prefix(h),
            **kw,
        )
        drivers.append(d)
        return d

    def write(node: str, pool: PoolRef, file: str, data: bytes) -> None:
        write_into(seen_here(by_name[node], pool, file), data)

    return StorageHarness(
        driver=driver_on(host),
        node=host.name,
        peer=driver_on(peer),
        peer_node=peer.name,
        local_pool=local,
        shared_pool=shared,
        write=write,
        timeout=TIMEOUT,
        slow_driver=driver_on(host, copy_bandwidth_mib=SLOW_MIB_PER_S),
        slow_size_mb=64,
    )
