"""The loop both reconcilers run: a pass every `<setting>` seconds, or at once when kicked.

A pass takes time in proportion to the cluster (about 20 ms per 1,000 VMs for the state
reconciler), and the server's one interpreter runs heartbeats and the API meanwhile. So after
a pass that took ``d`` seconds the loop rests ``d * (1 / MAX_DUTY - 1)`` before the next one,
kicked or not: passes take at most MAX_DUTY of the server's time. On a small cluster the rest
is a few tens of milliseconds; at 100,000 VMs it is about eight seconds, and kicks made
meanwhile coalesce into the pass after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

MAX_DUTY = 0.2  # the share of the server's time passes may take


class PassLoop:
    def __init__(
        self, runtime: Runtime, name: str, interval_key: str, body: Callable[[], Awaitable[Any]]
    ) -> None:
        self.rt = runtime
        self.name = name
        self.interval_key = interval_key
        self.body = body
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run a pass now instead of at the next interval (kicks coalesce)."""
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled."""
        loop = asyncio.get_running_loop()
        rest = 0.0
        while True:
            interval = float(await self.rt.db_call(self.rt.settings.get, self.interval_key))
            if rest > 0:
                await asyncio.sleep(rest)  # the duty-cycle cap (see the module docstring)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, interval - rest))
            self._wake.clear()
            started = loop.time()
            try:
                await self.body()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop the reconciler for good
                log.exception("%s pass failed", self.name)
            rest = (loop.time() - started) * (1 / MAX_DUTY - 1)
