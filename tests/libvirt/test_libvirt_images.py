"""A real qcow2 disk between two cells through their image spools: two servers (in-process,
each its own database and spool), each with one agent on a real libvirt host ("a" in the
first cell, "b" in the second: the hosts share nothing). A stopped VM's disk, written with a
pattern, is exported on the first cell, carried by an admin to the second cell's spool, and a
VM is made there from it (vm_spawn, its volume reserved first as a cell's VM import leaves
it): the file on host b is the exported file byte for byte, holds the same guest-visible data
(qemu-img compare), and the VM starts from it.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bollard.agent.config import AgentConfig
from tests.api.test_api_images import carry, reserved_vm
from tests.api.test_api_vms import _wait
from tests.libvirt.bollard_cluster import GUEST_CMDLINE
from tests.support.cluster import AgentThread, ServerThread, wait_until
from tests.support.databases import SchemaTemplates
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    disk_image,
    power_on_host,
    raw_copy,
    remove_bollard_domains,
    same_disk_data,
    write_pattern,
)
from tests.support.libvirt_storage import tool_prefix

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600)]


@dataclass
class LibvirtCell:
    server: ServerThread
    agent: AgentThread
    host: LibvirtHost


def _cell(
    root: Path, db_url: str, host: LibvirtHost, guest: Guest
) -> tuple[ServerThread, AgentThread]:
    server = ServerThread(root / "server", db_url, heartbeat=1.0)
    answer = server.client.post("/nodes", json={"name": host.name})
    assert answer.status_code == 201, answer.text
    token = root / "token"
    token.write_text(answer.json()["token"])
    config = AgentConfig(
        server_url=server.url, node=host.name, token_file=token, state_dir=root / "state",
        driver="libvirt", libvirt_uri=host.uri, libvirt_domain_type="qemu",
        libvirt_console_dir=root / "consoles", libvirt_boot_kernel=guest.kernel,
        libvirt_boot_initrd=guest.initrd, libvirt_boot_cmdline=GUEST_CMDLINE,
        libvirt_tool_prefix=shlex.join(tool_prefix(host)),
    )  # fmt: skip
    agent = AgentThread(server, host.name, root, config=config)
    wait_until(
        lambda: server.client.get(f"/nodes/{host.name}").json()["connected"],
        f"{host.name} to connect",
        timeout=60,
    )
    return server, agent


@pytest.fixture
def cells(
    libvirt_hosts: list[LibvirtHost],
    guest: Guest,
    tmp_path: Path,
    schema_templates: SchemaTemplates,
) -> Iterator[list[LibvirtCell]]:
    made: list[LibvirtCell] = []
    for host in libvirt_hosts:
        power_on_host(host)  # (a test of another suite may have powered it off)
        remove_bollard_domains(host)
    try:
        for i, host in enumerate(libvirt_hosts[:2], start=1):
            root = tmp_path / f"cell{i}"
            (root / "db").mkdir(parents=True)
            server, agent = _cell(root, schema_templates.sqlite(root / "db"), host, guest)
            made.append(LibvirtCell(server, agent, host))
        yield made
    finally:
        for cell in made:
            c = cell.server.client
            for vm in c.get("/vms").json()["items"]:  # (their disks go with them)
                _wait(c, c.delete(f"/vms/{vm['name']}"))
            cell.agent.stop()
            cell.server.stop()
        for host in libvirt_hosts:
            remove_bollard_domains(host)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


def test_a_qcow2_disk_goes_to_a_host_of_another_cell(
    cells: list[LibvirtCell], tmp_path: Path
) -> None:
    first, second = cells
    c, t = first.server.client, second.server.client
    body = {"name": "lv", "vcpus": 1, "memory_mb": 128, "node": first.host.name,
            "disks": [{"size_mb": 16}]}  # fmt: skip
    task = _wait(c, c.post("/vms", json=body))
    assert task["state"] == "succeeded", task
    uuid = c.get("/vms/lv").json()["uuid"]
    source = disk_image(first.host, uuid, "vda")
    write_pattern(source, 0x5A, 2, 3)
    expected = raw_copy(source, tmp_path / "expected.raw")

    task = _wait(c, c.post("/vms/lv/export", json={"image": "lv-1"}))
    assert task["state"] == "succeeded", task
    [disk] = task["result"]["disks"]
    assert (disk["device"], disk["format"], disk["size_mb"]) == ("vda", "qcow2", 16)
    assert disk["sha256"] == _sha256(source)  # the file's bytes, as they are
    assert c.get("/images/lv-1/vda").content == source.read_bytes()

    carry(first.server, second.server, "lv-1")
    uuid2 = reserved_vm(second.server, "lv", second.host.name, [disk])
    task = _wait(t, t.post("/vms/lv/spawn", json={"image": "lv-1", "start": False}))
    assert task["state"] == "succeeded", task
    target = disk_image(second.host, uuid2, "vda")
    assert _sha256(target) == disk["sha256"]
    assert same_disk_data(expected, "raw", target)
    shown = t.get("/volumes", params={"vm": "lv"}).json()["items"]
    assert [(v["state"], v["format"], v["size_mb"]) for v in shown] == [("attached", "qcow2", 16)]
    task = _wait(t, t.post("/vms/lv/start"))
    assert task["state"] == "succeeded", task
    assert t.get("/vms/lv").json()["status"] == "ACTIVE"
    assert same_disk_data(expected, "raw", target)
