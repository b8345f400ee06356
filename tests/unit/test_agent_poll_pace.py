"""How often the executor looks at a running hypervisor job (agent/backend.py PollPace):
quickly in its first moments and near the end its progress predicts, a bounded number of
times, else every ``poll``; and a short job's answer is not held back by a whole poll."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bollard.agent.backend import QUICK_DIVISOR, QUICK_NEAR_END, PollPace, run_job
from bollard.agent.drivers.base import JobInfo, JobStatus
from bollard.domain.protocol import Command
from bollard.domain.states import CommandType

POLL = 0.1
QUICK = POLL / QUICK_DIVISOR


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def ramped(pace: PollPace) -> list[float]:
    """The waits of the first moments (until the first whole poll, included)."""
    waits = [pace.next(0.0)]
    while waits[-1] < POLL:
        waits.append(pace.next(0.0))
    return waits


def test_the_first_moments_are_looked_at_quickly_then_every_poll() -> None:
    pace = PollPace(POLL, Clock())
    assert ramped(pace) == pytest.approx([QUICK, 2 * QUICK, 4 * QUICK, POLL])
    assert [pace.next(0.0) for _ in range(3)] == [POLL] * 3  # no progress: no prediction


def test_near_its_predicted_end_a_job_is_looked_at_sooner() -> None:
    clock = Clock()
    pace = PollPace(POLL, clock)
    ramped(pace)
    clock.t += 1.0
    assert pace.next(0.5) == POLL  # a second more to go
    assert pace.next(0.95) == pytest.approx(1.0 * 0.05 / 0.95)  # about 53 ms to go
    assert pace.next(0.999) == pytest.approx(QUICK)  # (never quicker than a quick poll)
    assert pace.next(1.0) == pytest.approx(QUICK)


def test_a_misleading_progress_gets_a_few_quick_looks_only() -> None:
    clock = Clock()
    pace = PollPace(POLL, clock)
    ramped(pace)
    clock.t += 10.0
    waits = [pace.next(0.9999) for _ in range(QUICK_NEAR_END + 5)]
    assert waits == [pytest.approx(QUICK)] * QUICK_NEAR_END + [POLL] * 5


class EndsAfter:
    """A JobDriver whose job runs for ``seconds`` (by the loop's clock), then completes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.began = 0.0
        self.reads = 0

    def _info(self, status: JobStatus) -> JobInfo:
        return JobInfo(command_id="c1", kind="volume-copy", status=status, progress=0.0)

    async def start(self, command: Command) -> JobInfo:
        self.began = asyncio.get_running_loop().time()
        return self._info(JobStatus.RUNNING)

    async def job(self, command_id: str) -> JobInfo:
        self.reads += 1
        ended = asyncio.get_running_loop().time() - self.began >= self.seconds
        return self._info(JobStatus.COMPLETED if ended else JobStatus.RUNNING)

    async def abort_job(self, command_id: str, reason: str) -> Any:
        return None

    async def abort_jobs(self, reason: str = "") -> list[str]:
        return []

    async def vm_busy(self, uuid: str) -> bool:
        return False


def test_a_short_job_is_answered_long_before_a_whole_poll() -> None:
    poll = 2.0  # (a poll far longer than the job and any scheduling delay)
    driver = EndsAfter(0.05)
    command = Command(id="c1", command=CommandType.VOLUME_COPY, vm_uuid=None, epoch=0, timeout=30)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        answer, _ = await run_job(driver, command, driver.start, poll)  # type: ignore[arg-type]
        assert answer.ok
        return loop.time() - began

    took = asyncio.run(go())
    assert took < poll / 2  # (at a steady poll it would have taken the whole 2 s)
    assert driver.reads <= 3
