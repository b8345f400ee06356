"""The loop both reconcilers run: a pass every `<setting>` seconds, or at once when kicked.

A pass takes time in proportion to the cluster (about 20 ms per 1,000 VMs for the state
reconciler), and the server's one interpreter runs heartbeats and the API meanwhile. So after
a pass that cost ``d`` seconds the loop rests ``d * (1 / MAX_DUTY - 1)`` before the next one,
kicked or not: passes take at most MAX_DUTY of the server's time. On a small cluster the rest
is a few tens of milliseconds; at 100,000 VMs it is about eight seconds, and kicks made
meanwhile coalesce into the pass after it.

What a pass costs is the CPU time the server's process spent while it ran (never more than
its length): a pass that mostly waited (for a database that stopped answering, for agents
to answer queries) cost the server little and is not followed by a long rest. (It was its
length: a command reconciler's pass held 14 s by a cut database then rested 56 s, kicks
ignored, while tasks waited for the commands it would have settled.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bollard.server.clock import Clock
from bollard.server.ports import SettingsReader, UnitOfWork

log = logging.getLogger(__name__)

MAX_DUTY = 0.2  # the share of the server's time passes may take
UNREAD_INTERVAL = 1.0  # seconds between passes until the interval setting has been read


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
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        """`cpu_time()`: the process's CPU seconds (what a pass costs, see above)."""
        self.work = work
        self.clock = clock
        self.settings = settings
        self.name = name
        self.interval_key = interval_key
        self.body = body
        self.cpu_time = cpu_time
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run a pass now instead of at the next interval (kicks coalesce)."""
        self._wake.set()

    async def run(self) -> None:
        """Runs until cancelled (a database that does not answer stops nothing for good: the
        interval last read serves meanwhile, and the passes fail and are logged)."""
        rest, interval = 0.0, UNREAD_INTERVAL
        while True:
            try:
                interval = float(await self.work.run(self.settings.get, self.interval_key))
            except (SQLAlchemyError, OSError, TimeoutError) as exc:  # (it ended the loop)
                said = str(exc).strip().splitlines()
                log.warning(
                    "%s: cannot read %s (%s); a pass every %g s meanwhile",
                    self.name, self.interval_key, said[0] if said else type(exc).__name__, interval,
                )  # fmt: skip
            if rest > 0:
                await self.clock.sleep(rest)  # the duty-cycle cap (see the module docstring)
            await self.clock.wait_event(self._wake, max(0.0, interval - rest))
            self._wake.clear()
            started, cpu = self.clock.monotonic(), self.cpu_time()
            try:
                await self.body()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop the reconciler for good
                log.exception("%s pass failed", self.name)
            cost = min(self.clock.monotonic() - started, self.cpu_time() - cpu)
            rest = max(0.0, cost) * (1 / MAX_DUTY - 1)
