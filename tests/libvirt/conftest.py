"""Fixtures for tests against real libvirt daemons and QEMU guests (tests/support/libvirt_env.py;
the `guest` and `libvirt_hosts` session fixtures are in tests/conftest.py, shared with the
hypervisor contract suite).

Every test in this directory is skipped, with the reason printed (``pytest -rs``), when the
machine does not allow them: not root, no namespaces, or libvirt/QEMU neither installed nor
installable (``scripts/libvirt/install.sh`` runs first, unless ``BOLLARD_TEST_NO_INSTALL=1``).
"""

from __future__ import annotations

import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.support.libvirt_env import LibvirtHost, libvirt_unavailable_reason


@pytest.fixture(scope="session", autouse=True)
def libvirt_available() -> None:
    reason = libvirt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _remove_all_domains(conn: Any) -> None:
    import libvirt

    for dom in conn.listAllDomains():
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise


@pytest.fixture
def clean_hosts(libvirt_hosts: list[LibvirtHost]) -> Iterator[list[LibvirtHost]]:
    """The session's hosts, with every domain destroyed and undefined after the test."""
    yield libvirt_hosts
    for host in libvirt_hosts:
        with closing(host.connect()) as conn:
            _remove_all_domains(conn)


@pytest.fixture
def console_log(tmp_path: Path) -> Path:
    return tmp_path / "console.log"


@pytest.fixture
def bridge() -> Iterator[str]:
    """A host bridge of its own (removed afterwards); skipped where one cannot be made."""
    name = "brb" + uuidlib.uuid4().hex[:8]
    made = subprocess.run(
        ["ip", "link", "add", name, "type", "bridge"], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a bridge here: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
