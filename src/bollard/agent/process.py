"""The agent process: ``run_agent(config)`` blocks until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from pathlib import Path

from bollard.agent.config import AgentConfig, AgentConfigError, make_driver, read_token, validate
from bollard.agent.drivers.base import AgentProcessRecorder
from bollard.agent.host_shutdown import ShutdownDetector, announce_shutdown, detector_for
from bollard.agent.journal import CommandJournal, JournalError
from bollard.agent.logs import configure_logging, node_var
from bollard.agent.seq import SeqCounter
from bollard.agent.session import AgentSession
from bollard.agent.sriov_agent import start_sriov

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


def run_agent(config: AgentConfig) -> None:
    """Run the agent until SIGTERM or SIGINT; returns normally (exit 0) after a clean stop.

    Raises AgentConfigError (before connecting) for bad configuration.
    """
    configure_logging(config.log_level)
    asyncio.run(_main(config))


async def _main(config: AgentConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_agent_async(config, stop, record_pid=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_agent_async(
    config: AgentConfig,
    stop: asyncio.Event,
    journal: CommandJournal | None = None,
    *,
    record_pid: bool = False,
    shutdown_detector: ShutdownDetector | None = None,
) -> None:
    """Run the agent in the current event loop until ``stop`` is set.

    When ``stop`` is set and the host is shutting down cleanly (``shutdown_detector``, by
    default the driver's: see agent/host_shutdown.py), the server is told and its answer
    awaited (at most ``config.shutdown_wait`` seconds) before the agent stops.

    ``record_pid``: this process is the agent and nothing else (``run_agent``); with a driver
    that records it (``AgentProcessRecorder``: the sim driver, in its fabric), a power off of
    the host kills it.

    Raises AgentConfigError (before connecting) for bad configuration.
    """
    node_var.set(config.node)
    validate(config)
    token = read_token(config.token_file)
    driver = make_driver(config)
    if record_pid and isinstance(driver, AgentProcessRecorder):
        await driver.record_agent_process()
    seq = SeqCounter.load(config.state_dir)
    # SR-IOV before the first hello: VF counts set, every VF's recorded settings re-applied.
    sriov = await start_sriov(config, driver)
    if journal is None:
        journal = open_journal(config)
    incarnation = str(uuid.uuid4())
    log.info(
        "agent starting: driver %s, incarnation %s, generation %d, journal %d entries"
        " (%d interrupted by the last stop, %d corrupt set aside)",
        driver.name,
        incarnation,
        seq.generation,
        len(journal),
        len(journal.recovered),
        journal.corrupt_entries,
    )
    session = AgentSession(config, token, driver, seq, incarnation, journal, sriov=sriov)
    runner = asyncio.create_task(session.run(), name=f"agent-{config.node}")
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper.done() and not runner.done():
            detector = shutdown_detector or detector_for(driver)
            await announce_shutdown(
                detector, session.shutdown, session.outbox.send, wait=config.shutdown_wait
            )
    finally:
        stopper.cancel()
        runner.cancel()
        _done, pending = await asyncio.wait({runner, stopper}, timeout=STOP_TIMEOUT)
        if pending:
            log.warning("agent did not stop within %.0fs", STOP_TIMEOUT)
        await session.aclose()
        await driver.close()
    if runner.done() and not runner.cancelled():
        failure = runner.exception()
        if failure is not None:
            raise failure
    log.info("agent stopped")


def journal_dir(config: AgentConfig) -> Path:
    return config.state_dir / "journal"


def open_journal(config: AgentConfig) -> CommandJournal:
    """The durable journal in the state dir, recovered from the last run."""
    directory = journal_dir(config)
    try:
        return CommandJournal.open(directory)
    except (OSError, JournalError) as exc:
        raise AgentConfigError(f"cannot open the command journal in {directory}: {exc}") from None
