"""The agent's command journal: what became of every command (DESIGN.md sections 1 and 5).

An entry per command, written durably *before* the agent acts and updated as it goes:
RECEIVED → STARTED → PROCESSING | PROCESSING_IN_BACKEND → COMPLETED | FAILED, holding the
answer at the end. Transitions follow ``AGENT_TRANSITIONS``; any other is refused (logged,
``TransitionRefused``). What the journal guarantees:

- Exactly once: a command id it knows (an entry, or the compact record of a pruned one)
  is never recorded as received again, so the executor never runs it twice.
- Restart: opening the journal turns what a dead agent left unfinished into INTERRUPTED
  (or DANGLED_IN_BACKEND for a hypervisor job), with a note (``AGENT_ON_RESTART``).
- Heartbeat sync: ``unacked()`` is what changed since the server's last ``ack()`` (after a
  restart: everything); an entry acknowledged in a terminal state is pruned, leaving a
  compact record (bounded: ``keep_finished`` records, ``keep_finished_for`` seconds) that
  still answers a redelivery or a query.
- A torn or corrupt entry is set aside by the store and counted (``corrupt_entries``).

Calls are synchronous and durable on return; the agent makes them from its event loop.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bollard.agent.journal_store import DirJournalStore, JournalStore, MemoryJournalStore
from bollard.domain.commands import (
    AGENT_ON_RESTART,
    AGENT_TERMINAL,
    AgentCommandState,
    agent_allowed,
)
from bollard.domain.protocol import Answer, AnswerError, Command, JournalEntry

log = logging.getLogger(__name__)


INTERRUPTED_CODE = "interrupted"
NEVER_RECEIVED_CODE = "never-received"
TOMBSTONE_NOTE = "reconciled before it arrived"

_RESTART_NOTES = {
    AgentCommandState.RECEIVED: ("agent restarted before the command started; it was not executed"),
    AgentCommandState.STARTED: (
        "agent restarted before the command was processed; it was not executed"
    ),
    AgentCommandState.PROCESSING: (
        "agent restarted while the command was PROCESSING; its outcome is unknown"
    ),
    AgentCommandState.PROCESSING_IN_BACKEND: (
        "agent restarted while the command ran as a hypervisor job; the job may still run"
    ),
}


class JournalError(Exception):
    """The journal cannot record what was asked."""


class TransitionRefused(JournalError):
    pass


class DuplicateCommand(JournalError):
    pass


class JournalWriteFailed(JournalError):
    """The store could not write durably (disk full, I/O error); nothing was changed."""


def answer_from(entry: JournalEntry) -> Answer | None:
    """The answer a finished entry holds (None while it is not finished).

    An INTERRUPTED entry answers ``ok=False`` with error code ``interrupted``: the command
    will not run (again) and its effect is unknown; the live state tells what happened.
    """
    if entry.state == AgentCommandState.COMPLETED:
        return Answer(command_id=entry.command_id, ok=True, result=entry.result)
    if entry.state == AgentCommandState.FAILED:
        error = entry.error or AnswerError(code="failed", message=entry.note or "failed")
        return Answer(command_id=entry.command_id, ok=False, result=entry.result, error=error)
    if entry.state == AgentCommandState.INTERRUPTED:
        message = entry.note or "interrupted by an agent restart"
        return Answer(
            command_id=entry.command_id,
            ok=False,
            error=AnswerError(code=INTERRUPTED_CODE, message=message),
        )
    return None


class CommandJournal:
    def __init__(
        self,
        store: JournalStore,
        *,
        clock: Callable[[], float] = time.time,
        keep_finished: int = 10_000,
        keep_finished_for: float = 24 * 3600.0,
        compact_slack: int | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.keep_finished = keep_finished
        self.keep_finished_for = keep_finished_for
        self.compact_slack = (
            compact_slack if compact_slack is not None else max(64, keep_finished // 4)
        )
        loaded = store.load()
        self.corrupt_entries = loaded.corrupt
        self._entries: dict[str, JournalEntry] = {e.command_id: e for e in loaded.entries}
        self._finished: OrderedDict[str, JournalEntry] = OrderedDict()
        for record in loaded.finished:
            self._finished.pop(record.command_id, None)
            self._finished[record.command_id] = record
        # command id -> the state the server acknowledged; nothing is acknowledged after a
        # load, so everything is reported again on the first heartbeat.
        self._acked: dict[str, AgentCommandState] = {}
        self._trim_finished()
        self.recovered = self._recover()

    @classmethod
    def open(cls, directory: Path, **kw: Any) -> CommandJournal:
        """The durable journal in ``directory`` (created if needed), recovered after a crash."""
        return cls(DirJournalStore(directory), **kw)

    @classmethod
    def in_memory(cls, **kw: Any) -> CommandJournal:
        return cls(MemoryJournalStore(), **kw)

    # reading

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._entries or command_id in self._finished

    def get(self, command_id: str) -> JournalEntry | None:
        """The entry, else the compact record of a pruned one, else None."""
        return self._entries.get(command_id) or self._finished.get(command_id)

    def answer_for(self, command_id: str) -> Answer | None:
        entry = self.get(command_id)
        return None if entry is None else answer_from(entry)

    def entries(self) -> list[JournalEntry]:
        """The full (unpruned) entries, oldest first."""
        return sorted(self._entries.values(), key=lambda e: (e.received_at, e.command_id))

    @property
    def finished_count(self) -> int:
        return len(self._finished)

    # recording

    def record_received(self, command: Command) -> JournalEntry:
        """A new command, before anything is done for it (DuplicateCommand if known)."""
        if command.id in self:
            raise DuplicateCommand(f"command {command.id} is already in the journal")
        now = self._clock()
        entry = JournalEntry(
            command_id=command.id,
            command=command.command,
            vm_uuid=command.vm_uuid,
            epoch=command.epoch,
            state=AgentCommandState.RECEIVED,
            received_at=now,
            updated_at=now,
        )
        self._write(entry)
        return entry

    def record_tombstone(self, command_id: str, vm_uuid: str | None = None) -> JournalEntry:
        """Record that a command never arrived, so that it is refused if it arrives late."""
        entry = self.record_failed(
            command_id,
            NEVER_RECEIVED_CODE,
            "the server reconciled this command before it reached the agent",
            note=TOMBSTONE_NOTE,
            vm_uuid=vm_uuid,
        )
        log.info("journal: tombstone for command %s (never received)", command_id)
        return entry

    def record_failed(
        self,
        command_id: str,
        code: str,
        message: str,
        *,
        note: str = "",
        vm_uuid: str | None = None,
    ) -> JournalEntry:
        """A FAILED entry for a command that will never run (a tombstone, a malformed
        command); its type is unknown (``command`` is None)."""
        if command_id in self:
            raise DuplicateCommand(f"command {command_id} is already in the journal")
        now = self._clock()
        entry = JournalEntry(
            command_id=command_id,
            command=None,
            vm_uuid=vm_uuid,
            state=AgentCommandState.FAILED,
            ok=False,
            error=AnswerError(code=code, message=message),
            received_at=now,
            updated_at=now,
            note=note,
        )
        self._write(entry)
        return entry

    def advance(
        self, command_id: str, state: AgentCommandState, note: str | None = None
    ) -> JournalEntry:
        entry = self._checked(command_id, state)
        update: dict[str, Any] = {"state": state, "updated_at": self._clock()}
        if note is not None:
            update["note"] = note
        new = entry.model_copy(update=update)
        self._write(new)
        return new

    def finish(self, command_id: str, answer: Answer, note: str | None = None) -> JournalEntry:
        """Record the answer: COMPLETED if it is ok, else FAILED."""
        state = AgentCommandState.COMPLETED if answer.ok else AgentCommandState.FAILED
        entry = self._checked(command_id, state)
        update: dict[str, Any] = {
            "state": state,
            "ok": answer.ok,
            "result": answer.result,
            "error": answer.error,
            "updated_at": self._clock(),
        }
        if note is not None:
            update["note"] = note
        new = entry.model_copy(update=update)
        self._write(new)
        return new

    def _checked(self, command_id: str, state: AgentCommandState) -> JournalEntry:
        entry = self._entries.get(command_id)
        if entry is None:
            log.error("journal: refused %s for command %s: no such entry", state, command_id)
            raise TransitionRefused(f"command {command_id} has no open journal entry")
        if not agent_allowed(entry.state, state):
            log.error(
                "journal: refused transition of command %s: %s -> %s",
                command_id,
                entry.state,
                state,
            )
            raise TransitionRefused(f"command {command_id}: {entry.state} -> {state} refused")
        return entry

    def _write(self, entry: JournalEntry) -> None:
        try:
            self.store.put(entry)
        except OSError as exc:
            log.error("journal: cannot write command %s: %s", entry.command_id, exc)
            raise JournalWriteFailed(f"cannot write journal entry: {exc}") from exc
        self._entries[entry.command_id] = entry

    def _recover(self) -> list[str]:
        recovered = []
        for entry in self.entries():
            target = AGENT_ON_RESTART.get(entry.state)
            if target is None:
                continue
            self.advance(entry.command_id, target, _RESTART_NOTES[entry.state])
            log.warning(
                "journal: command %s was %s when the agent stopped; now %s",
                entry.command_id,
                entry.state,
                target,
            )
            recovered.append(entry.command_id)
        return recovered

    # heartbeat sync and pruning

    def unacked(self, limit: int | None = None) -> list[JournalEntry]:
        """Entries changed since the server acknowledged them, least recently changed first."""
        changed = [e for e in self._entries.values() if self._acked.get(e.command_id) != e.state]
        changed.sort(key=lambda e: (e.updated_at, e.command_id))
        return changed if limit is None else changed[:limit]

    def ack(self, states: Mapping[str, AgentCommandState]) -> int:
        """The server stored these entries at these states; prune what may go. How many went."""
        for command_id, state in states.items():
            if command_id in self._entries:
                self._acked[command_id] = state
        return self.prune()

    def prune(self) -> int:
        """Retire entries acknowledged in their (terminal) state to compact records."""
        done = [
            e
            for e in self._entries.values()
            if e.state in AGENT_TERMINAL and self._acked.get(e.command_id) == e.state
        ]
        if not done:
            return 0
        try:
            self.store.retire(done)
        except OSError as exc:
            log.error("journal: cannot prune %d entries (will retry): %s", len(done), exc)
            return 0
        for entry in done:
            del self._entries[entry.command_id]
            self._acked.pop(entry.command_id, None)
            self._finished.pop(entry.command_id, None)
            self._finished[entry.command_id] = entry
        self._trim_finished()
        return len(done)

    def _trim_finished(self) -> None:
        horizon = self._clock() - self.keep_finished_for
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if len(self._finished) <= self.keep_finished and oldest.updated_at >= horizon:
                break
            self._finished.popitem(last=False)
        if self.store.finished_records > len(self._finished) + self.compact_slack:
            try:
                self.store.compact(list(self._finished.values()))
            except OSError as exc:
                log.error("journal: cannot compact finished records (will retry): %s", exc)
