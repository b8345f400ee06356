"""The command reconciler: establishes what became of commands whose answer was lost.

It runs every `reconcile.commands.interval` seconds, and at once when an agent reconnects or
a command times out. For each INTERRUPTED, TIMED_OUT or RECONCILE_RETRY command on a connected
node it asks the agent (a Query: its journal entry and the live state of the VM), then
completes the command with the real outcome (RECONCILED), asks again later
(RECONCILE_RETRY), or gives up after `reconcile.commands.max.attempts` (RECONCILE_FAILED).
At most `reconcile.commands.workers` commands are reconciled at a time.
"""

from __future__ import annotations

import asyncio
import logging

from bollard.domain.commands import CommandState
from bollard.domain.ids import new_id
from bollard.domain.models import CommandRecord
from bollard.domain.protocol import Query, QueryResult
from bollard.domain.reconcile import ReconcileVerdict, decide
from bollard.domain.states import CommandType
from bollard.server.clock import Clock
from bollard.server.ports import (
    AgentLink,
    CommandOutcomes,
    SessionLookup,
    SettingsReader,
    UnitOfWork,
)
from bollard.server.reconcile.loop import PassLoop
from bollard.store import commands, vms

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 10.0


class CommandReconciler:
    """Its `kick` is a `ports.NodeKick`; `on_query_result` is the gateway's handler of
    `query_result` messages."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        sessions: SessionLookup,
        outcomes: CommandOutcomes,
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.sessions = sessions
        self.outcomes = outcomes
        # query id -> (the node asked, its answer to come)
        self._queries: dict[str, tuple[str, asyncio.Future[QueryResult]]] = {}
        self._loop = PassLoop(
            work=work,
            clock=clock,
            settings=settings,
            name="command reconciler",
            interval_key="reconcile.commands.interval",
            body=self.reconcile_pass,
        )
        self._busy: set[str] = set()
        self.passes = 0

    def kick(self, node: str | None = None) -> None:
        """Run a pass now (after a reconnect or a timeout) instead of at the next interval."""
        self._loop.kick()

    async def run(self) -> None:
        """The periodic loop; runs until cancelled."""
        await self._loop.run()

    async def reconcile_pass(self, node: str | None = None) -> int:
        """Reconcile what can be reconciled now; returns how many commands were looked at."""
        settings = await self.work.run(self.settings.all)
        if not settings["reconcile.commands.enabled"]:
            return 0
        candidates = await self.work.run(self._candidates, node)
        todo = [
            c
            for c in candidates
            if c.id not in self._busy and self.sessions.session(c.node) is not None
        ]
        if not todo:
            return 0
        limit = asyncio.Semaphore(int(settings["reconcile.commands.workers"]))
        max_attempts = int(settings["reconcile.commands.max.attempts"])

        async def one(cmd: CommandRecord) -> None:
            async with limit:
                await self.reconcile_one(cmd, max_attempts)

        self.passes += 1
        await asyncio.gather(*(one(c) for c in todo))
        return len(todo)

    def _candidates(self, node: str | None) -> list[CommandRecord]:
        with self.work.read() as conn:
            return commands.to_reconcile(conn, node=node)

    async def reconcile_one(self, cmd: CommandRecord, max_attempts: int) -> None:
        self._busy.add(cmd.id)
        try:
            if not await self.outcomes.move(
                cmd.id,
                CommandState.RECONCILING,
                note=f"attempt {cmd.attempts + 1}",
                expect=CommandState(cmd.state),
                attempts=cmd.attempts + 1,
            ):
                return
            if await self.work.run(self._vm_gone, cmd):
                await self.outcomes.move(
                    cmd.id, CommandState.RECONCILE_SKIPPED, note="the VM no longer exists"
                )
                self.outcomes.resolve_failed(cmd.id, "skipped", "the VM no longer exists")
                return
            result = await self._query(cmd)
            if result is None:
                await self._retry_or_fail(cmd, max_attempts, "the agent did not answer the query")
                return
            decision = _decision(cmd, result)
            if not decision.known:
                await self._retry_or_fail(cmd, max_attempts, decision.reason)
                return
            answer = decision.answer()
            stored = await self.outcomes.move(
                cmd.id,
                CommandState.RECONCILED,
                note=("succeeded: " if decision.ok else "failed: ") + decision.reason,
                answer=answer,
                agent_state=result.entry.state.value if result.entry else "NEVER_RECEIVED",
                error=None if decision.ok else decision.reason,
            )
            if stored:
                log.info(
                    "command %s (%s on %s) reconciled: %s",
                    cmd.id,
                    cmd.type,
                    cmd.node,
                    decision.reason,
                )
                self.outcomes.resolve_answer(cmd.id, answer)
        finally:
            self._busy.discard(cmd.id)

    def _vm_gone(self, cmd: CommandRecord) -> bool:
        if cmd.vm_uuid is None or cmd.type == CommandType.UNDEFINE:
            return False
        with self.work.read() as conn:
            return vms.find_by_uuid(conn, cmd.vm_uuid) is None

    async def _retry_or_fail(self, cmd: CommandRecord, max_attempts: int, reason: str) -> None:
        if cmd.attempts + 1 >= max_attempts:
            await self.outcomes.move(
                cmd.id,
                CommandState.RECONCILE_FAILED,
                note=f"gave up after {max_attempts} attempts: {reason}",
                error=reason,
            )
            self.outcomes.resolve_failed(cmd.id, "reconcile-failed", reason)
        else:
            await self.outcomes.move(cmd.id, CommandState.RECONCILE_RETRY, note=reason)

    async def _query(self, cmd: CommandRecord) -> QueryResult | None:
        session = self.sessions.session(cmd.node)
        if session is None:
            return None
        qid = new_id()
        future: asyncio.Future[QueryResult] = asyncio.get_running_loop().create_future()
        self._queries[qid] = (cmd.node, future)
        try:
            await session.send(Query(query_id=qid, command_id=cmd.id, vm_uuid=cmd.vm_uuid))
            return await self.clock.wait_for(future, QUERY_TIMEOUT)
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.info("query for command %s on %s: %s", cmd.id, cmd.node, type(exc).__name__)
            return None
        finally:
            self._queries.pop(qid, None)

    def on_query_result(self, link: AgentLink, msg: QueryResult) -> None:
        asked, future = self._queries.get(msg.query_id, ("", None))
        if future is not None and asked != link.node:
            log.warning("node %s answered a query sent to %s: ignored", link.node, asked)
        elif future is not None and not future.done():
            future.set_result(msg)


def _decision(cmd: CommandRecord, result: QueryResult) -> ReconcileVerdict:
    entry = result.entry
    live = result.vm.power if result.vm is not None else None
    return decide(
        CommandType(cmd.type),
        entry.state if entry is not None and entry.command is not None else None,
        entry_ok=entry.ok if entry else None,
        entry_result=entry.result if entry else None,
        entry_error=(entry.error.code, entry.error.message) if entry and entry.error else None,
        live=live,
        live_report=result.vm.model_dump(mode="json") if result.vm is not None else None,
    )
