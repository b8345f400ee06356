"""Group commit: small writes submitted at the same time share one transaction.

Every heartbeat is a small write (the node's liveness, sometimes a few inventory rows). One
transaction each costs a thread hop, BEGIN, COMMIT and a disk flush: at 2,500 hosts beating
every 5 s that is 500 transactions a second, most of the server's time. `GroupCommit.run`
queues the write; one drainer takes everything queued (up to ``max_batch``) and runs it in a
single write transaction, each write in a savepoint of its own, then commits once.

What each submitter sees is what it would see alone:
- its result, once the transaction that holds its write has committed (never before);
- its own exception if its write raised (its savepoint is rolled back; the others commit);
- the commit's exception if the shared commit failed (then no write of the batch is stored).

Writes are stored in the order they were submitted, so a caller that awaits each write before
it submits the next (one agent session's heartbeats) keeps its order; within one transaction,
writes given an ``order`` key run sorted by it (heartbeats by node name: the rows of `nodes`
are then locked in the order every other transaction that updates several nodes locks them,
the health monitor's, so the two cannot deadlock on PostgreSQL).

With ``own_thread`` the transactions run in a thread of their own rather than in the event
loop's shared pool, which also runs every API request's database work: the agents' heartbeats
then never queue behind a burst of API calls (under which live nodes looked silent, and were
declared dead, when heartbeats shared the pool).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection

from bollard.server.ports import UnitOfWork

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 250  # writes per transaction at most (bounds one transaction's time)

Write = Callable[[Connection], Any]
WriteOutcome = tuple[bool, Any]  # (True, result) or (False, the exception it raised)


class GroupCommit:
    def __init__(
        self, work: UnitOfWork, *, max_batch: int = MAX_BATCH, own_thread: bool = False
    ) -> None:
        self.work = work
        self.max_batch = max_batch
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
            if own_thread
            else None
        )
        self._queue: list[tuple[Write, asyncio.Future[Any], str]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.transactions = 0  # transactions begun (tests and benchmarks read them)
        self.writes = 0

    async def run(self, write: Callable[[Connection], T], *, order: str = "") -> T:
        """Run ``write(conn)`` in a shared write transaction; return its result once that
        transaction has committed. Writes of one transaction run sorted by ``order``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, future, order))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[Write, asyncio.Future[Any], str]] = []
        try:
            while self._queue:
                batch = sorted(self._queue[: self.max_batch], key=lambda job: job[2])
                del self._queue[: self.max_batch]
                try:
                    outcomes = await self._run([w for w, _, _ in batch])
                # The commit (or BEGIN) failed: nothing was stored; each submitter is told.
                except Exception as exc:  # noqa: BLE001 - handed to every awaiting submitter
                    log.error("group commit of %d writes failed: %r", len(batch), exc)
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue  # its submitter was cancelled meanwhile
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                batch = []
        finally:
            # Cancelled (server shutdown): nobody may wait for an answer that never comes.
            for _, future, _ in [*batch, *self._queue]:
                if not future.done():
                    future.cancel()
            self._queue.clear()
            self._drainer = None

    async def close(self) -> None:
        """Stop the own thread (once the transaction it runs, if any, has ended)."""
        if self._thread is not None:
            await asyncio.to_thread(self._thread.shutdown, wait=True, cancel_futures=True)

    async def _run(self, writes: list[Write]) -> list[WriteOutcome]:
        if self._thread is None:
            return await self.work.run(self._write, writes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._write, writes)

    def _write(self, writes: list[Write]) -> list[WriteOutcome]:
        self.transactions += 1
        self.writes += len(writes)
        if len(writes) == 1:  # alone: its failure is its transaction's, no savepoint needed
            try:
                with self.work.write() as conn:
                    result = writes[0](conn)
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting submitter
                return [(False, exc)]
            return [(True, result)]
        outcomes: list[WriteOutcome] = []
        with self.work.write() as conn:
            for write in writes:
                try:
                    with conn.begin_nested():
                        outcomes.append((True, write(conn)))
                # Rolled back to its savepoint; the others go on.
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting submitter
                    outcomes.append((False, exc))
        return outcomes
