"""The reconcilers' pass loop: kicks run a pass at once, and passes take at most MAX_DUTY of
the server's time (a long pass is followed by a proportional rest, kicks coalescing)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from bollard.server.clock import SystemClock
from bollard.server.reconcile.loop import MAX_DUTY, PassLoop


class _Settings:
    def get(self, key: str) -> float:
        return 3600.0  # only kicks start passes in these tests


class _Work:
    async def run(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


async def _passes(pass_seconds: float, kicks: int) -> list[float]:
    loop = asyncio.get_running_loop()
    starts: list[float] = []
    done = asyncio.Event()

    async def body() -> None:
        starts.append(loop.time())
        await asyncio.sleep(pass_seconds)  # the pass's own work, simulated
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
