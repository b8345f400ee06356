"""The bus: wakes servers. A message on a named channel calls every handler subscribed to
that channel, in every server process (`PgBus`, on PostgreSQL's LISTEN/NOTIFY) or in this
one (`LocalBus`, for one server on SQLite).

The bus carries wake-ups, never data that must not be lost: what a message announces is in
the database already, and its handlers read it from there. Messages can be missed while a
connection is down; the `on_reconnect` handlers are called once it is back, so they can
look for what they missed.

Channel names are 1 to 40 characters of a-z and _ (on PostgreSQL the channel is
"bollard_" + name); a payload is at most 7,900 bytes of UTF-8 (NOTIFY takes under 8,000).
Each subscription has a queue and a task of its own that calls its handler with one payload
after the other, in the order they were published; a handler's exception is logged and
the next payload is handled as usual.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from sqlalchemy.engine import make_url

from bollard.domain.errors import TemporaryError
from bollard.server.clock import Clock, Deadline, LogBudget
from bollard.store.db import normalise_url

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[str], Awaitable[None] | None]
ReconnectHandler = Callable[[], Awaitable[None] | None]
Connection = psycopg.AsyncConnection[TupleRow]

PREFIX = "bollard_"  # of every channel on PostgreSQL
MAX_PAYLOAD = 7900  # bytes of UTF-8
MAX_QUEUED = 10_000  # payloads waiting for one handler; more are dropped (and logged)
_CHANNEL = re.compile(r"[a-z_]{1,40}")
# What a lost or unreachable database raises.
_FAILURES = (psycopg.Error, OSError, TimeoutError)


class BusClosed(TemporaryError):
    """The bus is not started, or closed: nothing is published."""

    code = "bus-closed"


class BusUnavailable(TemporaryError):
    """The bus's database did not answer: the message was not published."""

    code = "bus-unavailable"


def check_channel(channel: str) -> str:
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"bad bus channel {channel!r}: use 1 to 40 characters of a-z and _")
    return channel


def check_payload(payload: str) -> str:
    size = len(payload.encode())
    if size > MAX_PAYLOAD:
        raise ValueError(f"bus payload of {size} bytes is over the limit of {MAX_PAYLOAD}")
    return payload


class Bus(Protocol):
    async def start(self) -> None: ...

    # ValueError for a bad channel or a payload over MAX_PAYLOAD; BusClosed before start and
    # after close; BusUnavailable when the database does not answer (PgBus).
    async def publish(self, channel: str, payload: str) -> None: ...

    # Before or after start; a handler may be a plain function or a coroutine function.
    def subscribe(self, channel: str, handler: Handler) -> None: ...

    # Called after a lost connection is back: messages may have been missed meanwhile.
    def on_reconnect(self, handler: ReconnectHandler) -> None: ...

    # Stops delivery; cancels running handlers; returns within its deadline.
    async def close(self) -> None: ...


@dataclass(eq=False)
class _Subscription:
    channel: str
    handler: Handler
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED))
    task: asyncio.Task[None] | None = None


