"""Pools and volumes end to end on real libvirt hosts and QEMU guests (TCG): a server process
and one `bollard agent --driver libvirt` per host (tests/libvirt/bollard_cluster.py), driven
through the REST API.

The pools: `local` (made by the server's schema: each host's default directory, inside its
daemon's own /var/lib/libvirt) and `shared` (a directory of the test's, which both daemons
see). The data is written into a volume's file before a guest has it open (qemu-io) or, while
it runs, through the guest's own disk device (QEMU's monitor), and compared as the guest sees
it (qemu-img compare) wherever the volume went. The guest prints a counter every second on
its serial console: a live move must not stop it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bollard.agent.drivers.libvirt.domains import XML_INACTIVE
from bollard.agent.drivers.libvirt.storage import DEFAULT_IMAGE_DIR
from bollard.agent.drivers.libvirt.xml import parse_domain
from tests.e2e.conftest import wait_until
from tests.libvirt.bollard_cluster import LibvirtCluster, libvirt_cluster
from tests.support.libvirt_env import (
    LIBVIRT_DIRS,
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
SLOW_MIB_PER_S = 1  # the slowed agent's live moves: 8 MiB of data take 8 s


class Storage:
    """The cluster, the shared pool's directory, and where a volume's file is."""

    def __init__(self, cluster: LibvirtCluster, shared_dir: Path) -> None:
        self.c = cluster
        self.shared_dir = shared_dir

    def host(self, name: str) -> LibvirtHost:
        return next(h for h in self.c.hosts if h.name == name)

    def volume(self, name: str) -> dict[str, Any]:
        answer = self.c.api.get(f"/volumes/{name}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def path(self, v: dict[str, Any]) -> str:
        """The volume's file as its host's daemon names it."""
        if v["pool"] == "shared":
            return str(self.shared_dir / v["file"])
        assert v["pool"] == "local", v
        return f"{DEFAULT_IMAGE_DIR}/{v['file']}"

    def seen_here(self, v: dict[str, Any], node: str | None = None) -> Path:
        """The volume's file as the test process sees it (a local pool's is inside the
        directory of its host's daemon)."""
        file: str = v["file"]
        if v["pool"] == "shared":
            return self.shared_dir / file
        inside = Path(DEFAULT_IMAGE_DIR).relative_to(LIBVIRT_DIRS["lib"])
        return self.host(node or v["node"]).dir / "lib" / inside / file

    def done(self, answer: Any, timeout: float = 180.0) -> dict[str, Any]:
        task = self.c.wait_task(answer, timeout=timeout)
        assert task["state"] == "succeeded", task
        return task

    def new_volume(self, name: str, node: str, size_mb: int = 16) -> dict[str, Any]:
        body = {"name": name, "size_mb": size_mb, "pool": "local", "node": node}
        self.done(self.c.api.post("/volumes", json=body))
        return self.volume(name)

    def new_vm(self, name: str, node: str, *, start: bool) -> dict[str, Any]:
        body = {"name": name, "vcpus": 1, "memory_mb": 128, "node": node, "start": start}
        self.done(self.c.api.post("/vms", json=body))
        return self.c.vm(name)

    def attach(self, volume: str, vm: str) -> dict[str, Any]:
        self.done(self.c.api.post(f"/volumes/{volume}/attach", json={"vm": vm}))
        v = self.volume(volume)
        assert (v["state"], v["vm"]) == ("attached", vm), v
        return v

    def disk_paths(self, node: str, uuid: str, device: str) -> tuple[str | None, str]:
        """The file of the domain's disk at ``device``: in the running guest (None: it does not
        run), and in its persistent definition."""
        with closing(self.host(node).connect()) as conn:
            dom = conn.lookupByUUIDString(uuid)
            live = parse_domain(dom.XMLDesc(0)).disks if dom.isActive() else None
            defined = parse_domain(dom.XMLDesc(XML_INACTIVE)).disks
        return (
            None if live is None else next(d.path for d in live if d.target == device),
            next(d.path for d in defined if d.target == device),
        )

    def counting(self, vm: str, above: int = 0) -> int:
        """Wait until the guest's console counter is above ``above``; returns it."""
        counter: int = wait_until(
            f"{vm}'s counter above {above}",
            lambda: (n := self.c.counter(vm)) is not None and n > above and n,
            timeout=60,
        )
        return counter

    def boots(self, vm: str) -> int:
        log: str = self.c.console(vm, 400)["log"]
        return log.count("bollard-guest boot")

    def delete(self, *, vms: tuple[str, ...] = (), volumes: tuple[str, ...] = ()) -> None:
        """Remove what a test made (a host of this machine has room for two guests)."""
        for vm in vms:
            self.done(self.c.api.delete(f"/vms/{vm}"))
        for volume in volumes:
            self.done(self.c.api.delete(f"/volumes/{volume}"))


