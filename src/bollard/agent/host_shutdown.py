"""A clean shutdown of the agent's host: how the agent learns of it, and telling the server.

When the agent is stopped (SIGTERM) it asks a ``ShutdownDetector`` whether its host is
shutting down, and whether that is a reboot or a power-off:

- sim hosts: the host's flag in the sim fabric (``bollard sim node shutdown NODE [--reboot]``
  sets it before it stops the agent); the sim driver reads it (``ShutdownSource``).
- real hosts (systemd): ``systemctl is-system-running`` says ``stopping`` while the system
  goes down, and ``systemctl list-jobs`` shows the target queued: ``reboot.target`` (or
  ``kexec.target``, ``soft-reboot.target``) for a reboot, ``poweroff.target`` (or
  ``halt.target``) for a power-off. Stopping with neither queued counts as a power-off. A host
  without systemd (no ``/run/systemd/system``), or a ``systemctl`` that cannot be run or
  does not answer in time: no shutdown (the agent just stops, as before).

If the host is shutting down, the agent sends ``host_shutdown`` {kind} and waits for the
server's ``host_shutdown_ready`` (at most ``wait`` seconds, 600 by default: the policy
migrate moves the host's VMs away first) before it exits. A session that drops meanwhile is
dialled again; the new hello says the shutdown is under way and ``host_shutdown`` is sent
again. If the agent is not connected when it is stopped, the server is not told (it sees the
host fall silent, as a crash).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from bollard.agent.drivers.base import HypervisorDriver
from bollard.domain.ha import ShutdownKind
from bollard.domain.protocol import ErrorMsg, HostShutdown, HostShutdownReady

log = logging.getLogger(__name__)

SHUTDOWN_WAIT = 600.0  # seconds the agent waits for host_shutdown_ready at most
DETECT_TIMEOUT = 5.0  # seconds a detector may take to say whether the host shuts down
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists on hosts booted with systemd

# systemd targets whose start job means the host is going down, and how.
REBOOT_TARGETS = frozenset({"reboot.target", "kexec.target", "soft-reboot.target"})
POWEROFF_TARGETS = frozenset({"poweroff.target", "halt.target"})


class ShutdownDetector(Protocol):
    async def pending(self) -> ShutdownKind | None:
        """The clean shutdown under way on this host (reboot or poweroff); None: none (the
        agent alone is stopping)."""
        ...


@runtime_checkable
class ShutdownSource(Protocol):
    """A hypervisor driver that knows whether its host is shutting down (the sim driver: a
    flag in the fabric)."""

    async def host_shutdown(self) -> str | None:
        """``reboot``, ``poweroff``, or None (no shutdown under way)."""
        ...


class NoShutdown:
    """A host whose shutdowns the agent cannot see (e.g. the memory driver)."""

    async def pending(self) -> ShutdownKind | None:
        return None


class DriverShutdown:
    """Asks the driver (``ShutdownSource``)."""

    def __init__(self, source: ShutdownSource) -> None:
        self.source = source

    async def pending(self) -> ShutdownKind | None:
        kind = await self.source.host_shutdown()
        if kind is None:
            return None
        try:
            return ShutdownKind(kind)
        except ValueError:
            log.warning("the driver reports an unknown shutdown kind %r: taken as poweroff", kind)
            return ShutdownKind.POWEROFF


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str


# Runs a command (argv) and returns its exit code and output; OSError if it cannot be run,
# TimeoutError past the deadline.
CommandRunner = Callable[[list[str], float], Awaitable[CommandResult]]


async def run_command(argv: list[str], timeout: float) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "SYSTEMD_PAGER": "", "LC_ALL": "C"},
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return CommandResult(proc.returncode or 0, out.decode("utf-8", "replace"))


def kind_from_jobs(jobs: str) -> ShutdownKind | None:
    """The shutdown ``systemctl list-jobs --no-legend`` shows queued (lines ``ID UNIT TYPE
    STATE``); None when neither a reboot nor a power-off target is there."""
    units = {
        fields[1] for fields in (line.split() for line in jobs.splitlines()) if len(fields) > 1
    }
    if units & REBOOT_TARGETS:
        return ShutdownKind.REBOOT
    if units & POWEROFF_TARGETS:
        return ShutdownKind.POWEROFF
    return None


class SystemdShutdown:
    """Asks systemd (see the module docstring)."""

    def __init__(
        self,
        run: CommandRunner = run_command,
        runtime_dir: Path = SYSTEMD_RUNTIME,
        timeout: float = DETECT_TIMEOUT / 2,
    ) -> None:
        self.run = run
        self.runtime_dir = runtime_dir
        self.timeout = timeout

    async def pending(self) -> ShutdownKind | None:
        if not self.runtime_dir.is_dir():
            return None  # not booted with systemd
        try:
            state = await self.run(["systemctl", "is-system-running"], self.timeout)
            if state.stdout.strip() != "stopping":
                return None
            jobs = await self.run(
                ["systemctl", "list-jobs", "--no-legend", "--no-pager"], self.timeout
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot ask systemd whether the host shuts down: %r", exc)
            return None
        kind = kind_from_jobs(jobs.stdout)
        if kind is None:
            log.warning("the system is stopping, with no reboot or poweroff job: a poweroff")
            return ShutdownKind.POWEROFF
        return kind


def detector_for(driver: HypervisorDriver) -> ShutdownDetector:
    """The driver's own flag (sim), else systemd for the libvirt driver, else none."""
    if isinstance(driver, ShutdownSource):
        return DriverShutdown(driver)
    if driver.name == "libvirt":
        return SystemdShutdown()
    return NoShutdown()