class _Handlers:
    """What both buses share: the subscriptions and their tasks, the reconnect handlers,
    and a close that stops every task of the bus within a deadline."""

    def __init__(self, clock: Clock, close_timeout: float) -> None:
        self.clock = clock
        self.close_timeout = close_timeout
        self._subscriptions: list[_Subscription] = []
        self._reconnect_handlers: list[ReconnectHandler] = []
        self._tasks: set[asyncio.Task[None]] = set()  # calls of the reconnect handlers
        self._started = False
        self._closed = False
        self._log_budget = LogBudget(clock)

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call `handler` with the payload of every message on `channel` (before or after
        `start`)."""
        subscription = _Subscription(check_channel(channel), handler)
        if self._closed:
            raise BusClosed("the bus is closed")
        self._subscriptions.append(subscription)
        if self._started:
            self._start_worker(subscription)
            self._subscribed(channel)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Call `handler` whenever a lost connection is back (messages may have been missed)."""
        self._reconnect_handlers.append(handler)

    def _subscribed(self, channel: str) -> None:
        """A subscription was added after start."""

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")
        if not self._started:
            raise BusClosed("the bus is not started")

    def _start_workers(self) -> None:
        for subscription in self._subscriptions:
            self._start_worker(subscription)

    def _start_worker(self, subscription: _Subscription) -> None:
        subscription.task = asyncio.get_running_loop().create_task(
            self._work(subscription), name=f"bus handler for {subscription.channel}"
        )

    def _deliver(self, channel: str, payload: str) -> None:
        for subscription in self._subscriptions:
            if subscription.channel != channel:
                continue
            try:
                subscription.queue.put_nowait(payload)
            except asyncio.QueueFull:
                held = self._log_budget.take(f"full {channel}")
                if held is not None:
                    log.warning(
                        "bus: a handler for %s is %d messages behind; dropped one%s",
                        channel,
                        MAX_QUEUED,
                        _held(held),
                    )

    async def _work(self, subscription: _Subscription) -> None:
        while not self._closed:
            payload = await subscription.queue.get()
            await self._call(subscription.channel, subscription.handler, payload)

    async def _call(self, what: str, handler: Callable[..., object], *args: str) -> None:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            held = self._log_budget.take(f"failed {what}")
            if held is not None:
                log.exception("bus: a handler for %s failed%s", what, _held(held))

    def _reconnected(self) -> None:
        if not self._reconnect_handlers or self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._call_reconnect_handlers(list(self._reconnect_handlers)),
            name="bus reconnect handlers",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_reconnect_handlers(self, handlers: list[ReconnectHandler]) -> None:
        for handler in handlers:
            await self._call("reconnect", handler)

    async def _stop_tasks(self, others: Iterable[asyncio.Task[None] | None]) -> None:
        """Cancel every task of the bus (but the one calling, when a handler closes the
        bus: it ends once its handler returns) and wait for them until the close deadline."""
        current = asyncio.current_task()
        tasks = [*others, *(s.task for s in self._subscriptions), *self._tasks]
        running = [t for t in tasks if t is not None and t is not current and not t.done()]
        for task in running:
            task.cancel()
        if not await _all_done(self.clock, running, self.close_timeout):
            stuck = sum(1 for task in running if not task.done())
            log.warning(
                "bus: %d task(s) still running %.1fs after close (a handler ignores cancellation)",
                stuck,
                self.close_timeout,
            )


