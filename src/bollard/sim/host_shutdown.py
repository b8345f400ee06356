"""A sim host's clean shutdown or reboot, as systemd would do it on a real host.

``shutdown_host`` (``bollard sim node shutdown NODE [--reboot]``):

1. marks the host's record ``shutting_down`` (poweroff or reboot): what the agent of a real
   host would learn from systemd, its sim agent reads here when it is stopped;
2. stops the agent with SIGTERM (only if the recorded process is still that agent, as the
   sim power off checks), and waits for it to exit: it tells the server and, for the policy
   migrate, waits until the server has moved the host's VMs away;
3. powers the host off (its VMs that still run stop; an agent still running past the deadline
   is killed, as the power switch would) and, for a reboot, on again with a new boot id (the
   mark is cleared by the boot).

The agent is not started again: whoever supervises it does (``bollard up --restart-process``).

Plain blocking functions; callers in an event loop run them in a thread.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

from bollard.domain.ha import ShutdownKind
from bollard.sim.fabric import Fabric, SimHost
from bollard.sim.models import HostPower, SimAgentProcess
from bollard.sim.power import (
    SimPowerOff,
    power_off_host,
    power_on_host,
    process_identity,
    wait_gone,
)

__all__ = ["ShutdownFlag", "SimShutdown", "mark_shutdown", "shutdown_host", "shutdown_of"]

log = logging.getLogger(__name__)


def mark_shutdown(fabric: Fabric, node: str, kind: ShutdownKind | None) -> None:
    """Mark (or clear, ``kind`` None) a clean shutdown of sim host ``node``. LookupError if
    there is no such host."""
    host = fabric.host(node)
    if host.record() is None:
        raise LookupError(f"sim host {node} does not exist in {fabric.root}")
    host.set_shutting_down(kind)


def shutdown_of(host: SimHost) -> ShutdownKind | None:
    """The clean shutdown marked on the host (None: none, or no readable record)."""
    rec = host.record()
    return None if rec is None else rec.shutting_down


class ShutdownFlag:
    """The agent's view of its host's shutdown mark (read without the fabric lock: the record
    is replaced atomically)."""

    def __init__(self, fabric: Fabric, node: str) -> None:
        self.host = fabric.host(node)

    def read(self) -> ShutdownKind | None:
        """A fabric that cannot be read counts as no shutdown (logged)."""
        try:
            return shutdown_of(self.host)
        except OSError as exc:
            log.warning("cannot read the shutdown mark of %s: %s", self.host.node, exc)
            return None


@dataclass(frozen=True)
class SimShutdown:
    """What a sim clean shutdown did."""

    node: str
    kind: ShutdownKind
    agent_pid: int | None  # the agent sent SIGTERM (None: no running agent recorded)
    agent_exited: bool  # it exited by itself within the deadline
    agent_seconds: float  # from SIGTERM to its exit (or to the deadline)
    power_off: SimPowerOff
    boot_id: str | None  # the new boot (reboot only)
    note: str  # why no agent was signalled, when none was


def _terminate(agent: SimAgentProcess) -> str:
    """SIGTERM the recorded agent if it is still that process; "" if sent, else why not."""
    if agent.pid == os.getpid():
        return f"the recorded agent pid {agent.pid} is this process; not signalled"
    ident = process_identity(agent.pid)
    if ident is None or ident.dead:
        return f"agent pid {agent.pid} is not running"
    if not ident.is_(agent):
        return f"pid {agent.pid} now belongs to another process; not signalled"
    try:
        os.kill(agent.pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"agent pid {agent.pid} is not running"
    return ""


def shutdown_host(fabric: Fabric, node: str, *, reboot: bool, timeout: float) -> SimShutdown:
    """Shut sim host ``node`` down cleanly (see the module docstring); the agent has
    ``timeout`` seconds to exit. LookupError if there is no such host, ValueError if it is
    off."""
    host = fabric.host(node)
    rec = host.record()
    if rec is None:
        raise LookupError(f"sim host {node} does not exist in {fabric.root}")
    if rec.power != HostPower.ON:
        raise ValueError(f"sim host {node} is off")
    kind = ShutdownKind.REBOOT if reboot else ShutdownKind.POWEROFF
    host.set_shutting_down(kind)
    log.warning("sim host %s: clean %s begins", node, kind.value)
    agent = rec.agent
    pid, exited, waited, note = None, False, 0.0, "no agent process recorded"
    if agent is not None:
        note = _terminate(agent)
        if not note:
            pid = agent.pid
            began = time.monotonic()
            exited = wait_gone(agent, timeout)
            waited = time.monotonic() - began
            if not exited:
                log.warning("sim host %s: agent pid %d still runs after %.0f s; the power "
                            "goes off anyway", node, agent.pid, timeout)  # fmt: skip
    off = power_off_host(fabric, node)
    boot_id = power_on_host(fabric, node)[0].boot_id if reboot else None
    return SimShutdown(
        node=node,
        kind=kind,
        agent_pid=pid,
        agent_exited=exited,
        agent_seconds=waited,
        power_off=off,
        boot_id=boot_id,
        note=note if pid is None else "",
    )
