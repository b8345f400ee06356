"""libvirt's event loop, domain lifecycle events, and telling the agent that something changed.

libvirt dispatches events (domain lifecycle changes, connection keepalive and close) only
while an event loop runs. Bollard uses libvirt's own default implementation, run forever in
one daemon thread per process: it works whatever asyncio loop (or how many, one after the
other, as in tests) the driver is used from, which an asyncio-integrated loop would not.
It is registered before the first connection is opened, as libvirt requires for keepalive
on remote connections.

Callbacks fire in that thread; ``ChangeNotifier`` hands them over to the asyncio loop the
driver is used from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running = False
_RETRY = 0.5  # pause after the event loop itself failed, before running it again


def ensure_event_loop(lib: Any) -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _running
    with _lock:
        if _running:
            return
        lib.virEventRegisterDefaultImpl()
        thread = threading.Thread(
            target=_run_forever, args=(lib,), name="libvirt-events", daemon=True
        )
        thread.start()
        _running = True


def _run_forever(lib: Any) -> None:
    while True:
        try:
            lib.virEventRunDefaultImpl()
        except lib.libvirtError as exc:
            log.warning("libvirt event loop: %s", exc)
            time.sleep(_RETRY)  # backoff, not synchronisation


class ChangeNotifier:
    """Fan-out of "a VM or the connection changed" from libvirt's event thread to callbacks
    and waiters in the asyncio loop the driver runs in (the loop of its latest call)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def fire(self) -> None:
        """Thread-safe: run the callbacks and wake the waiters in the bound loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one listens
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        for waiter in list(self._waiters):
            waiter.set()
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("state change callback failed")

    async def wait(self, timeout: float) -> bool:
        """Wait for the next change, at most ``timeout`` seconds; whether one came."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(event)


def watch_connection(lib: Any, conn: Any, on_event: Callable[[], None]) -> list[int]:
    """Call ``on_event`` (in libvirt's event thread) on every domain lifecycle event of this
    connection; the callback ids (to deregister). Drivers without events give none."""
    lifecycle = getattr(lib, "VIR_DOMAIN_EVENT_ID_LIFECYCLE", 0)

    def lifecycle_event(_conn: Any, _dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
        on_event()

    try:
        return [conn.domainEventRegisterAny(None, lifecycle, lifecycle_event, None)]
    except lib.libvirtError as exc:
        log.warning("libvirt: no lifecycle events on this connection: %s", exc)
        return []


def unwatch_connection(lib: Any, conn: Any, callback_ids: list[int]) -> None:
    for callback_id in callback_ids:
        with contextlib.suppress(lib.libvirtError):  # the connection is already gone
            conn.domainEventDeregisterAny(callback_id)
