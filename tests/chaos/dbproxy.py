"""A TCP proxy between one server and PostgreSQL, which the nemesis can cut.

Each server of a three-server chaos run reaches the database through a proxy of its own
(its ``--db`` names the proxy's port), so one server can be cut from the database while it
keeps its agents, its clients and its peers, as in a network partition:

- ``blackhole``: nothing more crosses, either way, on the connections open or opened
  meanwhile; the bytes sent are held and delivered when the cut heals (a partition that
  ends before TCP gives up: late statements, late commits);
- ``reset``: every connection is aborted (RST) and new ones are refused until the cut heals
  (the database is unreachable: errors at once).

The proxy runs an asyncio loop in a thread of its own; ``cut`` and ``heal`` are called from
other threads and return once the loop has acted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 65536
CALL_TIMEOUT = 10.0  # for the loop to act on a call from another thread
MODES = ("blackhole", "reset")


class ProxyError(Exception):
    """The proxy did not start, or did not answer a call in time."""


@dataclass
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass
class DbProxy:
    upstream_host: str
    upstream_port: int
    name: str = "db-proxy"
    port: int = 0
    mode: str | None = None  # None: connected; else the cut's mode
    healed_at: float = 0.0  # monotonic: when the last cut healed
    connections: int = 0  # accepted so far (a check that traffic does go through it)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _flowing: asyncio.Event | None = None
    _open: dict[int, _Pair] = field(default_factory=dict)

    def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(CALL_TIMEOUT):
            raise ProxyError(f"{self.name} did not start within {CALL_TIMEOUT:g}s")
        if failure:
            raise ProxyError(f"{self.name} could not listen: {failure[0]}")
        return self.port

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            raise ProxyError(f"{self.name} is not running ({what})")

        async def run() -> None:
            fn()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            future.result(CALL_TIMEOUT)
        except TimeoutError as exc:
            raise ProxyError(f"{self.name}: {what} not done within {CALL_TIMEOUT:g}s") from exc

    def cut(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"cut mode {mode!r}: one of {MODES}")

        def act() -> None:
            assert self._flowing is not None
            self.mode = mode
            self._flowing.clear()
            if mode == "reset":
                for pair in list(self._open.values()):
                    pair.abort()

        self._call(f"cut ({mode})", act)

    def heal(self) -> None:
        def act() -> None:
            assert self._flowing is not None
            self.mode = None
            self.healed_at = time.monotonic()
            self._flowing.set()

        self._call("heal", act)

    def close(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            return

        def stop() -> None:
            for pair in list(self._open.values()):
                pair.abort()
            if self._server is not None:
                self._server.close()
            loop.stop()

        loop.call_soon_threadsafe(stop)
        self._thread.join(CALL_TIMEOUT)

    # -- the loop's side --------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled when the proxy closes: end quietly (asyncio's stream callback would
        # otherwise complain of a cancelled handler).
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        pair = _Pair(writer)
        key = id(pair)
        self._open[key] = pair
        try:
            try:
                up_reader, pair.upstream = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return  # the database is down: the client sees its connection closed
            if self.mode == "reset":  # cut while connecting
                return
            pumps = [
                asyncio.ensure_future(self._pump(reader, pair.upstream)),
                asyncio.ensure_future(self._pump(up_reader, writer)),
            ]
            try:
                # One side closed: the other is closed too (as the database or the server
                # would see it over a direct connection).
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            del self._open[key]
            pair.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(OSError):
            while True:
                data = await src.read(CHUNK)
                if not data:
                    return
                # Cut (blackhole): the chunk waits here, and nothing more is read, until the
                # cut heals.
                await self._flowing.wait()
                if dst.transport.is_closing():
                    return
                dst.write(data)
                await dst.drain()
