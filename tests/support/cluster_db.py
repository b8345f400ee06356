"""What the tests of several servers on one database share (tests/unit/test_cluster_*.py):
the database fixture, a database that can be made to stop answering, and an async wait for
a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import pytest

from bollard.server.clock import SystemClock
from bollard.server.unit_of_work import DatabaseWork
from bollard.store.db import Database

P = ParamSpec("P")
R = TypeVar("R")

DEADLINE = 10.0  # seconds, for any one condition waited for


class FaultyWork(DatabaseWork):
    """A database whose `run` can be made to hang (no answer) until `answer()`."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.answering = asyncio.Event()
        self.answering.set()

    def hang(self) -> None:
        self.answering.clear()

    def answer(self) -> None:
        self.answering.set()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if not await SystemClock().wait_event(self.answering, DEADLINE * 3):
            raise TimeoutError("the test never let the database answer")
        return await super().run(fn, *args, **kwargs)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


async def until(check: Callable[[], Awaitable[Any] | Any], what: str) -> Any:
    """Wait for `check()` to be truthy (it may be a coroutine function); fail after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE:g} s waiting for {what}")
        await asyncio.sleep(0.01)  # a condition of another task or of the database: polled