class ShutdownNotice:
    """The clean shutdown this agent announced, kept by its session across reconnects: the
    hello carries it (``kind``), ``message`` is sent again after each welcome, and the
    server's answer ends ``wait``."""

    def __init__(self) -> None:
        self.kind: ShutdownKind | None = None
        self.answer: HostShutdownReady | None = None
        self.refused: str | None = None  # the server said it does not handle host_shutdown
        self._done = asyncio.Event()

    def begin(self, kind: ShutdownKind) -> HostShutdown:
        self.kind = kind
        return HostShutdown(kind=kind)

    def message(self) -> HostShutdown | None:
        """What to send after a (re)connection: the shutdown, until it is answered."""
        if self.kind is None or self._done.is_set():
            return None
        return HostShutdown(kind=self.kind)

    def on_ready(self, msg: HostShutdownReady) -> None:
        if self.kind is None:
            log.warning("server sent host_shutdown_ready, but no shutdown was announced")
            return
        self.answer = msg
        self._done.set()

    def on_error(self, msg: ErrorMsg) -> bool:
        """An error about host_shutdown (a server that does not handle it) ends the wait;
        whether ``msg`` was one."""
        if self.kind is None or "host_shutdown" not in msg.message:
            return False
        self.refused = f"{msg.code}: {msg.message}"
        self._done.set()
        return True

    async def wait(self, timeout: float) -> bool:
        """Whether the server answered (or refused) within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            return False
        return True


Send = Callable[[BaseModel], Awaitable[bool]]


async def announce_shutdown(
    detector: ShutdownDetector,
    notice: ShutdownNotice,
    send: Send,
    *,
    wait: float = SHUTDOWN_WAIT,
) -> HostShutdownReady | None:
    """Called when the agent is stopped: if the host is shutting down, tell the server and
    wait (at most ``wait`` seconds) for its answer. Returns the answer (None: no shutdown,
    not told, or no answer in time; each logged)."""
    try:
        async with asyncio.timeout(DETECT_TIMEOUT):
            kind = await detector.pending()
    except TimeoutError:
        log.warning("could not tell within %.0f s whether the host shuts down", DETECT_TIMEOUT)
        return None
    if kind is None:
        return None
    log.warning("the host is shutting down (%s): telling the server", kind.value)
    if not await send(notice.begin(kind)):
        log.warning(
            "not connected: the server is not told of the %s; it sees the host fall silent",
            kind.value,
        )
        return None
    if not await notice.wait(wait):
        log.error("the server did not answer the %s within %.0f s: exiting", kind.value, wait)
        return None
    if notice.refused is not None:
        log.warning("the server does not handle clean shutdowns (%s): exiting", notice.refused)
        return None
    answer = notice.answer
    assert answer is not None
    if answer.ok:
        log.warning("the server is ready for the %s (%s): %s", kind.value, answer.action,
                    answer.message or "ok")  # fmt: skip
    else:
        log.error("the server could not prepare for the %s (%s): %s", kind.value, answer.action,
                  answer.message)  # fmt: skip
    return answer