@pytest.fixture(scope="module")
def storage(
    libvirt_hosts: list[LibvirtHost], guest: Guest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Storage]:
    for host in libvirt_hosts:
        remove_bollard_domains(host)
    root = tmp_path_factory.mktemp("bollard-libvirt-storage")
    shared = root / "shared"
    shared.mkdir()
    with libvirt_cluster(root, libvirt_hosts, guest, heartbeat=HEARTBEAT) as c:
        try:
            body = {"name": "shared", "type": "shared", "path": str(shared)}
            answer = c.api.post("/pools", json=body)
            assert answer.status_code == 201, answer.text
            yield Storage(c, shared)
        except BaseException:
            print(c.logs())
            raise
    for host in libvirt_hosts:
        remove_bollard_domains(host)


def _guest_writes(host: LibvirtHost, uuid: str, device: str, command: str) -> None:
    """Make the running guest's disk at ``device`` do the qemu-io ``command`` through the
    guest's own device (QEMU's HMP ``qemu-io -d``), as the guest's writes go."""
    import libvirt_qemu

    backend = f"/machine/peripheral/ua-bollard-vol-{device}/virtio-backend"
    with closing(host.connect()) as conn:
        said = libvirt_qemu.qemuMonitorCommand(
            conn.lookupByUUIDString(uuid),
            f'qemu-io -d {backend} "{command}"',
            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
        )
    assert not said.strip(), said


