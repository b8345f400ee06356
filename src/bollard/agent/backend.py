"""Commands that run as hypervisor jobs (PROCESSING_IN_BACKEND), and the cancel hooks.

A job outlives the agent process (a migration, a block copy): the executor starts it, polls
it until it ends and journals the outcome. Jobs that must not run unsupervised are aborted
through the driver when the agent loses its server or restarts (``cancel_hook``); entries
left DANGLED_IN_BACKEND by a restart are settled from the job's final state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from bollard.agent.drivers.base import HypervisorDriver, JobDriver, JobInfo, JobStatus
from bollard.agent.journal import CommandJournal, JournalError
from bollard.agent.operations import failure
from bollard.domain.commands import AgentCommandState
from bollard.domain.errors import DriverError
from bollard.domain.protocol import Answer, Command, Progress

log = logging.getLogger(__name__)

# Starts the hypervisor job of a command (e.g. ``driver.migrate(...)``); idempotent per id.
JobStarter = Callable[[Command], Awaitable[JobInfo]]
# Told how a running job advances (the executor turns it into ``progress`` messages).
ProgressHook = Callable[[JobInfo], Awaitable[None]]

CANCEL_HOOK = "aborted by cancel hook"
# How long a cancelled command waits for its job's start, under way in the driver, to end
# before it aborts the job (so that the abort finds the job it must stop).
START_GRACE = 30.0
# Errors of a job's start that mean it was refused: nothing was started.
_REFUSED = frozenset({"not-found", "invalid-state", "invalid-input"})
# Quicker looks at a running job (see PollPace): a poll over this much, this many times at
# most near its predicted end.
QUICK_DIVISOR = 8
QUICK_NEAR_END = 8


class PollPace:
    """How long to wait before the next look at a running job: ``poll``, but quicker where
    its end is likely, so that the answer does not wait most of a poll after it.

    - The first moments: ``poll`` / QUICK_DIVISOR, doubled at each look up to ``poll`` (a
      copy of a small volume ends within them).
    - Its predicted end: once the progress (a fraction of the way) says that less than a
      poll is left at the pace so far, the wait is what is left (at least a quick poll),
      QUICK_NEAR_END times at most per job (a job whose progress misleads, e.g. a
      migration that converges slowly at 99%, is then looked at every ``poll`` again).

    At most a dozen more looks per job than at a steady ``poll``, each a read of the
    driver's job (a record file, the hypervisor's job info).
    """

    def __init__(self, poll: float, now: Callable[[], float]) -> None:
        self.poll = poll
        self.quick = poll / QUICK_DIVISOR
        self._now = now
        self._began = now()
        self._ramp = self.quick
        self._near_end = QUICK_NEAR_END

    def next(self, progress: float) -> float:
        """Seconds to wait, the job's progress (0..1) being ``progress`` now."""
        if self._ramp < self.poll:
            wait, self._ramp = self._ramp, self._ramp * 2
            return wait
        if progress > 0 and self._near_end > 0:
            left = (self._now() - self._began) * (1.0 - progress) / progress
            if left < self.poll:
                self._near_end -= 1
                return max(self.quick, left)
        return self.poll


def job_answer(command_id: str, job: JobInfo) -> tuple[Answer, str | None]:
    """The answer of an ended job, and the journal note it deserves."""
    if job.status == JobStatus.COMPLETED:
        result = {**job.result, "job": {"kind": job.kind, "progress": job.progress}}
        return Answer(command_id=command_id, ok=True, result=result), None
    code = "aborted" if job.status == JobStatus.ABORTED else job.error_code or "job-failed"
    message = job.message or f"the hypervisor job was {job.status.value}"
    answer = failure(command_id, code, message)
    return answer.model_copy(update={"result": dict(job.result)}), message


async def run_job(
    driver: HypervisorDriver,
    command: Command,
    start: JobStarter,
    poll: float,
    progress: ProgressHook | None = None,
) -> tuple[Answer, str | None]:
    """Start the job and wait (polling, every ``poll`` seconds or sooner, see PollPace)
    until it ends; cancelling aborts the job.

    An error reading the job while it runs is logged and the polling goes on (the
    command's deadline bounds it): the job's real end decides the answer.
    """
    if not isinstance(driver, JobDriver):
        return failure(command.id, "invalid-input", "this driver runs no hypervisor jobs"), None
    starting = asyncio.ensure_future(_start(driver, command, start))
    try:
        first = await asyncio.shield(starting)
        if isinstance(first, Answer):
            return first, None
        job = first
        pace = PollPace(poll, asyncio.get_running_loop().time)
        while job.status == JobStatus.RUNNING:
            if progress is not None:
                await progress(job)
            await asyncio.sleep(pace.next(job.progress))  # the job's own clock drives it
            try:
                latest = await driver.job(command.id)
            except DriverError as exc:
                log.warning("command %s: cannot read its job (will retry): %s", command.id, exc)
                continue
            if latest is None:
                message = "the hypervisor lost the job while it ran"
                return failure(command.id, "job-unknown", message), message
            job = latest
    except asyncio.CancelledError:
        # A cancel or the command's deadline: the job must not go on alone. A start still
        # under way in the driver is let finish first, so the abort finds its job.
        await asyncio.wait({starting}, timeout=START_GRACE)
        try:
            reason = "the command was cancelled or timed out, or its agent stopped"
            await driver.abort_job(command.id, reason)
        except DriverError as exc:
            log.warning("command %s: could not abort its job: %s", command.id, exc)
        raise
    return job_answer(command.id, job)


