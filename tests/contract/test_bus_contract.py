"""Contract suite for the bus (bollard.server.cluster.bus), run against LocalBus and PgBus.

Each test takes two buses, `a` and `b`, as two servers would have them: two PgBus instances
on one PostgreSQL database (skipped, with the reason, where none answers); a LocalBus serves
one process, so there `a` and `b` are the same bus. After the common contract come PgBus's
own promises: it listens again after its connection is killed or goes silent, and tells its
`on_reconnect` handlers; it refuses to start on a database that does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import psycopg
import pytest

from bollard.server.clock import SystemClock
from bollard.server.cluster.bus import (
    MAX_PAYLOAD,
    BusClosed,
    BusUnavailable,
    LocalBus,
    PgBus,
    bus_for,
    libpq_dsn,
)
from tests.support.databases import postgres_database, postgres_unavailable

T = TypeVar("T")
AnyBus = LocalBus | PgBus

WAIT = 10.0  # for what should happen: it normally takes milliseconds
BACKENDS = ["local", pytest.param("postgresql", marks=pytest.mark.postgres)]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """A libpq URL of a PostgreSQL database of this module's own (channels are per database)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_database() as url:
        yield libpq_dsn(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for LocalBus, else the DSN for PgBus."""
    if request.param == "local":
        return None
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


def make_bus(dsn: str | None, **options: Any) -> AnyBus:
    close_timeout = options.pop("close_timeout", 5.0)
    if dsn is None:
        return LocalBus(SystemClock(), close_timeout=close_timeout)
    return PgBus(dsn, clock=SystemClock(), close_timeout=close_timeout, **options)


@asynccontextmanager
async def two_buses(dsn: str | None, **options: Any) -> AsyncIterator[tuple[AnyBus, AnyBus]]:
    """Two buses, not started yet (the same one for LocalBus); both closed afterwards."""
    a = make_bus(dsn, **options)
    b = a if dsn is None else make_bus(dsn, **options)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def start(*buses: AnyBus) -> None:
    for bus in buses:
        await bus.start()


class Inbox:
    """A handler that keeps the payloads it is given; `wait(n)` until it has n of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.tasks: list[asyncio.Task[Any] | None] = []
        self._changed = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.items.append(payload)
        self.tasks.append(asyncio.current_task())
        self._changed.set()

    async def wait(self, count: int, timeout: float = WAIT) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.items) < count:
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"got {self.items} within {timeout}s, wanted {count}")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return list(self.items)


async def wait_event(event: asyncio.Event, what: str, timeout: float = WAIT) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout}s") from None


# --- the contract, on every bus -------------------------------------------------------------


