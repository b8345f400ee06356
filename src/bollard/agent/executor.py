"""Runs commands from the server through the hypervisor driver, journaling every step.

Each command runs as its own asyncio task; commands for the same VM are serialised by a
per-VM lock. The journal entry is written (durably) before anything is done and follows the
command: RECEIVED (on receipt) → STARTED (VM lock held) → PROCESSING or
PROCESSING_IN_BACKEND (just before the driver acts) → COMPLETED | FAILED (before the answer
is sent). What the server can rely on:

- A command id the journal knows is never executed again. Finished: its answer is sent
  again from the journal. Still running: its answer follows when it ends. INTERRUPTED by a
  restart: answered ``ok=False`` with code ``interrupted`` (outcome unknown; query the VM).
- A command whose epoch is older than the VM's epoch on this host is refused: FAILED with
  code ``stale-epoch`` (epoch 0 means "not VM-bound" and is not checked).
- A command not finished by its ``timeout`` (counted from receipt, VM-lock wait included)
  fails with code ``timed-out``; a ``cancel`` fails it with code ``cancelled``. Either way
  the journal note says whether the driver may already have acted.
- A ``query`` is answered with the journal entry and the live VM; for an id the journal does
  not know, a tombstone (FAILED, ``never-received``) is written first and the answer has
  ``entry: null``, so the command is refused if it arrives later.
- An ``inspect`` is answered with the VM as the hypervisor has it now (None: not on this
  host) and ``job_running``: a job concerning the VM runs on this host (a migration from or
  to it) or a backend command for it (``migrate``) is in flight here. Read-only: nothing is
  journaled. When ``job_running`` is false, ``vm`` is settled: it was read after no job was
  found running. If the hypervisor cannot be read, no answer is sent (ask again).
- Commands run as hypervisor jobs (``backend_commands``: ``migrate`` where the driver can)
  send ``progress`` messages while they run (on each tenth, on a change of phase, and at
  least every PROGRESS_EVERY seconds). A cancel or the deadline aborts the job; the answer
  then tells what became of it: ``cancelled`` / ``timed-out`` if it was aborted (or had not
  started), the job's own answer if it had ended or was past its point of no return (a
  migration past its switchover completes: ``ok``), ``abort-failed`` if it still runs.
- The image commands (``volume_export``, ``volume_import``: agent/image_ops.py) run in the
  agent itself, streaming to or from the server's image spool (``images``: the session's
  server, TLS and token), and send ``progress`` messages likewise.
- ``vf_set`` changes an SR-IOV VF's settings through the agent's SR-IOV (``sriov``:
  agent/sriov_agent.py), one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, NoReturn

from bollard.agent.backend import (
    JobStarter,
    cancel_hook,
    progress_reporter,
    run_job,
    stopped_job_answer,
)
from bollard.agent.drivers.base import (
    AgentFault,
    ConsoleSource,
    DiskSource,
    FaultSource,
    HypervisorDriver,
    JobDriver,
    MigrationDriver,
    current_command_id,
)
from bollard.agent.image_ops import IMAGE_COMMANDS, ImageServer, perform_image
from bollard.agent.journal import CommandJournal, JournalError, answer_from
from bollard.agent.migrate import migration_starter
from bollard.agent.operations import failure, perform
from bollard.agent.sriov_agent import VF_SET_LOCK, AgentSriov, perform_vf_set
from bollard.agent.storage_ops import (
    copy_starter,
    live_move_starter,
    lock_key,
    storage_report,
)
from bollard.domain.commands import AgentCommandState
from bollard.domain.errors import DriverError
from bollard.domain.protocol import (
    Answer,
    Command,
    Inspect,
    InspectResult,
    JournalEntry,
    Progress,
    Query,
    QueryResult,
    StorageQuery,
    StorageReport,
    VmReport,
)
from bollard.domain.states import CommandType

log = logging.getLogger(__name__)


Sender = Callable[
    [Answer | QueryResult | InspectResult | Progress | StorageReport], Coroutine[Any, Any, object]
]

CRASH_EXIT_CODE = 86  # exit status of an agent killed by the crash-agent fault
JOB_POLL = 0.1
PROGRESS_EVERY = 0.5  # seconds between progress messages at most, while a job advances

_MAY_HAVE_ACTED = (AgentCommandState.PROCESSING, AgentCommandState.PROCESSING_IN_BACKEND)


def crash_now() -> NoReturn:
    """Die at once: no cleanup, no flush, like a kill -9 (the crash-agent fault)."""
    os._exit(CRASH_EXIT_CODE)


class Executor:
    def __init__(
        self,
        driver: HypervisorDriver,
        send: Sender,
        on_state_change: Callable[[], None] = lambda: None,
        journal: CommandJournal | None = None,
        *,
        crash: Callable[[], None] = crash_now,
        job_poll: float = JOB_POLL,
        images: ImageServer | None = None,
        sriov: AgentSriov | None = None,
    ) -> None:
        self.driver = driver
        self.images = images  # where image commands upload to and download from
        self.sriov = sriov  # the host's SR-IOV (None: none set up), for VF_SET
        self.journal = journal if journal is not None else CommandJournal.in_memory()
        # Command types that run as hypervisor jobs.
        self.backend_commands: dict[CommandType, JobStarter] = {}
        if isinstance(driver, MigrationDriver):
            self.backend_commands[CommandType.MIGRATE] = migration_starter(driver)
        if isinstance(driver, JobDriver):
            self.backend_commands[CommandType.VOLUME_COPY] = copy_starter(driver)
            self.backend_commands[CommandType.VOLUME_MOVE_LIVE] = live_move_starter(driver)
        self._send = send
        self._on_state_change = on_state_change
        self._crash = crash
        self._job_poll = job_poll
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._commands: dict[str, Command] = {}  # the commands of the tasks in _inflight
        self._cancel_requested: set[str] = set()
        self._started: set[str] = set()  # commands whose task has begun to run
        self._drop_answer: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._vm_locks: dict[str, asyncio.Lock] = {}
        self._vm_lock_users: dict[str, int] = {}

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # commands

    def submit(self, command: Command) -> None:
        """Start ``command`` (or answer it again from the journal); never blocks."""
        entry = self.journal.get(command.id)
        if entry is not None:
            previous = answer_from(entry)
            if previous is not None:
                log.info("command %s already %s; answering again", command.id, entry.state)
                self._spawn(self._send(previous), f"resend-{command.id}")
            elif command.id in self._inflight:
                log.info("command %s is already running; its answer will follow", command.id)
            else:
                log.warning(
                    "command %s is %s since a restart; not executed again", command.id, entry.state
                )
            return
        try:
            self.journal.record_received(command)
        except JournalError as exc:
            log.error("command %s refused: cannot journal it: %s", command.id, exc)
            refusal = failure(command.id, "journal-unavailable", str(exc))
            self._spawn(self._send(refusal), f"refuse-{command.id}")
            return
        task = asyncio.create_task(self._run(command), name=f"command-{command.id}")
        self._inflight[command.id] = task
        self._commands[command.id] = command
        task.add_done_callback(lambda _t: self._forget(command.id))

    def _forget(self, command_id: str) -> None:
        self._inflight.pop(command_id, None)
        self._commands.pop(command_id, None)

    def cancel(self, command_id: str) -> bool:
        """Cancel a running command (it is journaled FAILED ``cancelled`` and answered)."""
        task = self._inflight.get(command_id)
        if task is None or task.done():
            log.info("cancel of command %s: it is not running", command_id)
            return False
        if command_id in self._cancel_requested:
            log.info("cancel of command %s: already being cancelled", command_id)
            return True
        log.warning("command %s: cancelled by the server", command_id)
        self._cancel_requested.add(command_id)
        task.cancel()
        if command_id not in self._started:
            # Cancelled before its first step, the task will not run any of its code:
            # journal and answer the cancellation here.
            self._cancel_requested.discard(command_id)
            answer = failure(command_id, "cancelled", "cancelled by the server")
            self._record(command_id, answer, self._uncertain_note("cancelled", command_id))
            self._spawn(self._send(answer), f"cancelled-{command_id}")
            self._on_state_change()
        return True

    async def _run(self, command: Command) -> None:
        self._started.add(command.id)
        log.info(
            "command %s: %s vm=%s epoch=%s",
            command.id,
            command.command.value,
            command.vm_uuid,
            command.epoch,
        )
        try:
            answer, note = await self._perform(command)
        except asyncio.CancelledError:
            if command.id not in self._cancel_requested:
                raise  # the agent is stopping: the entry stays open, a restart settles it
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            answer, note = await self._stopped("cancelled", "cancelled by the server", command)
        finally:
            self._cancel_requested.discard(command.id)
            self._started.discard(command.id)
        self._record(command.id, answer, note)
        # Finished: a cancel can no longer touch it; a redelivery is answered from the journal.
        task = self._inflight.pop(command.id, None)
        if task is not None:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if command.id in self._drop_answer:
            self._drop_answer.discard(command.id)
            log.warning("command %s: answer dropped (injected fault)", command.id)
        else:
            await self._send(answer)
        self._on_state_change()  # let the server see the VM's new state (and the entry) now

    async def _stopped(self, code: str, message: str, command: Command) -> tuple[Answer, str]:
        """The answer of a command that a cancel or its deadline stopped."""
        if command.command in self.backend_commands:
            known = await stopped_job_answer(self.driver, command.id, code, message)
            if known is not None:
                return known
            return failure(command.id, code, message), f"{message} before its job started"
        what = "cancelled" if code == "cancelled" else "timed out"
        return failure(command.id, code, message), self._uncertain_note(what, command.id)

    def _uncertain_note(self, what: str, command_id: str | None = None) -> str:
        entry = self.journal.get(command_id) if command_id else None
        if entry is not None and entry.state in _MAY_HAVE_ACTED:
            return f"{what} while {entry.state}; the operation may have taken effect"
        return f"{what} before it was processed; nothing was done"

    def _record(self, command_id: str, answer: Answer, note: str | None) -> None:
        try:
            self.journal.finish(command_id, answer, note)
        except JournalError as exc:
            log.error("command %s: answer not journaled: %s", command_id, exc)
        if answer.ok:
            log.info("command %s: ok", command_id)
        else:
            assert answer.error is not None
            log.warning(
                "command %s: failed: %s: %s", command_id, answer.error.code, answer.error.message
            )

    async def _perform(self, command: Command) -> tuple[Answer, str | None]:
        uuid = command.vm_uuid
        key = uuid if uuid is not None else lock_key(command) if command.command.storage else None
        if command.command is CommandType.VF_SET:
            key = VF_SET_LOCK
        if key is None:
            return failure(command.id, "invalid-input", "command has no vm_uuid"), None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + command.timeout if command.timeout > 0 else None
        try:
            async with asyncio.timeout_at(deadline), self._vm_lock(key):
                return await self._perform_locked(command, uuid)
        except TimeoutError:
            return await self._stopped(
                "timed-out", f"not done within {command.timeout:g}s", command
            )
        except JournalError as exc:
            return failure(command.id, "journal-unavailable", str(exc)), None

    async def _perform_locked(
        self, command: Command, uuid: str | None
    ) -> tuple[Answer, str | None]:
        self.journal.advance(command.id, AgentCommandState.STARTED)
        refusal = await self._check_epoch(command, uuid) if uuid is not None else None
        if refusal is not None:
            return refusal, None
        fault = await self._take_agent_fault(command)
        backend = self.backend_commands.get(command.command)
        self.journal.advance(
            command.id,
            AgentCommandState.PROCESSING_IN_BACKEND if backend else AgentCommandState.PROCESSING,
        )
        if fault == AgentFault.CRASH_AGENT:
            log.critical("command %s: crashing the agent (injected fault)", command.id)
            self._crash()
        elif fault == AgentFault.DROP_ANSWER:
            self._drop_answer.add(command.id)
        token = current_command_id.set(command.id)
        try:
            if backend is not None:
                progress = progress_reporter(self._send, command.id, PROGRESS_EVERY)
                return await run_job(self.driver, command, backend, self._job_poll, progress)
            if command.command is CommandType.VF_SET:
                return await perform_vf_set(self.sriov, command), None
            if command.command in IMAGE_COMMANDS:
                sent = perform_image(self.driver, command, self.images, self._send, PROGRESS_EVERY)
                return await sent, None
            return await perform(self.driver, command, uuid), None
        finally:
            current_command_id.reset(token)

    async def _check_epoch(self, command: Command, uuid: str) -> Answer | None:
        """A refusal if the command's epoch is older than the VM's epoch on this host."""
        if command.epoch <= 0:
            return None  # not bound to an ownership epoch
        try:
            vm = await self.lookup(uuid)
        except DriverError as exc:
            return failure(command.id, exc.code, exc.message)
        if vm is not None and vm.epoch > command.epoch:
            message = f"command epoch {command.epoch} is older than the VM's epoch {vm.epoch}"
            return failure(command.id, "stale-epoch", message)
        return None

    async def _take_agent_fault(self, command: Command) -> AgentFault | None:
        if not isinstance(self.driver, FaultSource):
            return None
        try:
            return await self.driver.take_agent_fault(command.command)
        except DriverError as exc:
            log.warning("cannot read injected faults: %s", exc)
            return None

    async def lookup(self, uuid: str) -> VmReport | None:
        """The VM as the hypervisor has it now; None if it has no such VM."""
        return next((vm for vm in await self.driver.list_vms() if vm.uuid == uuid), None)

    @contextlib.asynccontextmanager
    async def _vm_lock(self, uuid: str) -> AsyncIterator[None]:
        lock = self._vm_locks.setdefault(uuid, asyncio.Lock())
        self._vm_lock_users[uuid] = self._vm_lock_users.get(uuid, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._vm_lock_users[uuid] -= 1
            if not self._vm_lock_users[uuid]:
                del self._vm_lock_users[uuid]
                del self._vm_locks[uuid]

    # reconciliation

    def query(self, msg: Query) -> None:
        """Answer a reconciler's query (a QueryResult is sent; see the module docstring).

        The tombstone for an unknown id is written here, synchronously, so a command that
        arrives after the query (in message order) is refused. If it cannot be written, or
        the VM cannot be read, no answer is sent and the reconciler asks again.
        """
        entry = self.journal.get(msg.command_id)
        if entry is None:
            try:
                self.journal.record_tombstone(msg.command_id, msg.vm_uuid)
            except JournalError as exc:
                log.error("query %s: cannot record a tombstone: %s", msg.query_id, exc)
                return
        uuid = msg.vm_uuid or (entry.vm_uuid if entry is not None else None)
        self._spawn(self._answer_query(msg, entry, uuid), f"query-{msg.query_id}")

    async def _answer_query(self, msg: Query, entry: JournalEntry | None, uuid: str | None) -> None:
        try:
            vm = await self.lookup(uuid) if uuid is not None else None
        except DriverError as exc:
            log.warning("query %s: cannot read VM %s: %s", msg.query_id, uuid, exc)
            return
        result = QueryResult(query_id=msg.query_id, command_id=msg.command_id, entry=entry, vm=vm)
        await self._send(result)

    def storage_query(self, msg: StorageQuery) -> None:
        """Answer a storage query (read-only: nothing is journaled)."""
        self._spawn(self._answer_storage(msg), f"storage-{msg.query_id}")

    async def _answer_storage(self, msg: StorageQuery) -> None:
        await self._send(await storage_report(self.driver, msg))

    def inspect(self, msg: Inspect) -> None:
        """Answer an inspect (an InspectResult is sent; see the module docstring)."""
        self._spawn(self._answer_inspect(msg), f"inspect-{msg.query_id}")

    async def _answer_inspect(self, msg: Inspect) -> None:
        uuid = msg.vm_uuid
        # Jobs first, then the VM: if no job runs, nothing moves the VM after this point
        # but a new command (which this agent would have received before the inspect).
        busy = any(
            c.vm_uuid == uuid and c.command in self.backend_commands
            for c in self._commands.values()
        )
        try:
            if not busy and isinstance(self.driver, JobDriver):
                busy = await self.driver.vm_busy(uuid)
            vm = await self.lookup(uuid)
            console, display = None, None
            if msg.console_lines > 0 and vm is not None and isinstance(self.driver, ConsoleSource):
                console = await self.driver.console_log(uuid, msg.console_lines)
                display = await self.driver.display(uuid)
            disks = None
            if msg.disks and vm is not None and isinstance(self.driver, DiskSource):
                disks = [
                    {"device": d.device, "path": d.path, "size_mb": d.size_mb}
                    for d in await self.driver.disks(uuid)
                ]
        except DriverError as exc:
            log.warning("inspect %s: cannot read VM %s: %s", msg.query_id, uuid, exc)
            return
        await self._send(
            InspectResult(
                query_id=msg.query_id,
                vm_uuid=uuid,
                vm=vm,
                job_running=busy,
                console=console,
                display=display,
                disks=disks,
            )
        )

    async def run_cancel_hook(self, reason: str) -> list[str]:
        """Abort the hypervisor jobs that must not run unsupervised (the agent lost its
        server, or restarted) and journal it; returns the command ids whose jobs stopped."""
        aborted = await cancel_hook(self.driver, self.journal, reason, set(self._inflight))
        if aborted:
            self._on_state_change()
        return aborted

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel running commands and wait (up to ``timeout``) for them to end.

        Their entries stay as they are; the next start turns them INTERRUPTED.
        """
        tasks = [*self._inflight.values(), *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("%d command task(s) did not stop within %.1fs", len(pending), timeout)
