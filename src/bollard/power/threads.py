"""Running a blocking call (a synchronous BMC library, file I/O) with an enforced timeout.

A thread cannot be cancelled, so the call runs in a daemon thread of its own and the caller
stops waiting at the timeout (PowerTimeout); the thread finishes, or not, on its own, and its
result is dropped. Daemon threads do not hold up interpreter exit, nor the event loop's
shutdown, as a hung call in the loop's default executor would.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from bollard.power.base import check_timeout
from bollard.power.errors import PowerTimeout

T = TypeVar("T")

log = logging.getLogger(__name__)


async def run_blocking(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``fn()`` in a daemon thread; its result, its exception, or PowerTimeout."""
    timeout = check_timeout(timeout)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle_ok(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def settle_error(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            _post(loop, settle_error, exc, what)
        else:
            _post(loop, settle_ok, value, what)

    threading.Thread(target=target, name=f"power: {what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise PowerTimeout(f"{what} did not complete within {timeout:g} s") from None


def _post(
    loop: asyncio.AbstractEventLoop, settle: Callable[[T], None], value: T, what: str
) -> None:
    try:
        loop.call_soon_threadsafe(settle, value)
    except RuntimeError:  # the loop is closed: its caller stopped waiting long ago
        log.debug("%s finished after its caller was gone; result dropped", what)
