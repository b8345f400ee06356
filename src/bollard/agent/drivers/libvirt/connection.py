"""The connection to one libvirt daemon: opened lazily, reopened after it is lost, and every
call made in a thread with a deadline so that a stuck daemon never blocks the agent.

When libvirtd restarts (or the socket breaks, or keepalive finds it dead), libvirt closes
the connection and calls the close callback (which signals a possible state change); the
next call finds it dead (``isAlive``) and opens a new one. A
call that fails because the connection broke raises DriverTemporary (retry later); the
reopened connection re-registers the lifecycle events, and a state change is signalled,
as anything may have happened while no one was listening.

Each call runs in its own daemon thread rather than in asyncio's default executor: a call
that outlives its deadline (libvirt's keepalive ends it eventually) can neither starve the
agent's other thread work nor hold up the process when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from bollard.agent.drivers.libvirt.binding import load_libvirt
from bollard.agent.drivers.libvirt.errors import is_connection_lost, map_error
from bollard.agent.drivers.libvirt.events import (
    ChangeNotifier,
    ensure_event_loop,
    unwatch_connection,
    watch_connection,
)
from bollard.domain.errors import DriverTemporary

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 60.0
KEEPALIVE_INTERVAL = 5  # seconds between keepalive probes on remote connections
KEEPALIVE_COUNT = 3  # unanswered probes before the connection is declared dead


class Connection:
    def __init__(
        self,
        uri: str,
        *,
        notifier: ChangeNotifier | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if call_timeout <= 0:
            raise ValueError("libvirt call timeout must be > 0")
        self.uri = uri
        self.call_timeout = call_timeout
        self.notifier = notifier or ChangeNotifier()
        self._lock = threading.Lock()
        self._conn: Any = None
        self._callback_ids: list[int] = []
        self._dead: list[tuple[Any, list[int]]] = []  # closed by libvirt, to release
        self._opened = 0

    @property
    def lib(self) -> Any:
        return load_libvirt()

    # calls

    async def call(self, action: str, fn: Callable[[Any], T], timeout: float | None = None) -> T:
        """``fn(conn)`` in a thread, within ``timeout`` (default: the call timeout).

        libvirt errors become Driver* errors naming ``action``; a broken connection is
        dropped (reopened by the next call). Past the deadline: DriverTemporary (the call
        may still complete in its thread).
        """
        self.notifier.bind(asyncio.get_running_loop())
        limit = self.call_timeout if timeout is None else timeout
        return await in_thread(f"{action} ({self.uri})", lambda: self._run(action, fn), limit)

    def _run(self, action: str, fn: Callable[[Any], T]) -> T:
        lib = self.lib
        conn = self._get()
        try:
            return fn(conn)
        except lib.libvirtError as exc:
            if is_connection_lost(exc):
                self._drop(conn)
            raise map_error(exc, action) from None

    # the connection

    def _get(self) -> Any:
        lib = self.lib
        with self._lock:
            self._release_dead()
            conn = self._conn
            if conn is not None:
                try:
                    alive = bool(conn.isAlive())
                except lib.libvirtError:
                    alive = False
                if alive:
                    return conn
                self._conn = None
                self._dead.append((conn, self._callback_ids))
                self._release_dead()
            ensure_event_loop(lib)
            try:
                conn = lib.open(self.uri)
            except lib.libvirtError as exc:
                raise map_error(exc, f"connect to {self.uri}") from None
            if conn is None:
                raise DriverTemporary(f"libvirt: cannot connect to {self.uri}")
            self._setup(lib, conn)
            self._conn = conn
            self._opened += 1
            reopened = self._opened > 1
        if reopened:
            log.info("libvirt: reconnected to %s", self.uri)
            self.notifier.fire()  # anything may have changed while disconnected
        return conn

    def _setup(self, lib: Any, conn: Any) -> None:
        with contextlib.suppress(lib.libvirtError):  # local drivers have no keepalive
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        try:
            conn.registerCloseCallback(self._closed_by_libvirt, None)
        except lib.libvirtError as exc:
            log.debug("libvirt: no close callback on %s: %s", self.uri, exc)
        self._callback_ids = watch_connection(lib, conn, self.notifier.fire)

    def _closed_by_libvirt(self, _conn: Any, reason: int, _opaque: Any) -> None:
        """libvirt's close callback (in its event thread): the daemon went away.

        It takes no lock: libvirt holds its own while calling it, and a thread releasing
        the connection under ``_lock`` may be waiting for that one. The next call finds
        the connection dead (``isAlive``) and opens a new one."""
        log.warning("libvirt: connection to %s closed (reason %s)", self.uri, reason)
        self.notifier.fire()

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
                self._dead.append((conn, self._callback_ids))
                self._callback_ids = []
                self._release_dead()

    def _release_dead(self) -> None:
        """Release connections libvirt closed (never from within libvirt's callbacks)."""
        lib = self.lib
        dead, self._dead = self._dead, []
        for conn, callback_ids in dead:
            unwatch_connection(lib, conn, callback_ids)
            for release in (conn.unregisterCloseCallback, conn.close):
                with contextlib.suppress(lib.libvirtError):  # already gone
                    release()

    async def close(self) -> None:
        """Close the connection (a later call opens a new one)."""

        def close_now() -> None:
            with self._lock:
                if self._conn is not None:
                    self._dead.append((self._conn, self._callback_ids))
                    self._conn, self._callback_ids = None, []
                self._release_dead()

        if self._conn is None and not self._dead:
            return
        try:
            await in_thread(f"close ({self.uri})", close_now, self.call_timeout)
        except DriverTemporary as exc:
            log.warning("%s", exc)


async def in_thread(action: str, fn: Callable[[], T], timeout: float) -> T:
    """``fn()`` in a new daemon thread; DriverTemporary if it has not returned by ``timeout``
    seconds (it may still complete in its thread)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: tuple[T] | BaseException) -> None:
        if future.done():
            return  # timed out meanwhile
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[0])

    def work() -> None:
        outcome: tuple[T] | BaseException
        try:
            outcome = (fn(),)
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller
            outcome = exc
        try:
            loop.call_soon_threadsafe(deliver, outcome)
        except RuntimeError:
            log.debug("libvirt: %s ended after its caller's loop closed", action)

    threading.Thread(target=work, name=f"libvirt {action}", daemon=True).start()
    try:
        async with asyncio.timeout(timeout):
            return await future
    except TimeoutError:
        raise DriverTemporary(f"libvirt: {action}: no answer within {timeout:g}s") from None
