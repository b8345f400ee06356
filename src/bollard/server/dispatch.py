"""The command dispatcher: every command is written to the database before it is sent, and
its caller waits for the outcome with a deadline.

States follow the whitelisted table of bollard.domain.commands: CREATED is written first,
then SENT (before the bytes leave, so an answer can never arrive for an unsent command), then
COMPLETED | FAILED on the answer. The outcome can arrive three ways: the direct answer, the
same answer in a heartbeat's journal sync (when the direct one was lost), or the command
reconciler (after the session was lost, the server restarted, or the deadline passed). A
caller waits for the first of them, and never past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bollard.domain.commands import AgentCommandState, CommandState
from bollard.domain.errors import CommandFailed, CommandOutcomeUnknown, NodeUnavailable, NotFound
from bollard.domain.ids import new_id
from bollard.domain.models import CommandRecord
from bollard.domain.protocol import Answer, Cancel, Command, JournalEntry, Progress
from bollard.domain.states import CommandType
from bollard.store import commands

if TYPE_CHECKING:
    from bollard.server.gateway import AgentSession
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)

C = CommandState
CANCEL_AFTER_SEND_WAIT = 5.0
_FROM_JOURNAL = (AgentCommandState.COMPLETED, AgentCommandState.FAILED)
_AWAITING_RECONCILE = (C.INTERRUPTED, C.TIMED_OUT, C.RECONCILE_RETRY)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: dict[str, Any]
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def of_answer(cls, answer: dict[str, Any]) -> Outcome:
        error = answer.get("error") or {}
        return cls(
            bool(answer.get("ok")),
            dict(answer.get("result") or {}),
            error.get("code"),
            error.get("message"),
        )

    def as_answer(self) -> dict[str, Any]:
        error = None if self.ok else {"code": self.error_code, "message": self.error_message}
        return {"ok": self.ok, "result": self.result, "error": error}


class Dispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._node_of: dict[str, str] = {}  # command id -> node, for the commands awaited
        self._sent: dict[str, asyncio.Event] = {}  # set once the command's bytes have left
        self._ended: dict[str, asyncio.Event] = {}
        self._progress: dict[str, Progress] = {}

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
    ) -> dict[str, Any]:
        """Create a command, send it to a node's agent and return the result of its outcome.

        Raises NodeUnavailable (not connected when sent), CommandFailed (the agent reported
        a failure, or reconciliation established one) or CommandOutcomeUnknown (no outcome
        within the deadline, nor within as long again for reconciliation).
        """
        timeout = timeout if timeout is not None else self.rt.config.command_timeout
        cid = new_id()
        args = dict(args or {})

        def tx() -> None:
            with self.rt.db.write() as conn:
                self.create_in(
                    conn, cid, node, command, args,
                    vm_uuid=vm_uuid, epoch=epoch, task_id=task_id, timeout=timeout,
                )  # fmt: skip

        await self.rt.db_call(tx)
        return await self.send_and_wait(
            cid, node, command, args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout
        )

    def create_in(
        self,
        conn: Connection,
        cid: str,
        node: str,
        command: CommandType,
        args: dict[str, Any],
        *,
        vm_uuid: str | None,
        epoch: int,
        task_id: str | None,
        timeout: float,
    ) -> None:
        """Write a command row (CREATED) inside the caller's transaction."""
        now = self.rt.clock.now()
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
        )

    async def send_and_wait(
        self,
        cid: str,
        node: str,
        command: CommandType,
        args: dict[str, Any],
        *,
        vm_uuid: str | None,
        epoch: int,
        timeout: float,
    ) -> dict[str, Any]:
        """Send a command whose row exists (CREATED) and wait for its outcome."""
        session = self.rt.gateway.session(node)
        if session is None:
            await self.move(cid, C.FAILED, note="node not connected", error="node not connected")
            self._mark_ended(cid)
            raise NodeUnavailable(f"node {node!r} is not connected")
        future = self._expect(cid, node)
        try:
            await self.move(cid, C.SENT)
            msg = Command(
                id=cid, command=command, args=args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout
            )
            try:
                await session.send(msg)
            except ConnectionError as exc:
                await self.move(cid, C.INTERRUPTED, note=f"send failed: {exc}")
            finally:
                self._sent.setdefault(cid, asyncio.Event()).set()
            outcome = await self._wait(cid, node, command, future, timeout)
        finally:
            self._forget(cid)
        return _result_or_raise(outcome, command, node)

    async def attach(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the outcome of a command sent earlier (e.g. before a server restart)."""
        timeout = timeout if timeout is not None else self.rt.config.command_timeout
        record = await self.rt.db_call(self._get, cid)
        command, node = CommandType(record.type), record.node
        future = self._expect(cid, node)
        try:
            record = await self.rt.db_call(self._get, cid)  # re-read: it may have ended meanwhile
            known = _known_outcome(record.state, record.answer, record.error)
            if known is not None:
                outcome = known
            else:
                self.rt.reconciler.kick(node)
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(future), 2 * timeout)
                except TimeoutError:
                    raise CommandOutcomeUnknown(
                        f"{command} on node {node!r}: outcome still unknown (command {cid})"
                    ) from None
        finally:
            self._forget(cid)
        return _result_or_raise(outcome, command, node)

    async def _wait(
        self,
        cid: str,
        node: str,
        command: CommandType,
        future: asyncio.Future[Outcome],
        timeout: float,
    ) -> Outcome:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            pass  # the deadline passed: let the reconciler find out, for as long again
        timed_out = await self.move(
            cid, C.TIMED_OUT, note=f"no answer within {timeout:g} s", expect=C.SENT
        )
        if timed_out:
            self.rt.reconciler.kick(node)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise CommandOutcomeUnknown(
                f"{command} on node {node!r}: no outcome within {2 * timeout:g} s "
                f"(command {cid}; the reconciler will settle it when the node answers)"
            ) from None

    def _expect(self, cid: str, node: str) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = future
        self._node_of[cid] = node
        return future

    def _forget(self, cid: str) -> None:
        self._waiting.pop(cid, None)
        self._node_of.pop(cid, None)
        self._progress.pop(cid, None)
        self._sent.pop(cid, None)

    def _get(self, cid: str) -> CommandRecord:
        with self.rt.db.read() as conn:
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
            with self.rt.db.write() as conn:
                return commands.transition(
                    conn, cid, state, self.rt.clock.now(), note=note, expect=expect, **values
                )

        return await self.rt.db_call(tx)

    # -- outcomes --------------------------------------------------------------------------

    async def on_answer(self, node: str, answer: Answer) -> None:
        if answer.error is not None and answer.error.code == "interrupted":
            # An agent restarted mid-command and does not know the outcome: not an outcome,
            # a question for the reconciler (which looks at the live VM).
            await self.move(
                answer.command_id,
                C.INTERRUPTED,
                note="agent reports it was interrupted",
                expect=C.SENT,
            )
            self.rt.reconciler.kick(node)
            return
        outcome = Outcome(
            answer.ok,
            answer.result,
            answer.error.code if answer.error else None,
            answer.error.message if answer.error else None,
        )
        await self._record_outcome(node, answer.command_id, outcome, "answer", answer_state=None)

    async def on_journal(
        self, node: str, entries: list[JournalEntry]
    ) -> dict[str, AgentCommandState]:
        """Store what the agent's journal says, in one transaction; an entry with an outcome
        counts as the answer. Returns what was stored, for the ack."""

        def tx(conn: Connection) -> list[tuple[str, Outcome]]:
            applied: list[tuple[str, Outcome]] = []
            now = self.rt.clock.now()
            # One read for every entry: most repeat what is stored already (an agent sends
            # an entry until it is acked, and its answer usually came first).
            known = commands.states_of(conn, [entry.command_id for entry in entries])
            for entry in entries:
                cid = entry.command_id
                current = known.get(cid)
                if current is None:
                    log.info("journal entry for unknown command %s (%s)", cid, entry.state)
                    continue
                state, agent_state = current
                awaiting = state is C.SENT or state in _AWAITING_RECONCILE
                if entry.state in _FROM_JOURNAL and entry.command is not None and awaiting:
                    outcome = Outcome(
                        entry.state is AgentCommandState.COMPLETED
                        if entry.ok is None
                        else entry.ok,
                        entry.result,
                        entry.error.code if entry.error else None,
                        entry.error.message if entry.error else None,
                    )
                    via = "journal sync"
                    if self._apply_outcome(conn, node, cid, outcome, via, entry.state):
                        applied.append((cid, outcome))
                elif agent_state != entry.state.value:
                    commands.set_agent_state(conn, cid, entry.state.value, now)
                known[cid] = (state, entry.state.value)
            return applied

        # In the agents' shared report transaction (group_commit.py); answered once committed.
        for cid, outcome in await self.rt.report_writes.run(tx):
            self.resolve(cid, outcome)
        return {entry.command_id: entry.state for entry in entries}

    async def _record_outcome(
        self,
        node: str,
        cid: str,
        outcome: Outcome,
        via: str,
        answer_state: AgentCommandState | None,
    ) -> None:
        def tx() -> bool:
            with self.rt.db.write() as conn:
                return self._apply_outcome(conn, node, cid, outcome, via, answer_state)

        applied = await self.rt.db_call(tx)
        if applied:
            self.resolve(cid, outcome)
        else:
            log.debug("node %s: %s for command %s did not change it", node, via, cid)

    def _apply_outcome(
        self,
        conn: Connection,
        node: str,
        cid: str,
        outcome: Outcome,
        via: str,
        answer_state: AgentCommandState | None,
    ) -> bool:
        """Store the outcome of ``cid`` (in the caller's transaction); whether it ended it."""
        now = self.rt.clock.now()
        ended = AgentCommandState.COMPLETED if outcome.ok else AgentCommandState.FAILED
        agent_state = (answer_state or ended).value
        try:
            current = commands.state(conn, cid)
        except NotFound:
            log.info("node %s: %s for unknown command %s", node, via, cid)
            return False
        values: dict[str, Any] = {
            "answer": outcome.as_answer(),
            "agent_state": agent_state,
            "error": outcome.error_message if not outcome.ok else None,
        }
        if current is C.SENT:
            final = C.COMPLETED if outcome.ok else C.FAILED
            return commands.transition(conn, cid, final, now, note=f"via {via}", **values)
        if current in _AWAITING_RECONCILE:
            # The outcome arrived after the session was lost or the deadline passed.
            commands.transition(conn, cid, C.RECONCILING, now, note=f"outcome via {via}")
            return commands.transition(
                conn, cid, C.RECONCILED, now, note=f"outcome via {via}", **values
            )
        commands.set_agent_state(conn, cid, agent_state, now)
        return False

    def resolve(self, cid: str, outcome: Outcome) -> None:
        """The outcome of `cid` is known and stored: wake its caller and anyone waiting on it."""
        future = self._waiting.get(cid)
        if future is not None and not future.done():
            future.set_result(outcome)
        elif future is None:
            self.rt.on_late_outcome(cid, outcome)
        self._mark_ended(cid)

    def resolve_answer(self, cid: str, answer: dict[str, Any]) -> None:
        self.resolve(cid, Outcome.of_answer(answer))

    def resolve_failed(self, cid: str, code: str, message: str) -> None:
        self.resolve(cid, Outcome(False, {}, code, message))

    def _mark_ended(self, cid: str) -> None:
        event = self._ended.pop(cid, None)
        if event is not None:
            event.set()

    async def wait_ended(self, cids: list[str], timeout: float) -> None:
        """Return once any of `cids` has reached a terminal state, or `timeout` has passed."""
        events = [self._ended.setdefault(cid, asyncio.Event()) for cid in cids]
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def abandon_node(self, node: str, reason: str) -> int:
        """The node is off (fenced): its open commands can never complete. Each ends (FAILED,
        or RECONCILE_SKIPPED) and whoever waits for it is told at once."""

        def tx() -> list[str]:
            now = self.rt.clock.now()
            ended = []
            with self.rt.db.write() as conn:
                for cmd in commands.open_on_node(conn, node):
                    state = C(cmd.state)
                    if state in (C.CREATED, C.SENT):
                        done = commands.transition(
                            conn, cmd.id, C.FAILED, now, note=reason, error=reason
                        )
                    else:
                        if state is not C.RECONCILING:
                            commands.transition(conn, cmd.id, C.RECONCILING, now, note=reason)
                        done = commands.transition(
                            conn, cmd.id, C.RECONCILE_SKIPPED, now, note=reason, error=reason
                        )
                    if done:
                        ended.append(cmd.id)
            return ended

        ended = await self.rt.db_call(tx)
        for cid in ended:
            self.resolve_failed(cid, "node-fenced", reason)
        return len(ended)

    def announce(self, cid: str) -> None:
        """A command is about to be sent: a cancel for it waits until it has been."""
        self._sent.setdefault(cid, asyncio.Event())

    def not_sending(self, cid: str) -> None:
        """An announced command will not be sent after all."""
        self._sent.pop(cid, asyncio.Event()).set()

    async def cancel(self, cid: str, node: str) -> bool:
        """Ask the node's agent to cancel a command in flight; False if it is not connected."""
        if cid in self._sent or cid in self._waiting:
            # Never overtake the command itself: an agent ignores a cancel for an id it has
            # not received yet.
            sent = self._sent.setdefault(cid, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sent.wait(), CANCEL_AFTER_SEND_WAIT)
        session = self.rt.gateway.session(node)
        if session is None:
            return False
        try:
            await session.send(Cancel(command_id=cid))
        except (RuntimeError, OSError):
            return False
        return True

    def on_progress(self, node: str, progress: Progress) -> None:
        self._progress[progress.command_id] = progress

    async def on_session_lost(self, session: AgentSession) -> None:
        """Commands in flight on a lost session are INTERRUPTED; their callers keep waiting
        (with their deadline) for the reconciler to establish what happened."""
        for cid in [c for c, n in list(self._node_of.items()) if n == session.node]:
            await self.move(cid, C.INTERRUPTED, note="agent session lost", expect=C.SENT)


_OUTCOME_STATES = (C.COMPLETED, C.FAILED, C.RECONCILED)


def _known_outcome(state: str, answer: dict[str, Any] | None, error: str | None) -> Outcome | None:
    """The outcome a command's row already holds, if it has ended."""
    st = C(state)
    if st in _OUTCOME_STATES and answer is not None:
        return Outcome.of_answer(answer)
    if st is C.FAILED:
        return Outcome(False, {}, "failed", error or "failed")
    if st is C.RECONCILE_SKIPPED:
        return Outcome(False, {}, "skipped", error or "reconciliation skipped")
    if st is C.RECONCILE_FAILED:
        return Outcome(False, {}, "reconcile-failed", error or "could not be reconciled")
    return None


def _result_or_raise(outcome: Outcome, command: CommandType, node: str) -> dict[str, Any]:
    if outcome.ok:
        return outcome.result
    message = outcome.error_message or "the agent reported a failure"
    if outcome.error_code == "reconcile-failed":
        raise CommandOutcomeUnknown(f"{command} on node {node!r}: {message}")
    raise CommandFailed(
        f"{command} on node {node!r} failed: {message}", code=outcome.error_code or None
    )
