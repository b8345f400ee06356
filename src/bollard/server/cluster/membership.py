"""Membership: this server's row in `servers`, renewed every third of its time to live.

The row's `expires_at` is the server's membership lease. A peer that finds it expired takes
the server for dead and marks it `gone` (`reap`, a duty of the leader); a server that finds
its own row no longer up (or got no answer from the database for a whole time to live) knows
it may have been taken for dead: it is `lost`, tells its `on_lost` callbacks once, and keeps
trying to join again under a new id. Time for the lease comes from the database
(`servers.db_now`), so the servers' clocks need not agree.

On SQLite (`single`) one server runs at a time: `join` refuses while another one's row lives.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from bollard import __version__
from bollard.domain.errors import BollardError, Conflict
from bollard.domain.ids import new_id
from bollard.domain.protocol import PROTOCOL_VERSION
from bollard.domain.servers import ServerRecord, ServerState
from bollard.server.clock import Clock, Deadline
from bollard.server.ports import UnitOfWork
from bollard.store import commands, events, nodes, servers
from bollard.store.db import bound_idle_in_transaction

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

Callback = Callable[[], Awaitable[None] | None]

# Of a lease's ttl: how long a transaction that writes a lease row (a server's membership,
# the leader's lease) or checks the leader's FOR SHARE may sit idle before PostgreSQL ends
# its session. A server cut from the database mid-transaction (a partition: nothing closes)
# would otherwise hold the row's lock until the cut heals, and no peer could take the lease
# over or reap the server meanwhile; this way the lock is gone before the lease expires. A
# transaction of a live server is never idle that long: its leader would have been deposed
# (its own renewal waits for such a transaction).
IDLE_IN_LEASE_TRANSACTION = 0.5


def bound_lease_transaction(conn: Connection, ttl: float) -> None:
    """Bound the idle time of this transaction, which writes or locks a lease row of time to
    live `ttl` (`IDLE_IN_LEASE_TRANSACTION`; PostgreSQL only)."""
    bound_idle_in_transaction(conn, IDLE_IN_LEASE_TRANSACTION * ttl)


class ServerConflict(Conflict):
    """Another server runs on a database that takes one server only (SQLite)."""

    code = "server-conflict"


class OneCall:
    """Blocking database work awaited with a deadline, one call at a time. A call still
    running when its deadline passed (or when its caller was cancelled) is not started again
    beside itself: the next call waits for it first (a hung database does not fill the
    thread pool). With an `executor`, the calls run there, with the caller's context, and
    not in the event loop's shared pool, where a burst of API requests would delay them."""

    def __init__(
        self, work: UnitOfWork, clock: Clock, executor: ThreadPoolExecutor | None = None
    ) -> None:
        self.work = work
        self.clock = clock
        self.executor = executor
        self._busy: asyncio.Future[Any] | None = None

    async def run(self, timeout: float, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` through `work.run`; TimeoutError when it (or the abandoned
        call before it) did not end within `timeout` seconds."""
        deadline = Deadline.after(self.clock, timeout)
        if self._busy is not None:
            if not self._busy.done():  # (asyncio.wait neither raises its error nor cancels it)
                await self.clock.wait_for(asyncio.wait({self._busy}), deadline.remaining())
            self._busy = None  # its outcome was given up on; _settle has logged it
        future = asyncio.ensure_future(self._start(fn, *args, **kwargs))
        try:
            return await self.clock.wait_for(asyncio.shield(future), deadline.remaining())
        except (TimeoutError, asyncio.CancelledError):
            if not future.done():
                self._busy = future
                future.add_done_callback(_settle)
            raise

    async def _start(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self.executor is None:
            return await self.work.run(fn, *args, **kwargs)
        context = contextvars.copy_context()  # (a duty's mark goes with it: singletons.py)
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def attempt(
        self, what: str, timeout: float, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R | Failed:
        """As `run`, but a failure is logged (`what` failed: why) and returned as `Failed`."""
        try:
            return await self.run(timeout, fn, *args, **kwargs)
        except (SQLAlchemyError, OSError, BollardError) as exc:  # OSError: TimeoutError too
            log.warning("%s: %s", what, said(exc))
            return Failed(timed_out=isinstance(exc, TimeoutError))
        except Exception:  # a bug: logged with its trace; the loop that called goes on
            log.exception("%s", what)
            return Failed(timed_out=False)


@dataclass(frozen=True)
class Failed:
    """A database call that raised or did not end in time (and was logged)."""

    timed_out: bool  # it may still end, and its transaction commit


def _settle(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of a call given up on (so asyncio does not warn of it)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a database call given up on failed later: %s", future.exception())


async def notify(callbacks: Sequence[Callback], what: str, clock: Clock, timeout: float) -> None:
    """Call each callback in turn, each awaited for at most `timeout` seconds; one that fails
    or overruns is logged and the others still run."""
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await clock.wait_for(result, timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.error("a %s callback did not finish within %g s", what, timeout)
        except Exception:  # a callback's failure must not stop the loop that calls it
            log.exception("a %s callback failed", what)


class Membership:
    """This server's membership. `id` is its server id (a new one at each start, and at each
    re-join after it was lost); `lost` is set from the moment it may have been taken for dead
    until it has joined again."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        name: str,
        url: str,
        schema_revision: str,
        ttl: float,
        single: bool,
        local: bool = False,
        version: str = __version__,
        protocols: Sequence[int] = (PROTOCOL_VERSION,),
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"membership ttl must be positive, not {ttl}")
        self.work = work
        self.clock = clock
        self.name = name
        self.url = url
        self.schema_revision = schema_revision
        self.ttl = ttl
        self.single = single
        # The database is on this host, and so is every server of it (SQLite): a row whose
        # process is gone, or is this one (an earlier server of this process), is dead.
        self.local = local
        self.version = version
        self.protocols = sorted(protocols)
        self.id = new_id()
        self.record: ServerRecord | None = None  # as last registered
        self.lost = asyncio.Event()
        self._calls = OneCall(work, clock, executor)
        self._turn = asyncio.Lock()
        self._left = asyncio.Event()
        self._renewed = clock.monotonic()  # when the last renewal that succeeded began
        self._lost_callbacks: list[Callback] = []
        self._rejoined_callbacks: list[Callable[[ServerRecord], Awaitable[None] | None]] = []
        self._old_ids: list[str] = []  # ids this process held before (lost)
        # Where `reap` writes (the assembly gives the leader's fenced work: a duty).
        self.reap_work: UnitOfWork | None = None

    @property
    def tick(self) -> float:
        return self.ttl / 3

    def on_lost(self, cb: Callback) -> None:
        self._lost_callbacks.append(cb)

    def on_rejoined(self, cb: Callable[[ServerRecord], Awaitable[None] | None]) -> None:
        """`cb(record)` after the server joined again under a new id (`record.id`)."""
        self._rejoined_callbacks.append(cb)

    async def join(self) -> ServerRecord:
        """Register this server (ServerConflict when `single` and another server lives)."""
        async with self._turn:
            started = self.clock.monotonic()
            self.record = await self.work.run(self._register)
            self._renewed = started
        log.info("server %s (%s) joined as %s", self.name, self.url, self.id)
        return self.record

    def join_blocking(self) -> ServerRecord:
        """`join`, from a thread without an event loop (the server's start, before it serves:
        a refusal stops it before it listens)."""
        started = self.clock.monotonic()
        self.record = self._register()
        self._renewed = started
        log.info("server %s (%s) joined as %s", self.name, self.url, self.id)
        return self.record

    def leave_blocking(self) -> None:
        """`leave`, from a thread without an event loop (a start refused after joining)."""
        self._left.set()
        self._stop()

    async def run(self) -> None:
        """Renew the row every `ttl/3` s until `leave`; when lost, try to join again."""
        if self.record is None:
            raise RuntimeError("Membership.run() before join()")
        while not self._left.is_set():
            began = self.clock.monotonic()
            async with self._turn:
                if self._left.is_set():
                    return
                if self.lost.is_set():
                    await self._rejoin()
                else:
                    await self._renew()
            await self.clock.wait_event(
                self._left, max(0.0, began + self.tick - self.clock.monotonic())
            )

    async def leave(self) -> None:
        """A clean stop: the row becomes `stopped`, and `run` ends."""
        self._left.set()
        async with self._turn:
            if self.lost.is_set() or self.record is None:
                return
            what = f"server {self.id} could not record its stop (its row will expire)"
            if isinstance(await self._calls.attempt(what, self.ttl, self._stop), Failed):
                return
        log.info("server %s (%s) left", self.name, self.id)

    async def peers(self) -> list[ServerRecord]:
        """The live servers, this one included (when it lives), oldest first."""
        return await self.work.run(self._live)

    async def reap(self) -> list[ServerRecord]:
        """Mark the peers whose rows expired `gone`; returns them."""
        return await self.work.run(self._reap)

    async def reap_forever(self) -> None:
        """`reap` every `ttl/3` s until cancelled (a duty of the leader: its tasks and leases
        need not wait for a dead peer's row any longer than the row's time to live)."""
        while True:
            await self.clock.sleep(self.tick)  # a periodic loop
            await self._calls.attempt(
                f"server {self.id} could not reap dead peers", self.tick, self._reap
            )

    # -- the loop's steps -------------------------------------------------------------------

    async def _renew(self) -> None:
        started = self.clock.monotonic()
        left = self._renewed + self.ttl - started
        what = f"server {self.id} could not renew its membership"
        renewed = await self._calls.attempt(what, max(0.0, min(self.tick, left)), self._renew_row)
        if renewed is True:
            self._renewed = started
        elif renewed is False:
            await self._lose("its row is no longer up (a peer took it for dead)")
        elif self.clock.monotonic() - self._renewed >= self.ttl:
            await self._lose(f"no renewal reached the database for {self.ttl:g} s")

    async def _lose(self, why: str) -> None:
        log.error("server %s lost its membership: %s; it will join again", self.id, why)
        self.lost.set()
        self._old_ids.append(self.id)
        await notify(self._lost_callbacks, "membership lost", self.clock, self.ttl)

    async def _rejoin(self) -> None:
        self.id = new_id()
        started = self.clock.monotonic()
        what = f"server {self.name} could not join again"
        record = await self._calls.attempt(what, self.ttl, self._register)
        if isinstance(record, Failed):  # tried again at the next tick
            if record.timed_out:
                self._old_ids.append(self.id)  # its row may yet be written: marked gone then
            return
        self.record = record
        self._renewed = started
        self.lost.clear()
        log.warning("server %s (%s) joined again as %s", self.name, self.url, self.id)
        callbacks = [functools.partial(cb, record) for cb in self._rejoined_callbacks]
        await notify(callbacks, "membership rejoined", self.clock, self.ttl)

    # -- blocking database work -------------------------------------------------------------

    def _register(self) -> ServerRecord:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            now = servers.db_now(conn)
            settled = self._retire_old_rows(conn, now)
            self._retire_predecessors(conn, now)
            if self.single:
                mine = {self.id, *self._old_ids}
                others = [s for s in servers.live(conn, now) if s.id not in mine]
                if others:
                    raise ServerConflict(_conflict_message(others[0]))
            record = servers.register(
                conn,
                id=self.id,
                name=self.name,
                url=self.url,
                version=self.version,
                protocols=self.protocols,
                schema_revision=self.schema_revision,
                pid=os.getpid(),
                now=now,
                ttl=self.ttl,
            )
            message = f"server {self.name} joined ({self.url}, id {self.id})"
            events.add(
                conn,
                "server.joined",
                message,
                now,
                data={"server": self.id, "url": self.url, "version": self.version},
            )
        self._forget(settled)
        return record

    def _renew_row(self) -> bool:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            now = servers.db_now(conn)
            settled = self._retire_old_rows(conn, now)
            renewed = servers.renew(conn, self.id, now, self.ttl)
        self._forget(settled)
        return renewed

    def _retire_old_rows(self, conn: Connection, now: datetime) -> list[str]:
        """Mark `gone` the rows this process held before it was lost, once they expired (a
        renewal given up on may have extended one); returns the ids settled (to forget once
        the transaction has committed)."""
        settled: list[str] = []
        for old in list(self._old_ids):
            record = servers.get(conn, old)
            if record is None or record.state is not ServerState.UP:
                settled.append(old)
            elif servers.mark_gone(conn, old, now):
                settled.append(old)
                message = f"server {record.name} is gone (id {old}): it joined again as {self.id}"
                events.add(conn, "server.gone", message, now, data={"server": old})
        return settled

    def _retire_predecessors(self, conn: Connection, now: datetime) -> None:
        """Rows still up that are known dead now: this server's previous run (the same name:
        a server's name is unique in its cluster, host:port by default), and on SQLite (one
        host) a server whose process is gone. Their leases and tasks need not wait for them
        to expire (and need not be refused in single mode)."""
        for other in servers.live(conn, now):
            if other.id == self.id or other.id in self._old_ids:
                continue
            if other.name == self.name:
                why = f"it was this server's previous run: {self.name} started again"
            elif self.local and other.pid == os.getpid():
                why = "it was an earlier server of this process"
            elif self.local and not _process_alive(other.pid):
                why = f"its process (pid {other.pid}) is gone"
            else:
                continue
            if servers.retire(conn, other.id, now):
                message = f"server {other.name} is gone (id {other.id}): {why}"
                events.add(conn, "server.gone", message, now, data={"server": other.id})
                log.warning("%s", message)

    def _forget(self, settled: list[str]) -> None:
        self._old_ids = [old for old in self._old_ids if old not in settled]

    def _stop(self) -> None:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            now = servers.db_now(conn)
            servers.stop(conn, self.id, now)
            message = f"server {self.name} left (id {self.id})"
            events.add(conn, "server.left", message, now, data={"server": self.id})

    def _live(self) -> list[ServerRecord]:
        with self.work.read() as conn:
            return servers.live(conn, servers.db_now(conn))

    def _reap(self) -> list[ServerRecord]:
        gone: list[ServerRecord] = []
        with (self.reap_work or self.work).write() as conn:
            now = servers.db_now(conn)
            for peer in servers.expired(conn, now):
                if peer.id == self.id or not servers.mark_gone(conn, peer.id, now):
                    continue  # its own row is this server's renewal loop's business
                # Its agents' sessions are over (they dial another server), and what it had
                # sent them is for the command reconciler of their next server.
                held = nodes.disconnect_server(conn, peer.id, now)
                why = f"server {peer.name} was found gone"
                commands.interrupt_unfinished(conn, now, nodes=held, why=why)
                message = (
                    f"server {peer.name} is gone (id {peer.id}): its membership expired at "
                    f"{peer.expires_at.isoformat(timespec='seconds')}"
                )
                events.add(conn, "server.gone", message, now, data={"server": peer.id})
                gone.append(peer)
        for peer in gone:
            log.warning("server %s is gone (id %s): its membership expired", peer.name, peer.id)
        return gone


def _process_alive(pid: int) -> bool:
    """Whether a process of this host has that pid (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _conflict_message(other: ServerRecord) -> str:
    return (
        f"another server, {other.name} ({other.url}, pid {other.pid}), runs on this database "
        f"(its lease ends at {other.expires_at.isoformat(timespec='seconds')} unless renewed): "
        "SQLite runs one server; use PostgreSQL for several"
    )


def said(exc: BaseException) -> str:
    """An exception on one line (a timeout says so: its message is empty)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
