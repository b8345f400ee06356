"""Each unfinished task is run by one server, its owner (`tasks.owner`, a server id), and
taken over by another when that server is no longer up.

Fencing: every write a drive makes for its task (the engine's, a step's `ctx.write`, the
record of a command it sends) first `hold`s the task in the same transaction: the owner must
still be the id this process runs it under. The check locks the task's row, so a peer's
takeover waits for a write under way, and a write begun after the takeover is refused with
`TaskTakenOver`, which stops the drive without a further write: the task and its steps stay as
the new owner has them (the runner logs it and calls no crash handler).

Takeover: an orphan (an unfinished task whose owner is NULL, or a server whose row is missing
or not up) is taken by compare-and-swap, so of several servers trying one wins, and resumed
(`TaskEngine.resume_all` at start, `TaskTakeover` every few seconds after). A task this
process drives under an id it held before (it was taken for dead and joined again under a
new id) is taken in place: the row moves to the new id and so does the running drive.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from bollard.domain.errors import BollardError
from bollard.domain.models import Task
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import task_owners, tasks, tasks_hot

log = logging.getLogger(__name__)


class TaskTakenOver(Exception):
    """The task is no longer this process's to run: another server took it over. Not a
    BollardError, so no step's `except BollardError` takes it for a failure of its own."""

    def __init__(self, task_id: str, owner: str | None) -> None:
        self.task_id = task_id
        self.owner = owner  # the new owner, as read when the write was refused
        super().__init__(f"task {task_id} was taken over by server {owner or '(none)'}")


@dataclass
class Holding:
    """The server id(s) this process drives a task under: `owners[0]`, and while the task
    is taken in place (`take_orphans`), the new id too. One attribute, swapped whole: a
    worker thread reads it in one go."""

    task_id: str
    owners: tuple[str | None, ...]

    @property
    def owner(self) -> str | None:
        return self.owners[0]


def hold(conn: Connection, holding: Holding) -> bool:
    """In a write transaction, before anything else is written for the task: go on only while
    its owner is one this process drives it under (TaskTakenOver otherwise). Whether a cancel
    of the task was requested (read with the hold, in the same statement)."""
    cancel = tasks_hot.hold(conn, holding.task_id, holding.owners)
    if cancel is None:
        raise TaskTakenOver(holding.task_id, task_owners.owner_of(conn, holding.task_id))
    return cancel


async def take_orphans(
    work: UnitOfWork,
    me: str | None,
    running: Callable[[str], bool],
    holding_of: Callable[[str], Holding | None],
    start: Callable[[Task, str | None], None],
) -> list[str]:
    """Take the orphans as server `me`, each by compare-and-swap in a transaction of its own,
    and `start(task, me)` those taken; the ids taken. A task `running` here is not started
    again: it is taken in place when its owner is the id its drive runs under (`holding_of`).
    A task owned by `me` is no orphan of its own server's: it has just been created (and is
    being launched) while `me`'s row is written."""
    found = await work.run(_orphans, work)
    taken: list[str] = []
    for task_id, old in found:
        if me is not None and old == me:
            continue
        if running(task_id):
            holding = holding_of(task_id)
            if (
                me is not None
                and holding is not None
                and holding.owner == old
                and await _take_in_place(work, holding, me)
            ):
                taken.append(task_id)
            continue
        task = await work.run(_take, work, task_id, old, me)
        if task is None:
            continue
        if running(task_id):  # started meanwhile (owner None: the swap decides nothing)
            continue
        if old is not None:
            log.warning("task %s taken over from server %s by server %s", task_id, old, me)
        start(task, me)
        taken.append(task_id)
    return taken


async def _take_in_place(work: UnitOfWork, holding: Holding, me: str) -> bool:
    """Move a task driven here from the id its drive runs under to `me`. While the row moves
    the drive's writes pass under either id (both are this process's); after, under the
    one the row has (under both still if the swap's outcome is unknown: it raised)."""
    old = holding.owner
    holding.owners = (old, me)
    won = await work.run(_take, work, holding.task_id, old, me) is not None
    holding.owners = (me,) if won else (old,)
    if won:
        log.warning("task %s taken over in place: from server %s (this one before) to %s",
                    holding.task_id, old, me)  # fmt: skip
    return won


def _orphans(work: UnitOfWork) -> list[tuple[str, str | None]]:
    with work.read() as conn:
        return task_owners.orphans(conn)


def _take(work: UnitOfWork, task_id: str, old: str | None, new: str | None) -> Task | None:
    with work.write() as conn:
        if not task_owners.take(conn, task_id, old, new):
            return None
        return tasks.get(conn, task_id)


class TakesOrphans(Protocol):
    def take_orphans(self) -> Awaitable[list[str]]: ...


class TaskTakeover:
    """Takes over, every `interval` seconds, the tasks of servers no longer up (and the
    tasks this process drives under an id it held before), and resumes them."""

    def __init__(self, *, engine: TakesOrphans, clock: Clock, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"takeover interval must be positive, not {interval}")
        self.engine = engine
        self.clock = clock
        self.interval = interval

    async def pass_once(self) -> list[str]:
        """One pass: the ids of the tasks taken."""
        return await self.engine.take_orphans()

    async def run(self) -> None:
        """`pass_once` every `interval` seconds until cancelled; a pass that fails is logged
        and the next one tries again."""
        while True:
            try:
                await self.pass_once()
            except (SQLAlchemyError, OSError, BollardError) as exc:
                log.warning("task takeover pass failed: %s", " ".join(str(exc).split()))
            except Exception:  # a bug: logged with its trace; the next pass tries again
                log.exception("task takeover pass failed")
            await self.clock.sleep(self.interval)  # a periodic loop
