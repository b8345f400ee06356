"""The reconcilers' pass loop: kicks run a pass at once, and passes take at most MAX_DUTY of
the server's time (a pass that costs CPU is followed by a proportional rest, kicks
coalescing; one that mostly waited is not)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, cast

from sqlalchemy.exc import OperationalError

from bollard.server.clock import SystemClock
from bollard.server.reconcile.loop import MAX_DUTY, PassLoop


class _Settings:
    def get(self, key: str) -> float:
        return 3600.0  # only kicks start passes in these tests


class _Work:
    async def run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


def _busy(seconds: float) -> None:
    """CPU work for `seconds` of the process's CPU time (a pass's own work)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def _passes(pass_seconds: float, kicks: int, *, waits: bool = False) -> list[float]:
    """When the first `kicks` passes started, kicked over and over; each pass works (or,
    with `waits`, waits: for a database or agents that do not answer) `pass_seconds`."""
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    done = asyncio.Event()

    async def body() -> None:
        starts.append(loop.time())
        if waits:
            await asyncio.sleep(pass_seconds)  # the answer that does not come, simulated
        else:
            _busy(pass_seconds)
        if len(starts) >= kicks:
            done.set()

    passes = PassLoop(
        work=cast(Any, _Work()),
        clock=SystemClock(),
        settings=cast(Any, _Settings()),
        name="test",
        interval_key="interval",
        body=body,
    )
    runner = asyncio.create_task(passes.run())
    try:
        async with asyncio.timeout(30):
            while not done.is_set():
                passes.kick()
                await asyncio.sleep(0.01)  # an agent reporting changes over and over
    finally:
        runner.cancel()
    return starts


def test_a_kick_runs_a_pass_at_once() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        kicked = loop.time()
        starts = await _passes(0.0, 1)
        return starts[0] - kicked

    assert asyncio.run(main()) < 1.0  # not the 3600 s interval


def test_long_passes_are_followed_by_a_proportional_rest() -> None:
    pass_seconds = 0.1
    starts = asyncio.run(_passes(pass_seconds, 3))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # a pass of d seconds, then a rest of d * (1 / MAX_DUTY - 1): starts are >= d / MAX_DUTY apart
    assert all(gap >= pass_seconds / MAX_DUTY * 0.95 for gap in gaps), gaps


def test_a_pass_that_waited_is_not_followed_by_a_long_rest() -> None:
    pass_seconds = 1.0  # its length, spent waiting: a rest of 4 s if it counted
    starts = asyncio.run(_passes(pass_seconds, 2, waits=True))
    gap = starts[1] - starts[0]
    assert gap < pass_seconds + 1.5, gap  # kicked at once (the rest was >= 4 s)


class _SettingsUnanswered:
    """The interval cannot be read the first `fails` times (the database does not answer)."""

    def __init__(self, fails: int) -> None:
        self.fails = fails

    def get(self, key: str) -> float:
        if self.fails > 0:
            self.fails -= 1
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return 3600.0


def test_a_database_that_does_not_answer_does_not_end_the_loop() -> None:
    async def main() -> int:
        passes = 0
        two = asyncio.Event()

        async def body() -> None:
            nonlocal passes
            passes += 1
            if passes >= 2:
                two.set()

        loop = PassLoop(
            work=cast(Any, _Work()),
            clock=SystemClock(),
            settings=cast(Any, _SettingsUnanswered(fails=2)),
            name="test",
            interval_key="interval",
            body=body,
        )
        runner = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(10):
                while not two.is_set():
                    assert not runner.done(), runner.exception()  # (it ended at the first read)
                    loop.kick()
                    await asyncio.sleep(0.01)  # kicks, as agents reconnecting would
        finally:
            runner.cancel()
        return passes

    assert asyncio.run(main()) >= 2