class LocalBus(_Handlers):
    """The bus of one process: `publish` hands the payload to the subscriptions' tasks.
    Nothing is lost on the way, so the `on_reconnect` handlers are never called."""

    def __init__(self, clock: Clock, *, close_timeout: float = 5.0) -> None:
        super().__init__(clock, close_timeout)

    async def start(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed")
        if not self._started:
            self._started = True
            self._start_workers()

    async def publish(self, channel: str, payload: str) -> None:
        check_channel(channel)
        check_payload(payload)
        self._check_open()
        self._deliver(channel, payload)

    async def close(self) -> None:
        """Stop delivering; running handlers are cancelled (waited for until the deadline)."""
        if self._closed:
            return
        self._closed = True
        await self._stop_tasks([])


class PgBus(_Handlers):
    """The bus of several servers on one PostgreSQL database.

    One connection LISTENs on the subscribed channels (and on a channel of its own, which
    this bus pings every `ping_interval` s: no answer within `ping_timeout` s and the
    connection is taken for lost); another sends the NOTIFYs. A lost listen connection is
    opened again with backoff and jitter (a deadline on each attempt), then the
    `on_reconnect` handlers are called. A subscription made after `start` is listened to
    within a moment (messages before then are missed, as after a reconnect).
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        close_timeout: float = 5.0,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(clock, close_timeout)
        self._dsn = dsn
        self.where = describe_dsn(dsn)  # for messages: no user, no password
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        # This bus's own channel (no "bollard_" prefix, so no subscription can share it).
        self._own = f"bollardbus_{secrets.token_hex(6)}"
        self._listen: Connection | None = None
        self._listened: set[str] = set()  # channels LISTENed on self._listen
        self._notify: Connection | None = None
        self._notify_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()  # ping now (a subscription waits to be listened to)
        self._pong = asyncio.Event()  # a ping came back on the listen connection

    @property
    def listen_pid(self) -> int | None:
        """The backend pid of the listen connection (None while there is none)."""
        conn = self._listen
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def start(self) -> None:
        """Open the listen connection (BusUnavailable when the database does not answer)."""
        if self._closed:
            raise BusClosed("the bus is closed")
        if self._started:
            return
        try:
            conn = await self._open_listen()
        except _FAILURES as exc:
            raise BusUnavailable(f"cannot listen on {self.where}: {_one_line(exc)}") from None
        self._started = True
        self._listen = conn  # closed by close() even if the listener never got to run
        self._start_workers()
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen_loop(conn), name="bus listener")
        self._pinger = loop.create_task(self._ping_loop(), name="bus pinger")

    async def publish(self, channel: str, payload: str) -> None:
        """NOTIFY every subscriber of `channel` (BusUnavailable when the database does not
        answer within `publish_timeout`)."""
        check_channel(channel)
        check_payload(payload)
        self._check_open()
        await self._publish(PREFIX + channel, payload)

    async def close(self) -> None:
        """Stop listening and delivering; running handlers are cancelled (waited for until
        the deadline); the connections are closed."""
        if self._closed:
            return
        self._closed = True
        await self._stop_tasks([self._listener, self._pinger])
        for conn in (self._listen, self._notify):
            if conn is not None:
                await _close_quietly(conn)
        self._listen = self._notify = None

    def _subscribed(self, channel: str) -> None:
        self._kick.set()  # the ping makes the listener stop waiting and LISTEN

    async def _connect(self, timeout: float) -> Connection:
        """A new connection within `timeout` s (TimeoutError after it). One that comes
        although its caller gave up (cancelled as it was made) is closed."""
        timeout = min(timeout, self.connect_timeout)
        # TCP keepalives: a database gone silently is noticed within about half a minute.
        connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                application_name="bollard bus",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
            )
        )
        try:
            finished = await _all_done(self.clock, [connecting], timeout)
        except asyncio.CancelledError:
            finished = False
            raise
        finally:
            if not finished:
                connecting.add_done_callback(_close_abandoned)
                connecting.cancel()
        if not finished:
            raise TimeoutError(f"no connection within {timeout:g}s")
        return connecting.result()

    async def _open_listen(self) -> Connection:
        conn = await self._connect(self.connect_timeout)
        try:
            self._listened = set()
            await self._listen_to(conn, [self._own])
            await self._listen_to(conn, self._unlistened())
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn

    def _unlistened(self) -> list[str]:
        wanted = {PREFIX + s.channel for s in self._subscriptions}
        return sorted(wanted - self._listened)

    async def _listen_to(self, conn: Connection, channels: list[str]) -> None:
        for channel in channels:
            query = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
            await self._bounded(conn, conn.execute(query), self.connect_timeout)
            self._listened.add(channel)

    async def _listen_loop(self, conn: Connection) -> None:
        """Deliver what the listen connection receives; open it again whenever it is lost."""
        while True:
            self._listen = conn
            try:
                # Ends only by an error: the pinger shuts a connection gone silent down.
                await self._receive(conn)
            except _FAILURES as exc:
                log.warning("bus: lost the listen connection to %s: %s", self.where, _one_line(exc))
            except Exception:
                log.exception("bus: the listener failed on %s", self.where)
            finally:
                self._listen = None
                await _close_quietly(conn)
            conn = await self._reopen()
            log.info("bus: listening again on %s", self.where)
            self._reconnected()

    async def _receive(self, conn: Connection) -> None:
        while True:
            await self._listen_to(conn, self._unlistened())
            async with aclosing(conn.notifies()) as notifies:
                async for note in notifies:
                    if note.channel == self._own:
                        self._pong.set()
                        if self._unlistened():
                            break  # to LISTEN (what arrives meanwhile waits in psycopg)
                    elif note.channel.startswith(PREFIX):
                        self._deliver(note.channel.removeprefix(PREFIX), note.payload)

    async def _reopen(self) -> Connection:
        delay = self.backoff_initial
        while True:
            await self.clock.sleep(self._rng.uniform(delay / 2, delay))  # backoff
            try:
                return await self._open_listen()
            except _FAILURES as exc:
                log.warning("bus: cannot listen on %s: %s", self.where, _one_line(exc))
            delay = min(delay * 2, self.backoff_max)

    async def _ping_loop(self) -> None:
        """Every `ping_interval` s (or at once when kicked), NOTIFY this bus's own channel
        and expect it back on the listen connection within `ping_timeout` s."""
        while True:
            await self.clock.wait_event(self._kick, self.ping_interval)
            self._kick.clear()
            conn = self._listen
            if conn is None:
                continue  # being opened again
            self._pong = asyncio.Event()
            try:
                await self._publish(self._own, "ping")
            except BusUnavailable:
                continue  # the notify connection failed: that says nothing of the listen one
            answered = await self.clock.wait_event(self._pong, self.ping_timeout)
            if not answered and self._listen is conn:
                log.warning(
                    "bus: no answer on the listen connection to %s within %gs",
                    self.where,
                    self.ping_timeout,
                )
                _shut_down(conn)  # its receiver fails; the listener opens a new connection

    async def _publish(self, channel: str, payload: str) -> None:
        try:
            await self._send(channel, payload)
        except _FAILURES as exc:
            raise BusUnavailable(f"cannot publish on {self.where}: {_one_line(exc)}") from None

    async def _send(self, channel: str, payload: str) -> None:
        """NOTIFY on the notify connection, within `publish_timeout` s; once more on a new
        connection when the one kept since the last message was lost meanwhile."""
        deadline = Deadline.after(self.clock, self.publish_timeout)
        await self.clock.wait_for(self._notify_lock.acquire(), deadline.remaining())
        try:
            for attempt in range(2):
                conn = self._notify
                fresh = conn is None or conn.closed
                if conn is None or fresh:
                    conn = self._notify = await self._connect(deadline.remaining())
                notify = conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                try:
                    await self._bounded(conn, notify, deadline.remaining())
                    return
                except BaseException as exc:
                    self._notify = None
                    await _close_quietly(conn)
                    lost = isinstance(exc, psycopg.OperationalError)
                    if not lost or fresh or attempt or self._closed:
                        raise
        finally:
            self._notify_lock.release()

    async def _bounded(self, conn: Connection, operation: Awaitable[T], timeout: float) -> T:
        """`operation` on `conn` within `timeout` s (TimeoutError after it).

        psycopg answers the cancellation of a running query by cancelling it on the server
        and waiting for that: seconds more on a connection gone silent. So the operation is
        never cancelled: when it is late (or its caller is cancelled) the connection's socket
        is shut down, which makes it fail at once."""
        task = asyncio.ensure_future(operation)
        task.add_done_callback(_retrieve)
        try:
            finished = await _all_done(self.clock, [task], timeout)
        except asyncio.CancelledError:
            _shut_down(conn)
            raise
        if not finished:
            _shut_down(conn)
            raise TimeoutError(f"no answer within {timeout:g}s")
        return task.result()


def libpq_dsn(db_url: str) -> str:
    """The libpq URL (for psycopg) of a SQLAlchemy PostgreSQL URL."""
    url = make_url(normalise_url(db_url))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def describe_dsn(dsn: str) -> str:
    """host:port/database of a libpq DSN, for messages (no user, no password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or '?'}"


def bus_for(db_url: str, clock: Clock) -> Bus:
    """A PgBus for a PostgreSQL URL, else a LocalBus (one server on SQLite)."""
    if make_url(normalise_url(db_url)).get_backend_name() == "postgresql":
        return PgBus(libpq_dsn(db_url), clock=clock)
    return LocalBus(clock)


async def _all_done(clock: Clock, tasks: list[asyncio.Task[T]], timeout: float) -> bool:
    """Wait until every task is done, at most `timeout` s (without cancelling any)."""
    pending = [task for task in tasks if not task.done()]
    if not pending:
        return True
    done = asyncio.Event()

    def finished(_: asyncio.Task[T]) -> None:
        if all(task.done() for task in pending):
            done.set()

    for task in pending:
        task.add_done_callback(finished)
    return await clock.wait_event(done, timeout)


def _shut_down(conn: Connection) -> None:
    """Shut the connection's socket down both ways, leaving its descriptor open (psycopg
    watches it): whatever waits on the connection fails at once; `close` releases it."""
    if conn.closed:
        return
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except _FAILURES as exc:
        log.debug("bus: shutting a connection down: %s", _one_line(exc))


def _close_abandoned(task: asyncio.Future[Connection]) -> None:
    if not task.cancelled() and task.exception() is None:
        asyncio.get_running_loop().create_task(_close_quietly(task.result()))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's exception as seen (the caller that stopped waiting has reported it)."""
    if not task.cancelled():
        task.exception()


async def _close_quietly(conn: Connection) -> None:
    try:
        await conn.close()
    except _FAILURES as exc:
        log.debug("bus: closing a connection: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _held(held: int) -> str:
    return f" ({held} more not logged)" if held else ""