def progress_reporter(
    send: Callable[[Progress], Awaitable[object]], command_id: str, every: float
) -> ProgressHook:
    """A ProgressHook sending ``progress`` messages: on each tenth of the way, on a change
    of phase, and at least every ``every`` seconds while the job runs."""
    loop = asyncio.get_running_loop()
    last: tuple[int, str, float] | None = None

    async def report(job: JobInfo) -> None:
        nonlocal last
        tenth, now = int(job.progress * 10), loop.time()
        if last is not None and (tenth, job.phase) == last[:2] and now - last[2] < every:
            return
        last = (tenth, job.phase, now)
        what = f"{job.kind} {job.phase}".strip()
        message = f"{what}: {job.progress:.0%}"
        await send(Progress(command_id=command_id, fraction=job.progress, message=message))

    return report


async def _start(driver: JobDriver, command: Command, start: JobStarter) -> JobInfo | Answer:
    """The job as started, or the failed answer if it was not (nothing was started)."""
    try:
        return await start(command)
    except DriverError as exc:
        if exc.code in _REFUSED:
            return failure(command.id, exc.code, exc.message)
        try:
            job = await driver.job(command.id)
        except DriverError as again:
            message = f"{exc.message}; whether the job started is unknown: {again.message}"
            return failure(command.id, "job-unknown", message)
        if job is None:
            return failure(command.id, exc.code, exc.message)
        log.warning("command %s: its job started despite: %s", command.id, exc)
        return job


async def stopped_job_answer(
    driver: HypervisorDriver, command_id: str, code: str, message: str
) -> tuple[Answer, str] | None:
    """The answer of a job command that a cancel (``code`` "cancelled") or its deadline
    ("timed-out") stopped, from what became of its job once ``run_job`` aborted it: aborted,
    ``code``; ended on its own or past its point of no return, the job's own answer; still
    running, ``abort-failed``. None if the command has no job (it never started one)."""
    if not isinstance(driver, JobDriver):
        return None
    try:
        job = await driver.job(command_id)
    except DriverError as exc:
        note = f"{message}; its job cannot be read ({exc.message}): it may still run"
        return failure(command_id, "abort-failed", note), note
    if job is None:
        return None
    if job.status == JobStatus.RUNNING:
        note = f"{message}; its job could not be aborted and still runs"
        return failure(command_id, "abort-failed", note), note
    if job.status == JobStatus.ABORTED:
        answer, _ = job_answer(command_id, job)
        answer = answer.model_copy(
            update={"error": failure(command_id, code, f"{message}; its job was aborted").error}
        )
        return answer, f"{message}: the hypervisor job was aborted; nothing was done"
    answer, _ = job_answer(command_id, job)
    return answer, f"{message} too late: the hypervisor job had {job.status.value}"


async def cancel_hook(
    driver: HypervisorDriver,
    journal: CommandJournal,
    reason: str,
    inflight: Collection[str],
) -> list[str]:
    """Abort the jobs that must not run unsupervised; settle dangling journal entries.

    Jobs of commands still in flight are journaled by their own task (which sees the job
    aborted); the others (left by a restart) are journaled here. Returns the command ids
    whose jobs were aborted.
    """
    if not isinstance(driver, JobDriver):
        return []
    note = f"{CANCEL_HOOK}: {reason}"
    try:
        aborted = await driver.abort_jobs(note)
    except DriverError as exc:
        log.warning("cancel hook (%s): cannot abort hypervisor jobs: %s", reason, exc)
        aborted = []
    if aborted:
        log.warning("cancel hook (%s): aborted the jobs of %s", reason, ", ".join(aborted))
    for entry in journal.entries():
        if entry.state != AgentCommandState.DANGLED_IN_BACKEND or entry.command_id in inflight:
            continue
        try:
            job = await driver.job(entry.command_id)
        except DriverError as exc:
            log.warning("cannot read the job of command %s: %s", entry.command_id, exc)
            continue
        if job is not None and job.status == JobStatus.RUNNING:
            continue  # allowed to run unsupervised; settled by a later hook
        if job is None:  # the agent died before the job started: nothing ran
            answer = failure(entry.command_id, "job-lost", "the hypervisor has no job for it")
            job_note: str | None = "the hypervisor job never started"
        else:
            answer, job_note = job_answer(entry.command_id, job)
        try:
            journal.finish(entry.command_id, answer, job_note)
        except JournalError as exc:
            log.error("cannot journal the end of command %s: %s", entry.command_id, exc)
    return aborted
