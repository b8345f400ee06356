"""Many concurrent live migrations (some aborted) between three sim hosts, watched by an
observer thread that reads the fabric under its lock the whole time: a VM is never running on
two hosts, and never on none."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from pathlib import Path

from bollard.agent.drivers.base import JobStatus
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.states import PowerState
from bollard.sim import Fabric, SimVm

HOSTS = ("h1", "h2", "h3")
VMS = 6
MOVES = 5  # migrations per VM
DEADLINE = 30.0


class Observer(threading.Thread):
    def __init__(self, root: Path, uuids: set[str]) -> None:
        super().__init__(name="fabric-observer", daemon=True)
        self.fabric = Fabric(root)
        self.uuids = uuids
        self.stop = threading.Event()
        self.violations: list[str] = []
        self.looks = 0
        self.seen_incoming = 0
        self.moves = 0

    def run(self) -> None:
        last: dict[str, str] = {}
        while not self.stop.is_set():
            snap = self.fabric.snapshot(settle=False)  # a consistent cut, changing nothing
            self.looks += 1
            running: dict[str, list[str]] = {u: [] for u in self.uuids}
            for node, vms in snap.items():
                for vm in vms:
                    self.seen_incoming += vm.incoming is not None
                    if vm.power == PowerState.RUNNING:
                        running[vm.uuid].append(node)
            for uuid, nodes in running.items():
                if len(nodes) != 1:
                    self.violations.append(f"look {self.looks}: {uuid} running on {nodes}")
                elif last.get(uuid, nodes[0]) != nodes[0]:
                    self.moves += 1
                if nodes:
                    last[uuid] = nodes[0]


async def wander(drivers: dict[str, SimDriver], uuid: str, home: str, rng: random.Random) -> int:
    """Migrate one VM MOVES times to random other hosts (aborting some); how many moved."""
    here, epoch, moved = home, 1, 0
    loop = asyncio.get_running_loop()
    for n in range(MOVES):
        there = rng.choice([h for h in HOSTS if h != here])
        cid = f"{uuid[:8]}-{n}"
        job = await drivers[here].migrate(cid, uuid, there, live=True, new_epoch=epoch + 1)
        abort_at = loop.time() + rng.uniform(0.0, 0.05) if n % 3 == 2 else None
        deadline = loop.time() + DEADLINE
        while job.status == JobStatus.RUNNING:
            assert loop.time() < deadline, f"migration {cid} did not end"
            await asyncio.sleep(0.005)  # poll the job (backoff), as the agent does
            if abort_at is not None and loop.time() >= abort_at:
                info = await drivers[here].abort_job(cid, "test abort")
                abort_at = None
                assert info is not None
                job = info
            else:
                polled = await drivers[here].job(cid)
                assert polled is not None
                job = polled
        if job.status == JobStatus.COMPLETED:
            here, epoch, moved = there, epoch + 1, moved + 1
        else:
            assert job.status == JobStatus.ABORTED, job
    return moved


def test_no_vm_is_ever_running_on_two_hosts_or_none(tmp_path: Path) -> None:
    rng = random.Random(7)
    fabric = Fabric(tmp_path)
    drivers = {
        h: SimDriver(tmp_path, h, latency=0.02, vcpus=64, memory_mb=65536, migration_rate=1024)
        for h in HOSTS
    }
    homes = {}
    for i in range(VMS):
        uuid = f"{i:08d}-0000-4000-8000-000000000000"
        home = HOSTS[i % len(HOSTS)]
        host = fabric.host(home)
        host.ensure_host(64, 65536)
        host.put_vm(
            SimVm(uuid=uuid, name=f"vm{i}", vcpus=1, memory_mb=64 + 16 * i, epoch=1,
                  power=PowerState.RUNNING)
        )  # fmt: skip
        homes[uuid] = home
    for h in HOSTS:
        fabric.host(h).ensure_host(64, 65536)
    observer = Observer(tmp_path, set(homes))
    observer.start()

    async def go() -> int:
        async with asyncio.timeout(DEADLINE):
            moves = await asyncio.gather(
                *(wander(drivers, u, h, random.Random(rng.random())) for u, h in homes.items())
            )
        return sum(moves)

    try:
        moved = asyncio.run(go())
    finally:
        observer.stop.set()
        observer.join(timeout=10)
    assert not observer.is_alive()
    assert observer.violations == []
    # Not vacuous: the observer saw migrations in flight and VMs changing host.
    assert moved >= VMS * MOVES // 2, moved
    assert observer.looks > 50 and observer.seen_incoming > 0 and observer.moves > 0
    final = Counter(vm.uuid for vms in fabric.snapshot().values() for vm in vms)
    assert final == Counter(dict.fromkeys(homes, 1))  # one definition each, nothing left over
