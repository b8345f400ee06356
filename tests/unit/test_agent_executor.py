"""Executor: dispatch, error mapping, per-VM serialisation, duplicate command ids."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from bollard.agent.drivers.base import HostInfo, VmSpec
from bollard.agent.executor import Executor
from bollard.domain.errors import DriverNotFound
from bollard.domain.protocol import Answer, Capacity, Command, VmReport
from bollard.domain.states import CommandType, PowerState

T = TypeVar("T")


class GatedDriver:
    """A driver whose start/stop wait for the test to open a gate, recording the order."""

    name = "gated"

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.log: list[str] = []
        self.calls = 0
        self.started = asyncio.Event()

    def gate(self, uuid: str) -> asyncio.Event:
        return self.gates.setdefault(uuid, asyncio.Event())

    def _report(self, uuid: str, power: PowerState) -> VmReport:
        return VmReport(uuid=uuid, name=uuid, power=power, vcpus=1, memory_mb=1)

    async def host_info(self) -> HostInfo:
        return HostInfo(boot_id="b", capacity=Capacity(vcpus=1, memory_mb=1))

    async def list_vms(self) -> list[VmReport]:
        return []

    async def define(self, spec: VmSpec) -> VmReport:
        return self._report(spec.uuid, PowerState.STOPPED)

    async def start(self, uuid: str) -> VmReport:
        self.calls += 1
        self.log.append(f"start {uuid} begin")
        self.started.set()
        await self.gate(uuid).wait()
        self.log.append(f"start {uuid} end")
        return self._report(uuid, PowerState.RUNNING)

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        self.log.append(f"shutdown {uuid} {timeout}")
        return self._report(uuid, PowerState.STOPPED)

    async def stop(self, uuid: str) -> VmReport:
        self.log.append(f"stop {uuid}")
        return self._report(uuid, PowerState.STOPPED)

    async def restart(self, uuid: str) -> VmReport:
        raise RuntimeError("boom")

    async def undefine(self, uuid: str, *, force: bool = False) -> None:
        raise DriverNotFound("never heard of it")

    async def close(self) -> None:
        return None


def cmd(
    cid: str, kind: CommandType, vm: str = "vm-a", deadline: float = 10, **args: Any
) -> Command:
    return Command(id=cid, command=kind, vm_uuid=vm, args=args, epoch=1, timeout=deadline)


class Harness:
    def __init__(self) -> None:
        self.driver = GatedDriver()
        self.answers: asyncio.Queue[Answer] = asyncio.Queue()
        self.changes = 0
        self.executor = Executor(self.driver, self._send, self._changed)

    async def _send(self, answer: Answer) -> None:
        await self.answers.put(answer)

    def _changed(self) -> None:
        self.changes += 1

    async def answer(self) -> Answer:
        async with asyncio.timeout(5):
            return await self.answers.get()


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await coro

    return asyncio.run(bounded())


def test_commands_on_one_vm_are_serialised_other_vms_run_alongside() -> None:
    async def go() -> None:
        h = Harness()
        h.executor.submit(cmd("1", CommandType.START, "vm-a"))
        h.executor.submit(cmd("2", CommandType.STOP, "vm-a"))
        h.executor.submit(cmd("3", CommandType.START, "vm-b"))
        h.driver.gate("vm-b").set()
        assert (await h.answer()).command_id == "3"  # vm-b is not held up by vm-a
        assert "stop vm-a" not in h.driver.log
        h.driver.gate("vm-a").set()
        ids = [(await h.answer()).command_id for _ in range(2)]
        assert ids == ["1", "2"]
        assert h.driver.log.index("start vm-a end") < h.driver.log.index("stop vm-a")
        assert h.changes == 3

    run(go())


def test_duplicate_while_running_executes_once_and_answers() -> None:
    async def go() -> None:
        h = Harness()
        h.executor.submit(cmd("1", CommandType.START))
        h.executor.submit(cmd("1", CommandType.START))
        h.driver.gate("vm-a").set()
        first = await h.answer()
        h.executor.submit(cmd("1", CommandType.START))
        assert await h.answer() == first
        assert h.driver.calls == 1
        assert h.answers.empty()

    run(go())


def test_errors_become_answer_codes() -> None:
    async def go() -> None:
        h = Harness()
        h.executor.submit(cmd("nf", CommandType.UNDEFINE))
        nf = await h.answer()
        assert nf.error is not None and (nf.ok, nf.error.code) == (False, "not-found")
        h.executor.submit(cmd("boom", CommandType.RESTART))
        boom = await h.answer()
        assert boom.error is not None and boom.error.code == "internal"
        assert "boom" in boom.error.message
        h.executor.submit(cmd("slow", CommandType.START, deadline=0.05))
        slow = await h.answer()
        assert slow.error is not None and slow.error.code == "timed-out"
        h.executor.submit(cmd("novm", CommandType.STOP, vm=None))  # type: ignore[arg-type]
        novm = await h.answer()
        assert novm.error is not None and novm.error.code == "invalid-input"
        h.executor.submit(cmd("sd", CommandType.SHUTDOWN, timeout=2.5))
        sd = await h.answer()
        assert sd.ok and sd.result["vm"]["power"] == "stopped"
        h.executor.submit(cmd("sd2", CommandType.SHUTDOWN))
        await h.answer()
        assert h.driver.log[-2:] == ["shutdown vm-a 2.5", "shutdown vm-a 60.0"]

    run(go())


def test_aclose_cancels_running_commands() -> None:
    async def go() -> None:
        h = Harness()
        h.executor.submit(cmd("1", CommandType.START))
        async with asyncio.timeout(5):
            await h.driver.started.wait()
        await h.executor.aclose(timeout=2)
        assert h.executor.inflight == 0
        assert h.answers.empty()

    run(go())