def _write_raw(image: Path, command: str) -> None:
    subprocess.run(
        ["qemu-io", "-f", "raw", "-c", command, str(image)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_running_vms_volume_moves_live_to_a_shared_pool_and_grows_there(
    storage: Storage, tmp_path: Path
) -> None:
    s, c = storage, storage.c
    v = s.new_volume("live-data", "a")
    write_pattern(s.seen_here(v), 0x5A, 2, 3)
    expected = raw_copy(s.seen_here(v), tmp_path / "expected.raw")
    vm = s.new_vm("live", "a", start=True)
    v = s.attach("live-data", "live")
    device, old = v["device"], s.seen_here(v)
    assert s.disk_paths("a", vm["uuid"], device) == (s.path(v), s.path(v))
    before = s.counting("live", above=1)
    # The guest writes while it runs (it has the disk open: qemu-io cannot touch its file).
    _guest_writes(s.host("a"), vm["uuid"], device, "write -P 0x77 9M 1M")
    _write_raw(expected, "write -P 0x77 9M 1M")

    s.done(c.api.post("/volumes/live-data/migrate", json={"pool": "shared"}))
    moved = s.volume("live-data")
    assert (moved["pool"], moved["node"], moved["state"], moved["vm"], moved["device"]) == (
        "shared", None, "attached", "live", device,
    )  # fmt: skip
    assert moved["file"] != v["file"] and moved["id"] == v["id"]
    # The guest runs on, from the new file (its definition names it too), with every byte.
    assert s.disk_paths("a", vm["uuid"], device) == (s.path(moved), s.path(moved))
    assert same_disk_data(expected, "raw", s.seen_here(moved))
    assert not old.exists()  # the source file goes once the move is committed
    assert s.counting("live", above=before) > before
    assert s.boots("live") == 1
    assert c.vm("live")["status"] == "ACTIVE"

    # Grown while the guest runs: QEMU resizes the disk under it.
    s.done(c.api.post("/volumes/live-data/grow", json={"size_mb": 32}))
    assert s.volume("live-data")["size_mb"] == 32
    with closing(s.host("a").connect()) as conn:
        assert conn.lookupByUUIDString(vm["uuid"]).blockInfo(device, 0)[0] == 32 * MIB
    # (qemu-img compare: the data, and zeros beyond the old size)
    assert same_disk_data(expected, "raw", s.seen_here(moved))
    assert s.boots("live") == 1
    assert not c.api.get("/reconcile", params={"vm": "live"}).json()["differences"]
    s.delete(vms=("live",), volumes=("live-data",))
    assert not s.seen_here(moved).exists()


def test_a_stopped_vms_volume_migrates_offline_and_copies_carry_the_data(
    storage: Storage, tmp_path: Path
) -> None:
    """Offline: the volume's file is copied (qemu-img into the shared pool, streamed between
    the hosts' local pools), and the source goes once the volume moved."""
    s, c = storage, storage.c
    v = s.new_volume("cold-data", "a")
    write_pattern(s.seen_here(v), 0x3C, 1, 4)
    expected = raw_copy(s.seen_here(v), tmp_path / "expected.raw")
    vm = s.new_vm("cold", "a", start=False)
    v = s.attach("cold-data", "cold")

    s.done(c.api.post("/volumes/cold-data/migrate", json={"pool": "shared"}))
    moved = s.volume("cold-data")
    assert (moved["pool"], moved["state"], moved["vm"]) == ("shared", "attached", "cold")
    assert same_disk_data(expected, "raw", s.seen_here(moved))
    assert not s.seen_here(v).exists()
    # The VM's definition names the new file: it starts with the disk from there.
    assert s.disk_paths("a", vm["uuid"], v["device"]) == (None, s.path(moved))
    s.done(c.api.post("/vms/cold/start"))
    assert s.disk_paths("a", vm["uuid"], v["device"]) == (s.path(moved), s.path(moved))
    s.counting("cold")
    s.done(c.api.post("/vms/cold/stop"))

    # A copy of it into host b's local pool: a new volume with the same data.
    body = {"name": "cold-copy", "pool": "local", "node": "b"}
    s.done(c.api.post("/volumes/cold-data/copy", json=body))
    copy = s.volume("cold-copy")
    assert (copy["pool"], copy["node"], copy["state"], copy["vm"]) == ("local", "b", "ready", None)
    assert same_disk_data(expected, "raw", s.seen_here(copy))
    assert same_disk_data(expected, "raw", s.seen_here(moved))  # the source is as it was
    # Moved from b's local pool to a's: streamed from one daemon to the other.
    s.done(c.api.post("/volumes/cold-copy/migrate", json={"pool": "local", "node": "a"}))
    back = s.volume("cold-copy")
    assert (back["pool"], back["node"], back["state"]) == ("local", "a", "ready")
    assert same_disk_data(expected, "raw", s.seen_here(back))
    assert not s.seen_here(copy, "b").exists()
    s.delete(vms=("cold",), volumes=("cold-data", "cold-copy"))


def test_an_agent_killed_mid_move_leaves_the_guest_on_one_whole_file(
    storage: Storage, tmp_path: Path
) -> None:
    """The agent dies while the block copy runs (slowed down); libvirt goes on with it. Once
    the agent is back, the move is settled from the file the guest uses: the volume's record,
    the guest and the files agree, the data is whole, and the guest never stopped."""
    s, c = storage, storage.c
    a = s.host("a")
    c.kill("a")
    c.start_agent(a, "--libvirt-copy-bandwidth-mib", str(SLOW_MIB_PER_S))
    wait_until("a back", lambda: c.node("a")["connected"] and c.node("a")["inventory_known"])
    v = s.new_volume("crossing-data", "a")
    write_pattern(s.seen_here(v), 0x5A, 0, 8)
    expected = raw_copy(s.seen_here(v), tmp_path / "expected.raw")
    vm = s.new_vm("crossing", "a", start=True)
    v = s.attach("crossing-data", "crossing")
    device = v["device"]
    before = s.counting("crossing", above=0)
    answer = c.api.post("/volumes/crossing-data/migrate", json={"pool": "shared"})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task"]["id"]

    def copying() -> bool:
        with closing(a.connect()) as conn:
            return bool(conn.lookupByUUIDString(vm["uuid"]).blockJobInfo(device, 0))

    wait_until("the block copy to run", copying)
    c.kill("a")  # SIGKILL, mid-copy
    c.start_agent(a)
    task = c.wait_task_id(task_id, timeout=240)
    assert task["state"] in ("succeeded", "rolled_back", "failed"), task
    wait_until("the volume at rest", lambda: s.volume("crossing-data")["task_id"] is None)
    final = s.volume("crossing-data")
    uses, defined = s.disk_paths("a", vm["uuid"], device)
    assert uses == defined == s.path(final), (uses, defined, final)
    assert same_disk_data(expected, "raw", s.seen_here(final))
    # Exactly one file of the volume is left: the one the guest uses.
    others = [p.name for p in s.shared_dir.iterdir() if p.name.startswith("vol-")]
    if final["pool"] == "shared":
        assert others == [final["file"]] and not s.seen_here(v).exists()
    else:
        assert others == [] and final["file"] == v["file"]
    assert task["state"] == "succeeded" or final["pool"] == "local"
    assert not copying()
    assert s.counting("crossing", above=before) > before
    assert s.boots("crossing") == 1
    assert (final["state"], final["vm"], final["device"]) == ("attached", "crossing", device)
    s.delete(vms=("crossing",), volumes=("crossing-data",))
