"""Asking hosts what their pools hold (StorageQuery), and the storage monitor: every
MONITOR_INTERVAL seconds, and when an agent connects, each connected host is asked for the room
of its pools, and the answers are stored (``pool_hosts``) for the scheduler and the API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bollard.domain.ids import new_id
from bollard.domain.protocol import PoolSpec, StorageQuery, StorageReport
from bollard.domain.storage import Pool
from bollard.server.clock import Clock
from bollard.server.ports import AgentLink, SessionLookup, UnitOfWork
from bollard.store import nodes, pools

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 10.0
MONITOR_INTERVAL = 30.0


class StorageQueries:
    """`on_report` is the gateway's handler of `storage_report`."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        sessions: SessionLookup,
        touch: Callable[[], None] = lambda: None,
        interval: float = MONITOR_INTERVAL,
    ) -> None:
        self.work = work
        self.clock = clock
        self.sessions = sessions
        self.touch = touch
        self.interval = interval
        self._pending: dict[str, tuple[str, asyncio.Future[StorageReport]]] = {}
        self._wake = asyncio.Event()

    async def query(
        self, node: str, of: list[Pool], *, volumes: bool = False, timeout: float = QUERY_TIMEOUT
    ) -> StorageReport | None:
        """The host's answer, or None when it is not connected or does not answer in time."""
        session = self.sessions.session(node)
        if session is None or not of:
            return None
        qid = new_id()
        future: asyncio.Future[StorageReport] = asyncio.get_running_loop().create_future()
        self._pending[qid] = (node, future)
        specs = [PoolSpec(name=p.name, type=p.type.value, path=p.path or "") for p in of]
        try:
            await session.send(StorageQuery(query_id=qid, pools=specs, volumes=volumes))
            return await self.clock.wait_for(future, timeout)
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.info("storage query to %s: no answer (%s)", node, type(exc).__name__)
            return None
        finally:
            self._pending.pop(qid, None)

    def on_report(self, link: AgentLink, msg: StorageReport) -> None:
        asked, future = self._pending.get(msg.query_id, ("", None))
        if future is not None and asked != link.node:
            log.warning("node %s answered a storage query sent to %s: ignored", link.node, asked)
        elif future is not None and not future.done():
            future.set_result(msg)

    # -- the monitor ------------------------------------------------------------------------

    def kick(self) -> None:
        """Look at every connected host now (e.g. an agent connected, a pool changed)."""
        self._wake.set()

    async def refresh(self, node: str) -> bool:
        """Ask `node` for the room of its pools and store it; False if it did not answer."""

        def of_node() -> list[Pool]:
            with self.work.read() as conn:
                return pools.of_node(conn, node)

        mine = await self.work.run(of_node)
        report = await self.query(node, mine)
        if report is None:
            return False
        await self.work.run(self._store, node, mine, report)
        self.touch()
        return True

    def _store(self, node: str, mine: list[Pool], report: StorageReport) -> None:
        now = self.clock.now()
        known = {p.name for p in mine}
        with self.work.write() as conn:
            for entry in report.pools:
                if entry.name not in known:
                    continue
                pools.record_host(
                    conn, entry.name, node, now,
                    capacity_mb=entry.capacity_mb if entry.ok else None,
                    free_mb=entry.free_mb if entry.ok else None,
                    error=None if entry.ok else (entry.error or "unreadable"),
                )  # fmt: skip

    async def refresh_all(self) -> None:
        def connected() -> list[str]:
            with self.work.read() as conn:
                return [n.name for n in nodes.list_all(conn) if n.connected]

        names = await self.work.run(connected)
        await asyncio.gather(*(self.refresh(n) for n in names))

    async def run(self) -> None:
        """The monitor loop: every `interval` seconds, or at once when kicked."""
        while True:
            self._wake.clear()
            try:
                await self.refresh_all()
            except Exception:  # a bug or a database error: logged, the loop goes on
                log.exception("storage monitor: refresh failed")
            await self.clock.wait_event(self._wake, self.interval)
