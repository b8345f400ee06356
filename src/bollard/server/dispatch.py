"""The command dispatcher: every command is written to the database before it is sent, and
its caller waits for the outcome with a deadline.

States follow the whitelisted table of bollard.domain.commands: CREATED is written first,
then SENT (before the bytes leave, so an answer can never arrive for an unsent command), then
COMPLETED | FAILED on the answer. When the node's session is there as the command is written
(and the caller asks nothing before sending), CREATED and SENT are written in one
transaction, with the caller's record of the command: a server that dies before sending it
leaves it SENT, as one that died between the two would have, and the command reconciler
finds the agent never got it. Answers are stored in the agents' shared report transactions
(group_commit.py), as their journals are: answers that come together share one commit.

The outcome can arrive three ways: the direct answer, the same answer in a heartbeat's
journal sync (when the direct one was lost), or the command reconciler (after the session was
lost, the server restarted, or the deadline passed). A caller waits for the first of them,
and never past its deadline.

Answers, progress and journal entries count only from the session of the node a command was
sent to: any other agent's are refused (an error reply, and a log line, rate-limited per
node). Progress is kept only for the commands awaited now, and forgotten when they end.

With several servers (cluster/relay.py) the command may go through the peer holding the
node's session: that peer stores the outcome and `on_unawaited` (it awaits nothing of the
sort) announces it; the waiting server reads it (`on_ended_elsewhere`). An announcement
missed (the waiting server's bus was reconnecting, or the outcome went to a caller on the
holder whose task was taken over since) costs only time: with peers, a caller reads the
command's row again every RECHECK seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from bollard.domain.commands import AgentCommandState, CommandState
from bollard.domain.errors import (
    CommandOutcomeUnknown,
    NodeUnavailable,
    StepFailed,
)
from bollard.domain.ids import new_id
from bollard.domain.models import CommandRecord
from bollard.domain.protocol import (
    Answer,
    Cancel,
    Command,
    ErrorMsg,
    JournalEntry,
    Progress,
)
from bollard.domain.states import CommandType
from bollard.server import crashpoints
from bollard.server.clock import Clock, Deadline, LogBudget
from bollard.server.group_commit import GroupCommit
from bollard.server.outcomes import CommandOutcome, known_outcome, result_or_raise
from bollard.server.ports import AgentLink, NodeKick, SessionLookup, UnitOfWork
from bollard.store import commands

log = logging.getLogger(__name__)

CANCEL_AFTER_SEND_WAIT = 5.0
# With peers: how often a caller reads its command's row again (what a missed announcement
# of its end costs at most, instead of the whole deadline: 600 s for a migration).
RECHECK = 1.0
_FROM_JOURNAL = (AgentCommandState.COMPLETED, AgentCommandState.FAILED)


# Told of an outcome that nobody waits for any more (its caller gave up, or the server
# restarted since the command was sent): (command id, outcome).
LateOutcome = Callable[[str, CommandOutcome], None]


class Dispatcher:
    """A `ports.CommandPort` (and the `ports.CommandOutcomes` the command reconciler uses).

    Agents' messages reach it through the gateway's handlers: `on_answer`, `on_progress`,
    `on_journal` (from heartbeats), `on_session_lost`.
    """

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        sessions: SessionLookup,
        report_writes: GroupCommit,
        kick_commands: NodeKick,
        on_late_outcome: LateOutcome,
        command_timeout: float,
        on_unawaited: Callable[[str], None] | None = None,
        recheck: float = RECHECK,
    ) -> None:
        """`on_unawaited(cid)`: an outcome was stored that no caller of this server awaits
        (besides `on_late_outcome`): a peer's caller may (cluster/relay.py). Given, there are
        peers, so callers here read their command again every `recheck` seconds."""
        self.work = work
        self.clock = clock
        self.sessions = sessions
        self.report_writes = report_writes
        self.kick_commands = kick_commands
        self.on_late_outcome = on_late_outcome
        self.command_timeout = command_timeout
        self.on_unawaited = on_unawaited
        self.recheck = recheck
        self._waiting: dict[str, asyncio.Future[CommandOutcome]] = {}
        self._node_of: dict[str, str] = {}  # command id -> node, for the commands awaited
        self._sent: dict[str, asyncio.Event] = {}  # set once the command's bytes have left
        # The latest progress of each command awaited now (a subset of _node_of's keys).
        self._progress: dict[str, Progress] = {}
        self._foreign_log = LogBudget(clock)  # messages refused, per node
        self._dropped_log = LogBudget(clock)  # messages for unknown commands dropped, per node

    # -- sending ---------------------------------------------------------------------------

    async def call(
        self,
        node: str,
        command: CommandType,
        args: dict[str, Any] | None = None,
        *,
        vm_uuid: str | None = None,
        epoch: int = 0,
        task_id: str | None = None,
        timeout: float | None = None,
        record: Callable[[Connection, str], None] | None = None,
        abort_if: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Create a command, send it to a node's agent and return the result of its outcome.

        `record(conn, command_id)` runs in the transaction that writes the command (CREATED);
        `abort_if()` (blocking, read-only) is asked once it is written and before it is sent:
        when True, the command is never sent, ends FAILED, and StepFailed is raised.

        Raises NodeUnavailable (not connected when sent), CommandFailed (the agent reported
        a failure, or reconciliation established one) or CommandOutcomeUnknown (no outcome
        within the deadline, nor within as long again for reconciliation).
        """
        timeout = timeout if timeout is not None else self.command_timeout
        cid = new_id()
        args = dict(args or {})
        # Announced before it is written: a cancel for it (which finds it in the database)
        # waits until it has been sent, or is known never to be.
        self._sent.setdefault(cid, asyncio.Event())
        # Its node connected and nothing to ask before sending: CREATED and SENT are written
        # in one transaction (an answer can still never come for a command not yet SENT).
        session = self.sessions.session(node) if abort_if is None else None
        try:
            await self.work.run(
                self._create, cid, node, command, args,
                vm_uuid=vm_uuid, epoch=epoch, task_id=task_id, timeout=timeout, record=record,
                sent=session is not None,
            )  # fmt: skip
            if abort_if is not None and await self.work.run(abort_if):
                self._not_sending(cid)
                # A cancel that came while the command was being written: it is never sent.
                await self.move(
                    cid,
                    CommandState.FAILED,
                    note="task cancelled before sending",
                    error="cancelled",
                )
                raise StepFailed("cancelled by the operator before the command was sent")
        except BaseException:
            self._not_sending(cid)
            raise
        # Tests: the server dies with the command written (SENT, when its node was connected)
        # and never sent (BOLLARD_CRASH_POINTS=command:<type>:written).
        crashpoints.reach("command", command.value, "written")
        return await self._send_and_wait(
            cid, node, command, args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout,
            session=session,
        )  # fmt: skip

    def _create(
        self,
        cid: str,
        node: str,
        command: CommandType,
        args: dict[str, Any],
        *,
        vm_uuid: str | None,
        epoch: int,
        task_id: str | None,
        timeout: float,
        record: Callable[[Connection, str], None] | None,
        sent: bool,
    ) -> None:
        """Write a command row (CREATED; with `sent`, SENT at once), and the caller's record
        of it, in one transaction."""
        now = self.clock.now()
        with self.work.write() as conn:
            commands.create(
                conn,
                id=cid,
                node=node,
                type=command.value,
                args=args,
                vm_uuid=vm_uuid,
                epoch=epoch,
                task_id=task_id,
                deadline=now + timedelta(seconds=timeout),
                now=now,
                sent=sent,
            )
            if record is not None:
                record(conn, cid)

    async def _send_and_wait(
        self,
        cid: str,
        node: str,
        command: CommandType,
        args: dict[str, Any],
        *,
        vm_uuid: str | None,
        epoch: int,
        timeout: float,
        session: AgentLink | None,
    ) -> dict[str, Any]:
        """Send a command whose row exists and wait for its outcome: CREATED, or SENT already
        when `session` (the node's, found before it was written) is given."""
        sent = session is not None
        if session is None:
            session = self.sessions.session(node)
        if session is None:
            self._not_sending(cid)
            await self.move(
                cid, CommandState.FAILED, note="node not connected", error="node not connected"
            )
            raise NodeUnavailable(f"node {node!r} is not connected")
        future = self._expect(cid, node)
        try:
            if not sent:
                await self.move(cid, CommandState.SENT)
            msg = Command(
                id=cid, command=command, args=args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout
            )
            try:
                await session.send(msg)
            except ConnectionError as exc:
                await self.move(cid, CommandState.INTERRUPTED, note=f"send failed: {exc}")
            finally:
                self._sent.setdefault(cid, asyncio.Event()).set()
            outcome = await self._wait(cid, node, command, future, timeout)
        finally:
            self._forget(cid)
        return result_or_raise(outcome, command, node)

    async def attach(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the outcome of a command sent earlier (e.g. before a server restart)."""
        timeout = timeout if timeout is not None else self.command_timeout
        record = await self.work.run(self._get, cid)
        command, node = CommandType(record.type), record.node
        future = self._expect(cid, node)
        try:
            record = await self.work.run(self._get, cid)  # re-read: it may have ended meanwhile
            known = known_outcome(record.state, record.answer, record.error)
            if known is not None:
                outcome = known
            else:
                self.kick_commands(node)
                # As for a command just sent: one still SENT at the deadline is TIMED_OUT,
                # for the reconciler (its session may have been a server's that died).
                outcome = await self._wait(cid, node, command, future, timeout)
        finally:
            self._forget(cid)
        return result_or_raise(outcome, command, node)

    async def _wait(
        self,
        cid: str,
        node: str,
        command: CommandType,
        future: asyncio.Future[CommandOutcome],
        timeout: float,
    ) -> CommandOutcome:
        try:
            return await self._outcome_within(cid, future, timeout)
        except TimeoutError:
            pass  # the deadline passed: let the reconciler find out, for as long again
        timed_out = await self.move(
            cid,
            CommandState.TIMED_OUT,
            note=f"no answer within {timeout:g} s",
            expect=CommandState.SENT,
        )
        if timed_out:
            self.kick_commands(node)
        elif not future.done():  # it ended meanwhile, and the word of it did not come here
            record = await self.work.run(self._get, cid)
            known = known_outcome(record.state, record.answer, record.error)
            if known is not None:
                return known
        try:
            return await self._outcome_within(cid, future, timeout)
        except TimeoutError:
            raise CommandOutcomeUnknown(
                f"{command} on node {node!r}: no outcome within {2 * timeout:g} s "
                f"(command {cid}; the reconciler will settle it when the node answers)"
            ) from None

    async def _outcome_within(
        self, cid: str, future: asyncio.Future[CommandOutcome], timeout: float
    ) -> CommandOutcome:
        """What `future` gets within `timeout` (TimeoutError after it). With peers, the
        command's row is read again every `recheck` s: its outcome may have been stored by a
        peer whose announcement did not come here."""
        if self.on_unawaited is None:  # one server: every outcome comes through this one
            return await self.clock.wait_for(asyncio.shield(future), timeout)
        deadline = Deadline.after(self.clock, timeout)
        while True:
            wait = min(self.recheck, deadline.remaining())
            try:
                return await self.clock.wait_for(asyncio.shield(future), wait)
            except TimeoutError:
                if deadline.passed:
                    raise
            record = await self.work.run(self._get, cid)
            known = known_outcome(record.state, record.answer, record.error)
            if known is not None:
                return known

    def _expect(self, cid: str, node: str) -> asyncio.Future[CommandOutcome]:
        future: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = future
        self._node_of[cid] = node
        return future

    def _forget(self, cid: str) -> None:
        self._waiting.pop(cid, None)
        self._node_of.pop(cid, None)
        self._progress.pop(cid, None)
        self._sent.pop(cid, None)

    def _not_sending(self, cid: str) -> None:
        """An announced command will not be sent after all: a cancel need not wait for it."""
        self._sent.pop(cid, asyncio.Event()).set()

    def _get(self, cid: str) -> CommandRecord:
        with self.work.read() as conn:
            return commands.get(conn, cid)

    async def move(
        self,
        cid: str,
        state: CommandState,
        *,
        note: str | None = None,
        expect: CommandState | None = None,
        **values: Any,
    ) -> bool:
        """Transition a command (whitelisted, compare-and-swap) in its own transaction."""

        def tx() -> bool:
            with self.work.write() as conn:
                return commands.transition(
                    conn, cid, state, self.clock.now(), note=note, expect=expect, **values
                )

        return await self.work.run(tx)

    # -- outcomes --------------------------------------------------------------------------

    async def on_answer(self, link: AgentLink, answer: Answer) -> None:
        """The gateway's handler of `answer` messages: only the node the command was sent to
        may answer it."""
        node, cid = link.node, answer.command_id
        # An agent restarted mid-command and does not know the outcome: not an outcome, a
        # question for the reconciler (which looks at the live VM).
        interrupted = answer.error is not None and answer.error.code == "interrupted"
        outcome = CommandOutcome.of(answer.ok, answer.result, answer.error)

        def tx(conn: Connection) -> tuple[str | None, bool]:
            """(the command's node, None if unknown; whether this answer ended it)."""
            now = self.clock.now()
            known = commands.states_of(conn, [cid]).get(cid)
            if known is None or known[0] != node:
                return (None if known is None else known[0]), False
            if interrupted:
                commands.transition(
                    conn, cid, CommandState.INTERRUPTED, now,
                    note="agent reports it was interrupted", expect=CommandState.SENT,
                )  # fmt: skip
                return node, False
            return node, _store(conn, cid, outcome, "answer", None, known[1], now)

        # In the agents' shared report transaction (group_commit.py), as their journals:
        # answers that come together share a commit; its caller is woken once it is stored.
        owner, applied = await self.report_writes.run(tx)
        if owner is None:
            self._dropped(link, "answer for an unknown command", [cid])
        elif owner != node:
            await self._refuse_foreign(link, "answer", [cid])
        elif interrupted:
            self.kick_commands(node)
        elif applied:
            self.resolve(cid, outcome)
        else:
            log.debug("node %s: answer for command %s did not change it", node, cid)

    async def on_journal(
        self, link: AgentLink, entries: list[JournalEntry]
    ) -> dict[str, AgentCommandState]:
        """Store what the agent's journal says, in one transaction; an entry with an outcome
        counts as the answer. Returns what was stored, for the ack. Entries of commands sent
        to other nodes are refused (left out of the ack)."""
        node = link.node
        foreign: list[str] = []
        unknown: list[str] = []

        def tx(conn: Connection) -> list[tuple[str, CommandOutcome]]:
            applied: list[tuple[str, CommandOutcome]] = []
            foreign.clear()
            unknown.clear()
            now = self.clock.now()
            # One read for every entry: most repeat what is stored already (an agent sends
            # an entry until it is acked, and its answer usually came first).
            known = commands.states_of(conn, [entry.command_id for entry in entries])
            for entry in entries:
                cid = entry.command_id
                current = known.get(cid)
                if current is None:
                    unknown.append(cid)
                    continue
                owner, state, agent_state = current
                if owner != node:
                    foreign.append(cid)
                    continue
                awaiting = state is CommandState.SENT or state in commands.AWAITING_RECONCILE
                if entry.state in _FROM_JOURNAL and entry.command is not None and awaiting:
                    ok = (
                        entry.state is AgentCommandState.COMPLETED if entry.ok is None else entry.ok
                    )
                    outcome = CommandOutcome.of(ok, entry.result, entry.error)
                    via = "journal sync"
                    if _store(conn, cid, outcome, via, entry.state, state, now):
                        applied.append((cid, outcome))
                        state = CommandState.COMPLETED  # ended: a repeat changes nothing
                elif agent_state != entry.state.value:
                    commands.set_agent_state(conn, cid, entry.state.value, now)
                known[cid] = (owner, state, entry.state.value)
            return applied

        # In the agents' shared report transaction (group_commit.py); answered once committed.
        for cid, outcome in await self.report_writes.run(tx):
            self.resolve(cid, outcome)
        if unknown:
            self._dropped(link, "journal entries for unknown commands", unknown)
        if foreign:
            await self._refuse_foreign(link, "journal entry", foreign)
        refused = set(foreign)
        return {e.command_id: e.state for e in entries if e.command_id not in refused}

    def resolve(self, cid: str, outcome: CommandOutcome) -> None:
        """The outcome of `cid` is known and stored: wake its caller (or, when nobody waits
        for it any more, hand it to `on_late_outcome`)."""
        future = self._waiting.get(cid)
        if future is not None and not future.done():
            future.set_result(outcome)
        elif future is None:
            self.on_late_outcome(cid, outcome)
            if self.on_unawaited is not None:
                self.on_unawaited(cid)

    async def on_ended_elsewhere(self, cid: str) -> None:
        """A peer stored the outcome of `cid`: its caller here, if any, is told."""
        future = self._waiting.get(cid)
        if future is None or future.done():
            return
        record = await self.work.run(self._get, cid)
        known = known_outcome(record.state, record.answer, record.error)
        if known is not None and not future.done():
            future.set_result(known)

    def resolve_answer(self, cid: str, answer: dict[str, Any]) -> None:
        self.resolve(cid, CommandOutcome.of_answer(answer))

    def resolve_failed(self, cid: str, code: str, message: str) -> None:
        self.resolve(cid, CommandOutcome(False, {}, code, message))

    async def abandon_node(self, node: str, reason: str) -> int:
        """The node is off (fenced): its open commands can never complete. Each ends (FAILED,
        or RECONCILE_SKIPPED) and whoever waits for it is told at once."""

        def tx() -> list[str]:
            with self.work.write() as conn:
                return commands.abandon_node(conn, node, reason, self.clock.now())

        ended = await self.work.run(tx)
        for cid in ended:
            self.resolve_failed(cid, "node-fenced", reason)
        return len(ended)

    async def cancel(self, cid: str, node: str) -> bool:
        """Ask the node's agent to cancel a command in flight; False if it is not connected."""
        if cid in self._sent or cid in self._waiting:
            # Never overtake the command itself: an agent ignores a cancel for an id it has
            # not received yet.
            sent = self._sent.setdefault(cid, asyncio.Event())
            await self.clock.wait_event(sent, CANCEL_AFTER_SEND_WAIT)
        session = self.sessions.session(node)
        if session is None:
            return False
        try:
            await session.send(Cancel(command_id=cid))
        except (RuntimeError, OSError):
            return False
        return True

    async def on_progress(self, link: AgentLink, progress: Progress) -> None:
        """The gateway's handler of `progress` messages: kept while the command is awaited
        (and only from the node it was sent to), dropped otherwise."""
        cid = progress.command_id
        owner = self._node_of.get(cid)
        if owner is None:
            self._dropped(link, "progress for a command nobody awaits", [cid])
        elif owner != link.node:
            await self._refuse_foreign(link, "progress", [cid])
        else:
            self._progress[cid] = progress

    def progress(self, cid: str) -> Progress | None:
        """The latest progress the agent reported for a command awaited now."""
        return self._progress.get(cid)

    @property
    def progress_held(self) -> int:
        """How many commands' progress is held (at most one per command awaited now)."""
        return len(self._progress)

    async def _refuse_foreign(self, link: AgentLink, what: str, cids: list[str]) -> None:
        """An agent sent `what` for commands that were not sent to its node: refused, with an
        error reply and one log line (rate-limited per node)."""
        held = self._foreign_log.take(link.node)
        if held is not None:
            more = f" ({held} more refused since the last line)" if held else ""
            log.warning("node %s sent %s for commands of other nodes, refused: %s%s",
                        link.node, what, _some(cids), more)  # fmt: skip
        message = f"{what} refused: {_some(cids, 1)} not sent to node {link.node}"
        await link.send(ErrorMsg(code="not-yours", message=message))

    def _dropped(self, link: AgentLink, what: str, cids: list[str]) -> None:
        """Logged (rate-limited per node), and nothing else."""
        held = self._dropped_log.take(link.node)
        if held is not None:
            more = f" ({held} more dropped since the last line)" if held else ""
            log.info("node %s: %s dropped: %s%s", link.node, what, _some(cids), more)

    async def on_session_lost(self, link: AgentLink) -> None:
        """Commands in flight on a lost session are INTERRUPTED; their callers keep waiting
        (with their deadline) for the reconciler to establish what happened."""
        for cid in [c for c, n in list(self._node_of.items()) if n == link.node]:
            await self.move(
                cid, CommandState.INTERRUPTED, note="agent session lost", expect=CommandState.SENT
            )


def _store(
    conn: Connection,
    cid: str,
    outcome: CommandOutcome,
    via: str,
    answer_state: AgentCommandState | None,
    current: CommandState,
    now: datetime,
) -> bool:
    """Store the outcome of ``cid``, whose state is `current` (in the caller's transaction);
    whether it ended it."""
    return commands.store_outcome(
        conn, cid, ok=outcome.ok, answer=outcome.as_answer(),
        error=outcome.error_message if not outcome.ok else None, via=via,
        answer_state=answer_state, current=current, now=now,
    )  # fmt: skip


def _some(cids: list[str], shown: int = 3) -> str:
    """A few command ids for a log line or an error (agents' ids may be long)."""
    text = ", ".join(cid[:64] for cid in cids[:shown])
    return text + (f" and {len(cids) - shown} more" if len(cids) > shown else "")
