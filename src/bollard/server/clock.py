"""Time comes in through one interface, so tests (and, later, a simulation on a virtual clock)
control it. Nothing else in `bollard.server` reads a clock, sleeps or bounds a wait.

- `now()`: wall-clock time (UTC), for what is stored and shown;
- `monotonic()`: seconds that only go forward, for deadlines and durations;
- `sleep(seconds)`: for backoff and periodic loops only, never to synchronise;
- `wait_for(awaitable, timeout)`: wait for something with a deadline (TimeoutError after it);
- `wait_event(event, timeout)`: wait for an event with a deadline (True once set, False after).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T: ...

    async def wait_event(self, event: asyncio.Event, timeout: float) -> bool: ...


class SystemClock:
    """The real clock: the system's time and asyncio's timers."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(awaitable, max(0.0, timeout))

    async def wait_event(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
        return event.is_set()


@dataclass(frozen=True)
class Deadline:
    """A point in a clock's monotonic time: `Deadline.after(clock, 30)`."""

    clock: Clock
    at: float

    @classmethod
    def after(cls, clock: Clock, seconds: float) -> Deadline:
        return cls(clock, clock.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock.monotonic())

    @property
    def passed(self) -> bool:
        return self.clock.monotonic() >= self.at


@dataclass
class _Spent:
    since: float  # monotonic start of the current window
    lines: int = 0  # logged in it
    held: int = 0  # held back since the last line logged


class LogBudget:
    """Rate-limits one kind of log line, per key (e.g. a node): at most `burst` lines in each
    `window` seconds. `take(key)` is None when the line is to be held back, else how many
    were held back since the last one logged (to say so in it)."""

    def __init__(
        self, clock: Clock, *, burst: int = 5, window: float = 60.0, max_keys: int = 10_000
    ) -> None:
        self.clock = clock
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self._spent: dict[str, _Spent] = {}

    def take(self, key: str) -> int | None:
        now = self.clock.monotonic()
        spent = self._spent.get(key)
        if spent is None or now - spent.since >= self.window:
            held = spent.held if spent is not None else 0
            if spent is None and len(self._spent) >= self.max_keys:
                self._spent = {k: s for k, s in self._spent.items() if now - s.since < self.window}
                if len(self._spent) >= self.max_keys:
                    return None  # a flood of keys: hold back until their windows pass
            spent = self._spent[key] = _Spent(now)
            spent.held = held
        if spent.lines >= self.burst:
            spent.held += 1
            return None
        spent.lines += 1
        held, spent.held = spent.held, 0
        return held
