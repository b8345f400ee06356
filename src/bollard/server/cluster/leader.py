"""Leadership: the lease `leader` in `leases`, held by one server at a time, with a fencing
token that grows each time the lease is taken anew.

Cluster-wide duties run on the holder. Each of their write transactions first checks the
lease (`fenced_work.LeaderWork`), so once a peer has taken over, a deposed leader's write is
refused even if it has not noticed yet. A leader that cannot renew stops counting itself as
leader after two thirds of the lease's time to live without a renewal, a third before a peer
may take the lease over; time for the lease comes from the database (`servers.db_now`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from bollard.domain.servers import ServerState
from bollard.server.clock import Clock
from bollard.server.cluster.membership import (
    Callback,
    Failed,
    OneCall,
    bound_lease_transaction,
    notify,
)
from bollard.server.ports import UnitOfWork
from bollard.store import events, leases, servers

log = logging.getLogger(__name__)

DEPOSE_AFTER = 2 / 3  # of the ttl without a renewal: no longer leader


class Leadership:
    """`token` is the fencing token while this server leads, else None. `on_elected`
    callbacks get the token; `on_deposed` callbacks run before the server stops counting
    itself as leader (to stop the duties it runs as leader)."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        holder: str,
        ttl: float,
        name: str = "leader",
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"leader lease ttl must be positive, not {ttl}")
        self.work = work
        self.clock = clock
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self.token: int | None = None
        self._calls = OneCall(work, clock, executor)
        self._turn = asyncio.Lock()
        self._wake = asyncio.Event()
        self._resigned = asyncio.Event()
        self._renewed = 0.0  # monotonic: when the last renewal that succeeded began
        self._hold_off = 0.0  # monotonic: no attempt to take the lease before (once deposed)
        self._elected: list[Callable[[int], Awaitable[None] | None]] = []
        self._deposed: list[Callback] = []

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    @property
    def tick(self) -> float:
        return self.ttl / 3

    def on_elected(self, cb: Callable[[int], Awaitable[None] | None]) -> None:
        self._elected.append(cb)

    def on_deposed(self, cb: Callback) -> None:
        self._deposed.append(cb)

    def kick(self) -> None:
        """Try to take the lease now instead of at the next tick (e.g. the leader resigned)."""
        self._wake.set()

    async def run(self) -> None:
        """Try to take the lease every `ttl/3` s; renew it as often while leader; until
        `resign`."""
        while not self._resigned.is_set():
            began = self.clock.monotonic()
            self._wake.clear()
            async with self._turn:
                if self._resigned.is_set():
                    return
                if self.token is None:
                    await self._try_take()
                else:
                    await self._renew(self.token)
            wait = began + self.tick - self.clock.monotonic()
            if self.token is not None:  # wake in time to depose if renewals keep failing
                wait = min(wait, self._renewed + DEPOSE_AFTER * self.ttl - self.clock.monotonic())
            else:
                wait = max(wait, self._hold_off - self.clock.monotonic())
            await self.clock.wait_event(self._wake, max(0.0, wait))

    async def resign(self) -> None:
        """A clean stop: depose (callbacks first), then expire the lease so that a peer takes
        it over at its next attempt; `run` ends."""
        self._resigned.set()
        self._wake.set()
        async with self._turn:
            token = self.token
            if token is None:
                return
            await self._depose("it resigns")
            what = f"{self.holder} could not hand the {self.name} lease over (it will expire)"
            await self._calls.attempt(what, self.ttl, self._give_up, token)

    # -- the loop's steps -------------------------------------------------------------------

    async def _try_take(self) -> None:
        if self.clock.monotonic() < self._hold_off:
            return
        started = self.clock.monotonic()
        what = f"{self.holder} could not try for the {self.name} lease"
        token = await self._calls.attempt(what, self.tick, self._take)
        if token is None or isinstance(token, Failed):  # tried again at the next tick
            return
        self._renewed = started
        self.token = token
        log.warning("%s is the %s now (token %d)", self.holder, self.name, token)
        callbacks = [functools.partial(cb, token) for cb in self._elected]
        await notify(callbacks, f"{self.name} elected", self.clock, self.ttl)

    async def _renew(self, token: int) -> None:
        started = self.clock.monotonic()
        left = self._renewed + DEPOSE_AFTER * self.ttl - started
        what = f"{self.holder} could not renew the {self.name} lease"
        timeout = max(0.0, min(self.tick, left))
        renewed = await self._calls.attempt(what, timeout, self._renew_lease, token)
        if renewed is True:
            self._renewed = started
        elif renewed is False:
            await self._depose("its lease was taken over")
        elif self.clock.monotonic() - self._renewed >= DEPOSE_AFTER * self.ttl:
            await self._depose(f"no renewal for {DEPOSE_AFTER * self.ttl:.2g} s")
            # A renewal given up on may still land and keep the lease live under a server
            # that no longer leads: let it go (after that call: one call at a time).
            what = f"{self.holder} could not let the {self.name} lease go (it will expire)"
            await self._calls.attempt(what, self.tick, self._give_up, token)

    async def _depose(self, why: str) -> None:
        log.warning(
            "%s is no longer the %s (token %s): %s", self.holder, self.name, self.token, why
        )
        await notify(self._deposed, f"{self.name} deposed", self.clock, self.ttl)
        self.token = None
        # Let a peer take the lease before trying again: taken anew after it expired, it
        # comes with a new token.
        self._hold_off = self.clock.monotonic() + self.ttl

    # -- blocking database work -------------------------------------------------------------

    def _take(self) -> int | None:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            now = servers.db_now(conn)
            before = leases.get(conn, self.name)
            if before is not None and before.holder != self.holder:
                holder = servers.get(conn, before.holder)
                if holder is not None and holder.state is not ServerState.UP:
                    # Its server is known dead (stopped, or taken for dead by its peers or
                    # its own successor): its lease need not be waited out.
                    leases.give_up(conn, self.name, before.holder, before.token)
            token = leases.take(conn, self.name, self.holder, now, self.ttl)
            if token is not None and (before is None or before.token != token):
                events.add(
                    conn,
                    "cluster.leader",
                    f"server {self.holder} is the {self.name} (token {token})",
                    now,
                    data={"server": self.holder, "token": token},
                )
            return token

    def _renew_lease(self, token: int) -> bool:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            now = servers.db_now(conn)
            return leases.renew(conn, self.name, self.holder, token, now, self.ttl)

    def _give_up(self, token: int) -> None:
        with self.work.write() as conn:
            bound_lease_transaction(conn, self.ttl)
            leases.give_up(conn, self.name, self.holder, token)
