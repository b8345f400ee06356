"""Wakes the readers of the event log (`bollard events --follow`) when events are written."""

from __future__ import annotations

import asyncio

from bollard.server.clock import Clock


class EventBus:
    """Readers wait for `changed()`; writers call `touch()` after committing events.

    Events written by another server do not touch this bus: readers re-read at least every
    `recheck` seconds, so they see those too, a little later.
    """

    def __init__(self, clock: Clock, recheck: float = 1.0) -> None:
        self.clock = clock
        self.recheck = recheck
        self._event = asyncio.Event()

    def touch(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Return when events were written, or after min(timeout, recheck) seconds."""
        await self.clock.wait_event(self._event, min(timeout, self.recheck))
