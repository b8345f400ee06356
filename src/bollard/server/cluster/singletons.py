"""Cluster-wide duties: loops that run on one server at a time (the health monitor, the
fencer, the state reconciler, the auto-confirm of resizes, failback, the reaping of dead
servers' rows).

On SQLite (one server) they run from the server's start to its stop. On PostgreSQL they run
on the leader only: started when this server is elected, cancelled when it is deposed (before
it stops counting itself leader). Each runs in a task of its own marked as that duty (a
context variable, which the threads it hands blocking work to inherit); every write
transaction made under that mark through a `DutyWork` checks the leader lease's fencing token
in the same transaction (`fenced_work.LeaderWork`), so a deposed leader's late write is
refused. The same objects called outside a duty (an API request asking the state reconciler
for a scan or a fix, on any server) write unfenced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection

from bollard.server.clock import Clock
from bollard.server.cluster.fenced_work import LeaderWork, NotLeader
from bollard.server.cluster.leader import Leadership
from bollard.server.ports import UnitOfWork

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DutyLoop = Callable[[], Coroutine[Any, Any, None]]

_duty: ContextVar[str | None] = ContextVar("bollard_duty", default=None)


def current_duty() -> str | None:
    """The duty the running code works for (None: none, e.g. an API request)."""
    return _duty.get()


class DutyWork:
    """A `ports.UnitOfWork` whose write transactions are fenced by the leader lease when
    made for a duty (see the module's docstring), and plain otherwise."""

    def __init__(self, work: UnitOfWork, leadership: Leadership) -> None:
        self.work = work
        self.fenced = LeaderWork(work, leadership)

    def read(self) -> AbstractContextManager[Connection]:
        return self.work.read()

    def write(self) -> AbstractContextManager[Connection]:
        if _duty.get() is None:
            return self.work.write()
        return self.fenced.write()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.work.run(fn, *args, **kwargs)


class Singletons:
    """The duties of this server. With `leadership` None they run from `start` (SQLite);
    else while this server leads. `stop_wait`: how long a cancelled duty is waited for."""

    def __init__(
        self, *, clock: Clock, leadership: Leadership | None, stop_wait: float = 5.0
    ) -> None:
        self.clock = clock
        self.leadership = leadership
        self.stop_wait = stop_wait
        self._loops: dict[str, DutyLoop] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._started = False

    @property
    def running(self) -> list[str]:
        """The duties running on this server now, by name."""
        return sorted(name for name, task in self._running.items() if not task.done())

    def add(self, name: str, loop: DutyLoop) -> None:
        if self._started:
            raise RuntimeError(f"duty {name} added after the duties started")
        if name in self._loops:
            raise ValueError(f"duty {name} added twice")
        self._loops[name] = loop

    async def start(self) -> None:
        """Start the duties now (no leadership), or whenever this server is elected."""
        self._started = True
        if self.leadership is None:
            self._start_all()
            return
        self.leadership.on_elected(self._elected)
        self.leadership.on_deposed(self._deposed)
        if self.leadership.is_leader:  # elected before start
            self._start_all()

    async def stop(self) -> None:
        await self._stop_all("the server stops")

    def _elected(self, token: int) -> None:
        log.info("cluster-wide duties start on this server (leader token %d)", token)
        self._start_all()

    async def _deposed(self) -> None:
        await self._stop_all("this server is no longer the leader")

    def _start_all(self) -> None:
        if self._running:
            return
        for name, loop in self._loops.items():
            self._running[name] = asyncio.create_task(_as_duty(name, loop), name=name)

    async def _stop_all(self, why: str) -> None:
        tasks = list(self._running.values())
        self._running.clear()
        if not tasks:
            return
        log.info("cluster-wide duties stop on this server: %s", why)
        for task in tasks:
            task.cancel()
        _, late = await asyncio.wait(tasks, timeout=self.stop_wait)
        for task in late:
            log.error(
                "duty %s did not stop within %g s of its cancel", task.get_name(), self.stop_wait
            )


async def _as_duty(name: str, loop: DutyLoop) -> None:
    _duty.set(name)  # (this task's own context: copied at its creation)
    try:
        await loop()
    except asyncio.CancelledError:
        raise
    except NotLeader as exc:  # deposed meanwhile: its cancel is on its way
        log.warning("duty %s stopped: %s", name, exc.message)
    except Exception:  # a duty loop that ends on a bug is logged; the others go on
        log.exception("duty %s failed", name)