def test_every_subscriber_of_the_channel_gets_each_message(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            first, second, peer = Inbox(), Inbox(), Inbox()
            a.subscribe("wake", first)
            a.subscribe("wake", second)
            b.subscribe("wake", peer)
            await start(a, b)
            await a.publish("wake", "from a")
            await b.publish("wake", "from b")
            expected = ["from a", "from b"]
            assert await first.wait(2) == expected  # the publisher's own process too
            assert await second.wait(2) == expected
            assert await peer.wait(2) == expected
            publisher = asyncio.current_task()
            assert publisher not in first.tasks  # handlers run in tasks of their own

    run(main())


def test_messages_arrive_in_the_order_they_were_published(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            here, there = Inbox(), Inbox()
            seen_async: list[str] = []

            async def slow(payload: str) -> None:
                await asyncio.sleep(0)  # yields to the loop between payloads
                seen_async.append(payload)
                here(payload)

            a.subscribe("order", slow)
            b.subscribe("order", there)
            await start(a, b)
            sent = [f"m{i}" for i in range(100)]
            for payload in sent:
                await a.publish("order", payload)
            assert await here.wait(100) == sent
            assert await there.wait(100) == sent
            assert seen_async == sent

    run(main())


def test_other_channels_are_not_woken(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            alpha, beta, longer = Inbox(), Inbox(), Inbox()
            a.subscribe("alpha", alpha)
            b.subscribe("beta", beta)
            b.subscribe("alpha_x", longer)
            await start(a, b)
            await a.publish("beta", "for beta")
            await a.publish("alpha_x", "for alpha_x")
            await a.publish("alpha", "for alpha")
            assert await beta.wait(1) == ["for beta"]
            assert await longer.wait(1) == ["for alpha_x"]
            # Published last by the same publisher: anything misrouted to alpha came first.
            assert await alpha.wait(1) == ["for alpha"]

    run(main())


def test_payloads_up_to_the_limit_arrive_whole(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            inbox = Inbox()
            b.subscribe("big", inbox)
            await start(a, b)
            ascii_max = "x" * MAX_PAYLOAD
            multibyte_max = "é" * (MAX_PAYLOAD // 2)  # two bytes each
            await a.publish("big", ascii_max)
            await a.publish("big", multibyte_max)
            with pytest.raises(ValueError, match="over the limit"):
                await a.publish("big", ascii_max + "x")
            with pytest.raises(ValueError, match="over the limit"):
                await a.publish("big", multibyte_max + "é")  # fewer characters, more bytes
            await a.publish("big", "end")
            assert await inbox.wait(3) == [ascii_max, multibyte_max, "end"]

    run(main())


@pytest.mark.parametrize("channel", ["", "Wake", "a-b", "a1", "café", "x" * 41, "bollard.x"])
def test_bad_channel_names_are_refused(backend: str | None, channel: str) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, _):
            with pytest.raises(ValueError, match="bad bus channel"):
                a.subscribe(channel, Inbox())
            await start(a)
            with pytest.raises(ValueError, match="bad bus channel"):
                await a.publish(channel, "x")
            longest = Inbox()
            a.subscribe("x" * 40, longest)
            a.subscribe("snake_case", Inbox())

    run(main())


def test_a_failing_handler_neither_stops_itself_nor_others(
    backend: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            calls, good = Inbox(), Inbox()

            def failing(payload: str) -> None:
                calls(payload)
                raise RuntimeError(f"handler broke on {payload}")

            async def failing_async(payload: str) -> None:
                raise RuntimeError(f"async handler broke on {payload}")

            b.subscribe("fragile", failing)
            b.subscribe("fragile", failing_async)
            b.subscribe("fragile", good)
            await start(a, b)
            for payload in ["one", "two", "three"]:
                await a.publish("fragile", payload)
            assert await good.wait(3) == ["one", "two", "three"]
            assert await calls.wait(3) == ["one", "two", "three"]

    with caplog.at_level(logging.ERROR, logger="bollard.server.cluster.bus"):
        run(main())
    failures = [r for r in caplog.records if "a handler for fragile failed" in r.getMessage()]
    assert failures and all(r.exc_info for r in failures)


def test_nothing_is_published_before_start_or_after_close(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            with pytest.raises(BusClosed, match="not started"):
                await a.publish("wake", "early")
            here, there = Inbox(), Inbox()
            a.subscribe("wake", here)
            b.subscribe("wake", there)
            await start(a, b)
            await b.close()
            with pytest.raises(BusClosed, match="closed"):
                await b.publish("wake", "late")
            with pytest.raises(BusClosed, match="closed"):
                b.subscribe("wake", Inbox())
            with pytest.raises(BusClosed, match="closed"):
                await b.start()
            if a is not b:
                await a.publish("wake", "after b closed")
                assert await here.wait(1) == ["after b closed"]
                assert there.items == []  # b delivers nothing once closed

    run(main())


def test_close_cancels_running_handlers_and_drops_queued_messages(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            started, cancelled, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
            calls: list[str] = []

            async def stuck(payload: str) -> None:
                calls.append(payload)
                started.set()
                try:
                    await never.wait()
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            b.subscribe("busy", stuck)
            await start(a, b)
            await a.publish("busy", "first")
            await a.publish("busy", "second")
            await wait_event(started, "the handler started")
            began = time.monotonic()
            await b.close()
            assert time.monotonic() - began < 5.0
            assert cancelled.is_set()
            assert calls == ["first"]

    run(main())


def test_close_returns_by_its_deadline_when_a_handler_ignores_cancellation(
    backend: str | None,
) -> None:
    async def main() -> None:
        async with two_buses(backend, close_timeout=0.5) as (a, b):
            started, release = asyncio.Event(), asyncio.Event()

            async def stubborn(payload: str) -> None:
                started.set()
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    await asyncio.wait_for(release.wait(), WAIT)  # keeps running

            b.subscribe("busy", stubborn)
            await start(a, b)
            await a.publish("busy", "go")
            await wait_event(started, "the handler started")
            began = time.monotonic()
            await b.close()
            took = time.monotonic() - began
            release.set()
            assert 0.4 < took < 3.0

    run(main())


def test_a_handler_may_close_its_own_bus(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            closed = asyncio.Event()

            async def closer(payload: str) -> None:
                await b.close()
                closed.set()

            b.subscribe("stop", closer)
            await start(a, b)
            await a.publish("stop", "now")
            await wait_event(closed, "the handler closed the bus")
            with pytest.raises(BusClosed):
                await b.publish("stop", "again")

    run(main())


def test_a_subscription_made_after_start_gets_messages(backend: str | None) -> None:
    async def main() -> None:
        async with two_buses(backend) as (a, b):
            await start(a, b)
            inbox = Inbox()
            b.subscribe("late", inbox)
            # PgBus listens on it within a moment: what comes before may be missed.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while not inbox.items and loop.time() < deadline:
                await a.publish("late", "probe")
                with suppress(AssertionError):
                    await inbox.wait(1, timeout=0.2)
            assert inbox.items, "the late subscription got nothing"
            count = len(inbox.items)
            await a.publish("late", "then")
            assert (await inbox.wait(count + 1))[-1] == "then"

    run(main())


# --- bus_for --------------------------------------------------------------------------------


def test_bus_for_picks_the_bus_of_the_database() -> None:
    clock = SystemClock()
    assert isinstance(bus_for("sqlite:////tmp/x/bollard.db", clock), LocalBus)
    bus = bus_for("postgresql+psycopg://bollard:s3cret@db.example:5433/bollard", clock)
    assert isinstance(bus, PgBus)
    assert bus.where == "db.example:5433/bollard"
    assert isinstance(bus_for("postgresql://bollard@db.example/bollard", clock), PgBus)


def test_libpq_dsn_keeps_the_connection_parameters() -> None:
    url = "postgresql+psycopg://bollard:s3cret@db.example:5433/bollard?connect_timeout=3"
    assert libpq_dsn(url) == "postgresql://bollard:s3cret@db.example:5433/bollard?connect_timeout=3"
    assert libpq_dsn("postgresql://u@h/d") == "postgresql://u@h/d"


# --- PgBus's own promises -------------------------------------------------------------------


def test_pgbus_refuses_to_start_on_a_database_that_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = "postgresql://bollard:s3cret@127.0.0.1:1/nothing?connect_timeout=2"

    async def main() -> BusUnavailable:
        bus = PgBus(dsn, clock=SystemClock(), connect_timeout=3.0)
        try:
            with pytest.raises(BusUnavailable) as raised:
                await bus.start()
            with pytest.raises(BusClosed, match="not started"):
                await bus.publish("wake", "x")
            return raised.value
        finally:
            await bus.close()

    with caplog.at_level(logging.DEBUG, logger="bollard.server.cluster.bus"):
        error = run(main(), timeout=15.0)
    assert str(error).startswith("cannot listen on 127.0.0.1:1/nothing: ")
    assert "\n" not in str(error)
    assert error.retryable
    assert "s3cret" not in caplog.text + str(error)


async def terminate(dsn: str, where: str, *params: Any) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cursor = await admin.execute(
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {where}",
            params,
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


def reconnect_recorder() -> tuple[asyncio.Event, Callable[[], Awaitable[None]]]:
    event = asyncio.Event()

    async def handler() -> None:
        event.set()

    return event, handler


def test_pgbus_listens_again_after_its_connection_is_killed(pg_dsn: str) -> None:
    async def main() -> None:
        async with two_buses(pg_dsn) as (a, b):
            assert isinstance(b, PgBus)
            inbox = Inbox()
            b.subscribe("wake", inbox)

            def broken() -> None:
                raise RuntimeError("a reconnect handler broke")

            b.on_reconnect(broken)  # its failure does not keep the next from being called
            back, handler = reconnect_recorder()
            b.on_reconnect(handler)
            await start(a, b)
            await a.publish("wake", "before")
            assert await inbox.wait(1) == ["before"]
            old_pid = b.listen_pid
            assert old_pid is not None
            assert await terminate(pg_dsn, "pid = %s", old_pid) == 1
            await wait_event(back, "on_reconnect called")
            assert b.listen_pid not in (None, old_pid)
            await a.publish("wake", "after")
            assert await inbox.wait(2) == ["before", "after"]

    run(main())


def test_pgbus_publishes_again_after_its_connections_are_killed(pg_dsn: str) -> None:
    async def main() -> None:
        async with two_buses(pg_dsn) as (a, b):
            inbox = Inbox()
            b.subscribe("wake", inbox)
            a_back, a_handler = reconnect_recorder()
            b_back, b_handler = reconnect_recorder()
            a.on_reconnect(a_handler)
            b.on_reconnect(b_handler)
            await start(a, b)
            await a.publish("wake", "before")  # a's notify connection is open now
            assert await inbox.wait(1) == ["before"]
            killed = await terminate(
                pg_dsn, "application_name = 'bollard bus' AND datname = current_database()"
            )
            assert killed >= 3  # a's two connections, b's listen one (and b's pinger's)
            await wait_event(a_back, "a's on_reconnect called")
            await wait_event(b_back, "b's on_reconnect called")
            await a.publish("wake", "after")  # on a new notify connection, without an error
            assert await inbox.wait(2) == ["before", "after"]

    run(main())


class FreezingProxy:
    """A TCP proxy to PostgreSQL whose `freeze()` makes the connections it carries silent
    without closing them (as a network partition does); new connections pass."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.frozen: list[asyncio.Event] = []
        self.stopped = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        for event in self.frozen:
            event.set()

    async def close(self) -> None:
        self.stopped.set()
        if self.server is not None:
            self.server.close()
        if self.serving:
            await asyncio.wait_for(asyncio.wait(self.serving), WAIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(OSError):
                while data := await src.read(65536):
                    if frozen.is_set():
                        await self.stopped.wait()  # held until the proxy stops
                        return
                    dst.write(data)
                    await dst.drain()

        loop = asyncio.get_running_loop()
        pipes = [
            loop.create_task(pipe(reader, up_writer)),
            loop.create_task(pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.close()  # the other pipe reads the end of its stream, or was frozen
            up_writer.close()
            await asyncio.wait(pipes)


def test_pgbus_notices_a_silent_listen_connection(pg_dsn: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    host, port = str(params.get("host", "127.0.0.1")), int(params.get("port") or 5432)

    async def main() -> None:
        proxy = FreezingProxy(host, port)
        proxy_port = await proxy.start()
        dsn = psycopg.conninfo.make_conninfo(pg_dsn, host="127.0.0.1", port=proxy_port)
        options = {"ping_interval": 0.3, "ping_timeout": 1.0, "publish_timeout": 1.0}
        try:
            async with two_buses(dsn, **options) as (a, b):
                inbox = Inbox()
                b.subscribe("wake", inbox)
                back, handler = reconnect_recorder()
                b.on_reconnect(handler)
                await start(a, b)
                await a.publish("wake", "before")
                assert await inbox.wait(1) == ["before"]
                proxy.freeze()  # every connection open now hangs, nothing is closed
                await wait_event(back, "on_reconnect after a silent connection", timeout=15.0)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while len(inbox.items) < 2:  # a's publishes fail until it has a new connection
                    assert loop.time() < deadline, "a never published again"
                    with suppress(BusUnavailable):
                        await a.publish("wake", "after")
                        await inbox.wait(2)
                assert inbox.items == ["before", "after"]
        finally:
            await proxy.close()

    run(main())
