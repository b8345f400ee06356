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
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bollard.server.clock import Clock
from bollard.server.ports import SettingsReader, UnitOfWork

log = logging.getLogger(__name__)

MAX_DUTY = 0.2  # the share of the server's time passes may take


class PassLoop:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        name: str,
        interval_key: str,
        body: Callable[[], Awaitable[Any]],
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.name = name
        self.interval_key = interval_key
        self.body = body
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run a pass now instead of at the next interval (kicks coalesce)."""
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled."""
        rest = 0.0
        while True:
            interval = float(await self.work.run(self.settings.get, self.interval_key))
            if rest > 0:
                await self.clock.sleep(rest)  # the duty-cycle cap (see the module docstring)
            await self.clock.wait_event(self._wake, max(0.0, interval - rest))
            self._wake.clear()
            started = self.clock.monotonic()
            try:
                await self.body()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop the reconciler for good
                log.exception("%s pass failed", self.name)
            rest = (self.clock.monotonic() - started) * (1 / MAX_DUTY - 1)
