"""One writer per disk, on the agent's side: the locks of shared volumes taken by a start and
given back by a stop, on real sim hosts sharing one fabric (and on lock files in a plain
directory, as a libvirt host's shared pool keeps them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.agent.drivers.base import DiskSpec, VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.agent.drivers.storage import LockHolder, PoolRef
from bollard.agent.executor import Executor
from bollard.agent.volume_locks import LOCKED, DirLocks, LockArgs, acquire, release
from bollard.domain.errors import DriverInvalidState
from bollard.domain.protocol import Answer, Command
from bollard.domain.states import CommandType, PowerState

T = TypeVar("T")
VM = "22222222-2222-4222-8222-222222222222"
NFS = PoolRef(name="nfs", type="shared", path="/mnt/nfs")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


def _locks(holder: str, epoch: int = 1, breakable: tuple[str, ...] = ()) -> LockArgs:
    return LockArgs(
        holder=holder, epoch=epoch, volumes=[NFS], files=["vol-a.qcow2"],
        breakable=list(breakable),
    )  # fmt: skip


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[SimDriver, SimDriver]:
    a = SimDriver(tmp_path / "fabric", "node1", latency=0.0)
    b = SimDriver(tmp_path / "fabric", "node2", latency=0.0)
    run(a.create_volume(NFS, "vol-a.qcow2", 64))
    return a, b


def test_a_lock_another_live_host_holds_refuses_the_start(hosts: tuple[SimDriver, ...]) -> None:
    a, b = hosts
    assert run(acquire(a, VM, _locks("node1"), "boot-a")) == []
    holder = run(a.read_lock(NFS, "vol-a.qcow2"))
    assert holder is not None and (holder.node, holder.vm_uuid, holder.epoch) == ("node1", VM, 1)
    with pytest.raises(DriverInvalidState) as refused:
        run(acquire(b, VM, _locks("node2", epoch=2), "boot-b"))
    assert refused.value.code == LOCKED
    assert "locked by host node1" in refused.value.message
    assert run(b.read_lock(NFS, "vol-a.qcow2")) == holder  # nothing changed


def test_a_fenced_hosts_lock_is_broken_and_a_stale_own_lock_flushed(
    hosts: tuple[SimDriver, ...],
) -> None:
    a, b = hosts
    run(acquire(a, VM, _locks("node1"), "boot-a"))
    notes = run(acquire(b, VM, _locks("node2", epoch=2, breakable=("node1",)), "boot-b"))
    assert notes == ["lock of vol-a.qcow2 taken over from node1"]
    holder = run(b.read_lock(NFS, "vol-a.qcow2"))
    assert holder is not None and (holder.node, holder.epoch) == ("node2", 2)
    # node2 rebooted (a new boot id) and starts the VM again: its own stale lock is flushed.
    notes = run(acquire(b, VM, _locks("node2", epoch=2), "boot-b2"))
    assert notes == ["stale lock of vol-a.qcow2 from before a restart flushed"]
    # node1 cannot give back a lock it no longer holds.
    assert run(release(a, VM, _locks("node1"))) == 0
    assert run(release(b, VM, _locks("node2"))) == 1
    assert run(b.read_lock(NFS, "vol-a.qcow2")) is None


def test_a_volume_is_one_vms_disk(hosts: tuple[SimDriver, ...]) -> None:
    a, _ = hosts
    run(acquire(a, VM, _locks("node1"), "boot-a"))
    with pytest.raises(DriverInvalidState, match="held by VM"):
        run(acquire(a, "33333333-3333-4333-8333-333333333333", _locks("node1"), "boot-a"))


def test_lock_files_in_a_directory_are_compare_and_set(tmp_path: Path) -> None:
    locks = DirLocks(tmp_path)
    one = LockHolder(node="node1", vm_uuid=VM, epoch=1)
    two = LockHolder(node="node2", vm_uuid=VM, epoch=2)
    assert locks.write("v.qcow2", one, None)
    assert not locks.write("v.qcow2", two, None)  # held: the expectation is wrong
    assert locks.read("v.qcow2") == one
    assert locks.write("v.qcow2", two, one)
    assert not locks.remove("v.qcow2", one)
    assert locks.remove("v.qcow2", two) and locks.read("v.qcow2") is None
    (tmp_path / ".bollard-locks" / "w.qcow2.lock").write_text("{torn")
    with pytest.raises(DriverInvalidState, match="unreadable"):
        locks.read("w.qcow2")


def _answered(cid: str, *outboxes: list[Answer]) -> Callable[[], bool]:
    return lambda: any(m.command_id == cid for box in outboxes for m in box)


def test_the_executor_refuses_a_second_start_and_a_stop_gives_the_lock_back(
    hosts: tuple[SimDriver, ...],
) -> None:
    a, b = hosts
    spec = VmSpec(uuid=VM, name="db", vcpus=1, memory_mb=256, epoch=1,
                  disks=[DiskSpec(size_mb=64, path="sim://shared/nfs/vol-a.qcow2")])  # fmt: skip

    async def scenario() -> tuple[list[Answer], list[Answer]]:
        sent_a: list[Answer] = []
        sent_b: list[Answer] = []
        answered = asyncio.Condition()

        async def send_a(msg: Any) -> None:
            async with answered:
                sent_a.append(msg)
                answered.notify_all()

        async def send_b(msg: Any) -> None:
            async with answered:
                sent_b.append(msg)
                answered.notify_all()

        ex_a, ex_b = Executor(a, send_a), Executor(b, send_b)
        await a.define(spec)
        await b.define(spec.model_copy(update={"epoch": 2}))
        start = {"locks": _locks("node1").model_dump(mode="json")}
        for ex, cid, kind, args, epoch in (
            (ex_a, "c1", CommandType.START, start, 1),
            (ex_b, "c2", CommandType.START,
             {"locks": _locks("node2", epoch=2).model_dump(mode="json")}, 2),
            (ex_a, "c3", CommandType.STOP, start, 1),
            (ex_b, "c4", CommandType.START,
             {"locks": _locks("node2", epoch=2).model_dump(mode="json")}, 2),
        ):  # fmt: skip
            ex.submit(Command(id=cid, command=kind, args=args, vm_uuid=VM, epoch=epoch,
                              timeout=5))  # fmt: skip
            async with answered:  # (bounded by run()'s deadline)
                await answered.wait_for(_answered(cid, sent_a, sent_b))
        return sent_a, sent_b

    sent_a, sent_b = run(scenario())
    by_id = {m.command_id: m for m in sent_a + sent_b}
    assert by_id["c1"].ok and by_id["c3"].ok and by_id["c4"].ok
    assert not by_id["c2"].ok and by_id["c2"].error is not None
    assert by_id["c2"].error.code == LOCKED
    holder = run(b.read_lock(NFS, "vol-a.qcow2"))
    assert holder is not None and holder.node == "node2"
    assert run(b.list_vms())[0].power is PowerState.RUNNING
