"""Resize on real libvirt hosts and QEMU guests (TCG): a server process and one
`bollard agent --driver libvirt` per host (tests/libvirt/bollard_cluster.py), driven through
the REST API.

A VM of flavor `small` (its root disk vda made from the flavor, in the host's local pool) is
resized to `large`: the guest is shut down, its disk copied to the other host and grown
there, and the domain defined there at the new size. The data is written into the root
disk's file before the guest has it open (qemu-io) and, while it runs, through the guest's
own disk device (QEMU's monitor), and compared as the guest sees it (qemu-img compare: the
data, and zeros beyond the old size) wherever the disk went. Until the resize is confirmed
or reverted, the source keeps its stopped domain and its old file.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.drivers.libvirt.xml import parse_domain
from tests.e2e.conftest import wait_until
from tests.libvirt.bollard_cluster import libvirt_cluster
from tests.libvirt.test_libvirt_storage_e2e import Storage, _guest_writes, _write_raw
from tests.support.libvirt_env import (
    Guest,
    LibvirtHost,
    raw_copy,
    remove_bollard_domains,
    same_disk_data,
    write_pattern,
)

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600)]

HEARTBEAT = 2.0
MIB = 1024 * 1024
SMALL: dict[str, Any] = {"name": "small", "vcpus": 1, "memory_mb": 128, "disk_mb": 16}
LARGE: dict[str, Any] = {"name": "large", "vcpus": 2, "memory_mb": 192, "disk_mb": 32}


class Resizes(Storage):
    """The cluster (with the flavors), and what a resize test looks at on the hosts. It
    remembers the VMs it made and every volume file it saw, so that `differences` is about
    them only (the session's hosts are shared with other tests, which may leave files)."""

    mine: set[str]  # VM uuids and volume files of this test

    def new_vm(self, name: str, node: str, *, start: bool) -> dict[str, Any]:
        body = {"name": name, "flavor": "small", "node": node, "start": start}
        self.done(self.c.api.post("/vms", json=body))
        vm = self.c.vm(name)
        self.mine = getattr(self, "mine", set()) | {vm["uuid"]}
        return vm

    def root(self, vm: str) -> dict[str, Any]:
        """The volume of the VM's root disk (vda)."""
        disks = {d["device"]: d["volume"] for d in self.c.vm(vm)["disks"]}
        volume = self.volume(disks["vda"])
        self.mine = getattr(self, "mine", set()) | {volume["file"]}
        return volume

    def resize(self, vm: str, path: str = "", body: dict[str, Any] | None = None) -> None:
        self.done(self.c.api.post(f"/vms/{vm}/resize{path}", json=body))

    def domain(self, node: str, uuid: str) -> tuple[bool, int, int, str] | None:
        """(running, vCPUs, memory MiB, vda's file in its definition) of the VM's domain on
        `node`; None if it has none."""
        import libvirt

        with closing(self.host(node).connect()) as conn:
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            _, max_kib, _, vcpus, _ = dom.info()
            vda = next(d.path for d in parse_domain(dom.XMLDesc(XML_INACTIVE)).disks
                       if d.target == "vda")  # fmt: skip
            return bool(dom.isActive()), int(vcpus), int(max_kib) // 1024, vda

    def differences(self) -> list[Any]:
        """What the state reconciler finds now between the records and the hosts about this
        test's VMs and volume files (those of every pool)."""
        answer = self.c.api.get("/reconcile")
        assert answer.status_code == 200, answer.text
        mine = getattr(self, "mine", set())
        return [
            d for d in answer.json()["differences"]
            if d["uuid"] in mine or d.get("file") in mine
            or any(d.get("file", "") and str(d.get("file", "")).startswith(u) for u in mine)
        ]  # fmt: skip

    def keeps_running(self, node: str, uuid: str) -> None:
        """Wait until the guest on `node` has used more CPU time than it had."""
        with closing(self.host(node).connect()) as conn:
            dom = conn.lookupByUUIDString(uuid)
            before = int(dom.info()[4])
            wait_until(f"{uuid} to run on {node}", lambda: int(dom.info()[4]) > before)


def virtual_mb(image: Path) -> int:
    """The virtual size of a qcow2 image in MiB (read without its lock: QEMU may hold it)."""
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(image)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return int(json.loads(done.stdout)["virtual-size"]) // MIB


@pytest.fixture(scope="module")
def resizes(
    libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Resizes]:
    for host in libvirt_hosts:
        remove_bollard_domains(host)
    root = tmp_path_factory.mktemp("bollard-libvirt-resize")
    with libvirt_cluster(root, libvirt_hosts, guest, heartbeat=HEARTBEAT) as c:
        try:
            for body in (SMALL, LARGE):
                answer = c.api.post("/flavors", json=body)
                assert answer.status_code == 201, answer.text
            yield Resizes(c, shared_dir=root / "no-shared-pool")  # (local pools only)
        except BaseException:
            print(c.logs())
            raise
    for host in libvirt_hosts:
        remove_bollard_domains(host)


def test_a_running_vm_resized_to_another_host_grows_keeps_its_data_reverts_and_confirms(
    resizes: Resizes, tmp_path: Path
) -> None:
    s, c = resizes, resizes.c
    vm = s.new_vm("grow", "a", start=False)
    uuid = vm["uuid"]
    assert (vm["vcpus"], vm["memory_mb"], vm["flavor"]["name"]) == (1, 128, "small")
    original = s.root("grow")
    assert (original["pool"], original["node"], original["size_mb"]) == ("local", "a", 16)
    old_file = s.seen_here(original)
    write_pattern(old_file, 0x5A, 1, 4)  # before the guest has it open
    expected = raw_copy(old_file, tmp_path / "expected.raw")
    s.done(c.api.post("/vms/grow/start"))
    s.counting("grow", above=1)
    # The guest writes while it runs, without a flush: the shutdown before the copy keeps it.
    _guest_writes(s.host("a"), uuid, "vda", "write -P 0x77 9M 1M")
    _write_raw(expected, "write -P 0x77 9M 1M")

    s.resize("grow", body={"flavor": "large", "to": "b"})
    r = c.vm("grow")
    assert (r["status"], r["node"], r["vcpus"], r["memory_mb"]) == ("VERIFY_RESIZE", "b", 2, 192)
    assert r["resize"]["source"] == "a" and r["resize"]["old_flavor"]["name"] == "small"
    copy = s.root("grow")
    assert (copy["pool"], copy["node"], copy["size_mb"]) == ("local", "b", 32)
    assert copy["id"] != original["id"]
    new_file = s.seen_here(copy)
    # The destination runs it at the new size from a grown copy with every byte.
    assert s.domain("b", uuid) == (True, 2, 192, s.path(copy))
    assert virtual_mb(new_file) == 32
    assert same_disk_data(expected, "raw", new_file)
    # The source keeps its stopped domain at the old size, and its old file as it was.
    assert s.domain("a", uuid) == (False, 1, 128, s.path(original))
    assert virtual_mb(old_file) == 16
    assert same_disk_data(expected, "raw", old_file)
    assert s.volume(original["name"])["state"] == "reserved"
    holds = c.node("a")["allocations"]
    assert {"consumer": "migration", "vm": "grow", "migration_id": r["resize"]["migration_id"],
            "vcpus": 1, "memory_mb": 128} in holds  # fmt: skip
    booted = s.counting("grow")
    # What the guest writes at the new size is the destination's: a revert drops it.
    _guest_writes(s.host("b"), uuid, "vda", "write -P 0x33 20M 1M")
    s.counting("grow", above=booted)

    # Both hosts' VMs and files are as the records say: nothing for the reconciler to do, and
    # the source's copy was left alone meanwhile.
    assert s.differences() == []
    assert s.domain("a", uuid) == (False, 1, 128, s.path(original))

    s.resize("grow", "/revert")
    r = c.vm("grow")
    assert (r["status"], r["node"], r["vcpus"], r["memory_mb"]) == ("ACTIVE", "a", 1, 128)
    assert r["resize"] is None and r["flavor"]["name"] == "small"
    assert s.root("grow")["id"] == original["id"]
    assert s.domain("a", uuid) == (True, 1, 128, s.path(original))
    assert s.domain("b", uuid) is None
    assert not new_file.exists()
    assert copy["name"] not in {v["name"] for v in c.api.get("/volumes").json()["items"]}
    assert virtual_mb(old_file) == 16
    assert same_disk_data(expected, "raw", old_file)
    s.counting("grow")
    assert not any(h["consumer"] == "migration" for h in c.node("a")["allocations"])

    # Again, and confirmed: the source's domain and old file go; it runs on at the new size.
    s.resize("grow", body={"flavor": "large", "to": "b"})
    copy = s.root("grow")
    new_file = s.seen_here(copy)
    s.counting("grow")
    _guest_writes(s.host("b"), uuid, "vda", "write -P 0x44 24M 2M")
    # and flushes it, as its fsync would: the file is read below while QEMU runs, and QEMU
    # keeps the new clusters' qcow2 metadata in its cache until a flush.
    _guest_writes(s.host("b"), uuid, "vda", "flush")
    os.truncate(expected, LARGE["disk_mb"] * MIB)  # (zeros beyond the old size)
    _write_raw(expected, "write -P 0x44 24M 2M")
    s.resize("grow", "/confirm")
    r = c.vm("grow")
    assert (r["status"], r["node"], r["vcpus"], r["memory_mb"]) == ("ACTIVE", "b", 2, 192)
    assert r["resize"] is None and r["flavor"]["name"] == "large"
    assert s.domain("a", uuid) is None
    assert not old_file.exists()
    assert original["name"] not in {v["name"] for v in c.api.get("/volumes").json()["items"]}
    assert s.domain("b", uuid) == (True, 2, 192, s.path(copy))
    assert virtual_mb(new_file) == 32
    assert same_disk_data(expected, "raw", new_file)
    # (Not by its console: both test hosts share one console directory, and dropping the
    # source's domain removed the log file that the destination's QEMU writes.)
    s.keeps_running("b", uuid)
    records = c.api.get("/migrations", params={"vm": "grow"}).json()["items"]
    assert [(m["type"], m["status"], m["source"], m["dest"]) for m in records] == [
        ("resize", "confirmed", "a", "b"), ("resize", "reverted", "a", "b"),
    ]  # fmt: skip
    assert s.differences() == []
    s.delete(vms=("grow",))
    assert not new_file.exists()


def test_a_stopped_vm_resized_on_its_own_host_swaps_its_disk_and_reverts(
    resizes: Resizes, tmp_path: Path
) -> None:
    """With resize.allow_same_node: the stopped domain is redefined at the new size and its
    root disk swapped for the grown copy (VOLUME_DETACH, VOLUME_ATTACH); a revert swaps it
    back and the copy goes."""
    s, c = resizes, resizes.c
    # The host holds both sizes until the resize ends (1 + 2 vCPUs; these hosts have 2).
    allow: dict[str, Any] = {"resize.allow_same_node": True, "scheduler.vcpu_allocation_ratio": 2}
    for key, value in allow.items():
        allowed = c.api.put(f"/settings/{key}", json={"value": value})
        assert allowed.status_code == 200, allowed.text
    try:
        vm = s.new_vm("inplace", "a", start=False)
        uuid = vm["uuid"]
        original = s.root("inplace")
        old_file = s.seen_here(original)
        write_pattern(old_file, 0x3C, 2, 5)
        expected = raw_copy(old_file, tmp_path / "expected.raw")
        assert s.domain("a", uuid) == (False, 1, 128, s.path(original))

        s.resize("inplace", body={"flavor": "large", "to": "a"})
        r = c.vm("inplace")
        assert (r["status"], r["node"], r["epoch"]) == ("VERIFY_RESIZE", "a", vm["epoch"])
        assert (r["vcpus"], r["memory_mb"], r["resize"]["source"]) == (2, 192, "a")
        copy = s.root("inplace")
        assert (copy["pool"], copy["node"], copy["size_mb"]) == ("local", "a", 32)
        new_file = s.seen_here(copy)
        assert copy["id"] != original["id"] and new_file != old_file
        assert s.domain("a", uuid) == (False, 2, 192, s.path(copy))
        assert s.domain("b", uuid) is None
        assert virtual_mb(new_file) == 32 and virtual_mb(old_file) == 16
        assert same_disk_data(expected, "raw", new_file)
        assert same_disk_data(expected, "raw", old_file)

        assert s.differences() == []

        s.resize("inplace", "/revert")
        r = c.vm("inplace")
        assert (r["status"], r["node"], r["vcpus"], r["memory_mb"]) == ("SHUTOFF", "a", 1, 128)
        assert r["resize"] is None and r["flavor"]["name"] == "small"
        assert s.root("inplace")["id"] == original["id"]
        assert s.domain("a", uuid) == (False, 1, 128, s.path(original))
        assert not new_file.exists()
        assert virtual_mb(old_file) == 16
        assert same_disk_data(expected, "raw", old_file)
        records = c.api.get("/migrations", params={"vm": "inplace"}).json()["items"]
        assert [(m["status"], m["source"], m["dest"]) for m in records] == [("reverted", "a", "a")]
        assert s.differences() == []
        s.delete(vms=("inplace",))
        assert not old_file.exists()
    finally:
        defaults: dict[str, Any] = {
            "resize.allow_same_node": False, "scheduler.vcpu_allocation_ratio": 1.0,
        }  # fmt: skip
        for key, value in defaults.items():
            c.api.put(f"/settings/{key}", json={"value": value})
