"""The loop both reconcilers run: a pass every `<setting>` seconds, or at once when kicked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)


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
        while True:
            interval = float(await self.rt.db_call(self.rt.settings.get, self.interval_key))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.body()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop the reconciler for good
                log.exception("%s pass failed", self.name)
