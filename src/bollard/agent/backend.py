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
from bollard.domain.protocol import Answer, Command

log = logging.getLogger(__name__)

# Starts the hypervisor job of a command (e.g. ``driver.migrate(...)``); idempotent per id.
JobStarter = Callable[[Command], Awaitable[JobInfo]]

CANCEL_HOOK = "aborted by cancel hook"


def job_answer(command_id: str, job: JobInfo) -> tuple[Answer, str | None]:
    """The answer of an ended job, and the journal note it deserves."""
    if job.status == JobStatus.COMPLETED:
        result = {**job.result, "job": {"kind": job.kind, "progress": job.progress}}
        return Answer(command_id=command_id, ok=True, result=result), None
    code = "aborted" if job.status == JobStatus.ABORTED else "job-failed"
    message = job.message or f"the hypervisor job was {job.status.value}"
    return failure(command_id, code, message), message


async def run_job(
    driver: HypervisorDriver, command: Command, start: JobStarter, poll: float
) -> tuple[Answer, str | None]:
    """Start the job and wait (polling) until it ends; cancelling aborts the job."""
    if not isinstance(driver, JobDriver):
        return failure(command.id, "invalid-input", "this driver runs no hypervisor jobs"), None
    try:
        job: JobInfo | None = await start(command)
        while job is not None and job.status == JobStatus.RUNNING:
            await asyncio.sleep(poll)  # the job's own clock drives it; poll its state
            job = await driver.job(command.id)
    except DriverError as exc:
        return failure(command.id, exc.code, exc.message), None
    except asyncio.CancelledError:
        # A cancel or the command's deadline: the job must not go on alone.
        try:
            await driver.abort_job(command.id, "the command was cancelled or timed out")
        except DriverError as exc:
            log.warning("command %s: could not abort its job: %s", command.id, exc)
        raise
    if job is None:
        return failure(command.id, "job-lost", "the hypervisor lost the job"), None
    return job_answer(command.id, job)


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
