"""Simulated host power: switching a sim host off kills its agent process.

A sim host's power is its record in the fabric (``SimHost.power_off`` stops its VMs and marks
it off; ``power_on`` boots it with a new boot id). A real host that loses power also loses
its agent; here the agent process records itself in the host record when it starts
(``register_agent``), and ``power_off_host`` kills it with SIGKILL.

A pid can be reused by an unrelated process once the agent has exited, so the record holds
the process's start time (``/proc/<pid>/stat``), its command line and the kernel's boot id,
and a process is killed only if all of them still match. Without ``/proc`` (not Linux),
nothing is recorded and nothing is killed.

Power on does not restart the agent: whoever supervises agents (``bollard up``, systemd, a
test) restarts it, and the agent then reports the host's new boot id.

Plain blocking functions; callers in an event loop run them in a thread.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bollard.sim.fabric import Fabric
from bollard.sim.models import HostPower, SimAgentProcess, SimHostRecord

__all__ = [
    "ProcessIdentity",
    "SimPowerOff",
    "power_off_host",
    "power_on_host",
    "process_identity",
    "register_agent",
    "wait_gone",
]

log = logging.getLogger(__name__)

PROC = Path("/proc")
_BOOT_ID = PROC / "sys" / "kernel" / "random" / "boot_id"
_DEAD_STATES = frozenset({"Z", "X", "x"})  # zombie or dead: it runs no more code


@dataclass(frozen=True)
class ProcessIdentity:
    """What identifies a running process beyond its pid."""

    pid: int
    start_ticks: int
    cmdline: tuple[str, ...]
    state: str

    @property
    def dead(self) -> bool:
        return self.state in _DEAD_STATES

    def is_(self, agent: SimAgentProcess) -> bool:
        """Whether this is the process ``agent`` records (not a later one with its pid)."""
        return (
            self.pid == agent.pid
            and self.start_ticks == agent.start_ticks
            and list(self.cmdline) == agent.cmdline
            and agent.kernel_boot_id == kernel_boot_id()
        )


def kernel_boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def process_identity(pid: int, proc: Path = PROC) -> ProcessIdentity | None:
    """The identity of process ``pid``, or None if there is no such process (or no /proc)."""
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
        raw_cmdline = (base / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", base, exc)
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        state, start_ticks = fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        log.warning("unexpected format of %s", base / "stat")
        return None
    args = raw_cmdline.split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    cmdline = tuple(a.decode("utf-8", "surrogateescape") for a in args)
    return ProcessIdentity(pid=pid, start_ticks=start_ticks, cmdline=cmdline, state=state)


def register_agent(
    fabric_dir: Path | str, node: str, vcpus: int, memory_mb: int, pid: int | None = None
) -> SimAgentProcess | None:
    """Record process ``pid`` (default: this one) as the agent of sim host ``node``, creating
    the host (as the sim driver would) if needed. None if the process cannot be identified.

    Only a process that is nothing but the agent may register: a power off kills it.
    """
    ident = process_identity(os.getpid() if pid is None else pid)
    if ident is None or ident.dead:
        log.warning("cannot identify the agent process; a sim power off will not kill it")
        return None
    agent = SimAgentProcess(
        pid=ident.pid,
        start_ticks=ident.start_ticks,
        cmdline=list(ident.cmdline),
        kernel_boot_id=kernel_boot_id(),
    )
    fabric = Fabric(fabric_dir)
    host = fabric.host(node)
    with fabric.lock():
        host.ensure_host(vcpus, memory_mb)
        host.set_agent(agent)
    log.info("sim host %s: agent pid %d recorded", node, agent.pid)
    return agent


@dataclass(frozen=True)
class SimPowerOff:
    """What a sim power off did."""

    record: SimHostRecord  # the host record after it
    was_on: bool
    killed: SimAgentProcess | None  # the agent process sent SIGKILL, if any
    note: str  # why no agent was killed, when none was ("" otherwise)


def power_off_host(fabric: Fabric, node: str) -> SimPowerOff:
    """Switch sim host ``node`` off: kill its agent (SIGKILL, only if its identity still
    matches), stop its VMs, mark it off. Idempotent. LookupError if there is no such host.

    Everything happens under the fabric lock, so the agent cannot change the fabric after
    the host went off: it is killed before the lock is released (its fabric writes all take
    the lock). Use ``wait_gone`` to wait for the process to be gone.
    """
    host = fabric.host(node)
    with fabric.lock():
        rec = host.record()
        if rec is None:
            raise LookupError(f"sim host {node} does not exist in {fabric.root}")
        was_on = rec.power == HostPower.ON
        killed, note = None, "no agent process recorded"
        if rec.agent is not None:
            killed, note = _kill(node, rec.agent)
        rec = host.power_off()
        if rec.agent is not None:
            rec = host.set_agent(None)
    log.warning(
        "sim host %s powered off%s",
        node,
        f" (agent pid {killed.pid} killed)" if killed is not None else f" ({note})",
    )
    return SimPowerOff(record=rec, was_on=was_on, killed=killed, note="" if killed else note)


def _kill(node: str, agent: SimAgentProcess) -> tuple[SimAgentProcess | None, str]:
    if agent.pid == os.getpid():
        return None, f"the recorded agent pid {agent.pid} is this process; not killed"
    ident = process_identity(agent.pid)
    if ident is None or ident.dead:
        return None, f"agent pid {agent.pid} already gone"
    if not ident.is_(agent):
        log.warning(
            "sim host %s: pid %d now belongs to another process; not killed", node, agent.pid
        )
        return None, f"pid {agent.pid} now belongs to another process; not killed"
    try:
        os.kill(agent.pid, signal.SIGKILL)
    except ProcessLookupError:
        return None, f"agent pid {agent.pid} already gone"
    return agent, ""


def wait_gone(agent: SimAgentProcess, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process ``agent`` records to be gone (exited,
    zombie, or its pid reused); whether it is."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        ident = process_identity(agent.pid)
        if ident is None or ident.dead or ident.start_ticks != agent.start_ticks:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))  # polling a process's exit, with a deadline
        delay = min(delay * 2, 0.05)


def power_on_host(fabric: Fabric, node: str) -> tuple[SimHostRecord, bool]:
    """Boot sim host ``node`` (a new boot id) if it is off; (its record, whether it was off).
    LookupError if there is no such host. The agent is not started (see the module doc)."""
    host = fabric.host(node)
    with fabric.lock():
        rec = host.record()
        if rec is None:
            raise LookupError(f"sim host {node} does not exist in {fabric.root}")
        was_off = rec.power != HostPower.ON
        rec = host.power_on()
    if was_off:
        log.warning("sim host %s powered on (boot %s)", node, rec.boot_id)
    return rec, was_off
