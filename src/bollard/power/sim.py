"""The ``sim`` power driver: switches a sim host of a fabric off and on.

Address: the sim node name; the fabric directory comes with the driver. Power off kills the
host's agent process (SIGKILL, only if its recorded identity still matches, see
bollard.sim.power), stops every VM of the host and marks it off, then waits for the agent
process to be gone. Power on boots the host with a new boot id and does not start an agent:
whoever supervises the agents restarts it. A sim agent that runs while its host is off
refuses every VM operation with a temporary error (the sim hypervisor driver checks).

The fabric is plain files behind a lock; calls run in a thread and the fabric lock's wait is
bounded by the call's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bollard.power.base import PowerStatus, check_timeout
from bollard.power.errors import PowerConfigError, PowerError, PowerTimeout, PowerUnreachable
from bollard.power.threads import run_blocking
from bollard.sim.fabric import Fabric, FabricBusy
from bollard.sim.files import DEFAULT_LOCK_TIMEOUT, check_component
from bollard.sim.models import HostPower, SimHostRecord
from bollard.sim.power import SimPowerOff, power_off_host, power_on_host, wait_gone

T = TypeVar("T")


class SimPowerDriver:
    name = "sim"

    def __init__(self, fabric_dir: Path | str, node: str) -> None:
        try:
            self.node = check_component("node name", node)
        except ValueError as exc:
            raise PowerConfigError(f"sim power address: {exc}") from None
        self.fabric_dir = Path(fabric_dir)

    def __repr__(self) -> str:
        return f"SimPowerDriver(node={self.node!r}, fabric={str(self.fabric_dir)!r})"

    def _fabric(self, timeout: float) -> Fabric:
        if not self.fabric_dir.is_dir():
            raise PowerUnreachable(f"no sim fabric at {self.fabric_dir}")
        # Give up on the lock a little before the caller gives up on the call, so that a
        # timed-out call has not acted after all (mostly: a thread cannot be stopped).
        wait = max(0.01, min(0.8 * timeout, DEFAULT_LOCK_TIMEOUT))
        return Fabric(self.fabric_dir, lock_timeout=wait)

    async def _run(self, fn: Callable[[Fabric], T], timeout: float, what: str) -> T:
        def call() -> T:
            return fn(self._fabric(timeout))

        try:
            return await run_blocking(call, timeout, f"sim power {what} of {self.node}")
        except FabricBusy as exc:
            raise PowerTimeout(f"sim power {what} of {self.node}: {exc}") from None
        except LookupError:
            raise PowerUnreachable(f"no sim host {self.node} in fabric {self.fabric_dir}") from None
        except OSError as exc:
            raise PowerError(f"sim power {what} of {self.node}: {exc}") from None

    def _require(self, fabric: Fabric) -> SimHostRecord:
        # Under the fabric lock: a power off (kill the agent, stop the VMs, mark the host
        # off) is seen whole, as a BMC would show it, never half done (the agent already
        # gone, the host still "on").
        with fabric.lock():
            rec = fabric.host(self.node).record()
        if rec is None:
            raise LookupError(self.node)
        return rec

    async def record(self, timeout: float) -> SimHostRecord:
        """The host's record in the fabric (power, boot id, agent pid)."""
        return await self._run(self._require, check_timeout(timeout), "status")

    async def status(self, timeout: float) -> PowerStatus:
        rec = await self.record(timeout)
        return PowerStatus.ON if rec.power == HostPower.ON else PowerStatus.OFF

    async def power_off(self, timeout: float) -> None:
        await self.power_off_report(timeout)

    async def power_off_report(self, timeout: float) -> SimPowerOff:
        """Power off (as ``power_off``) and tell what was done."""
        timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done = await self._run(lambda f: power_off_host(f, self.node), timeout, "off")
        killed = done.killed
        if killed is None:
            return done
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise PowerTimeout(f"sim host {self.node} is off; its agent's end was not seen")
        gone = await run_blocking(
            lambda: wait_gone(killed, remaining * 0.9), remaining, f"end of agent {killed.pid}"
        )
        if not gone:
            raise PowerTimeout(
                f"sim host {self.node} is off, but its agent pid {killed.pid} did not end "
                f"within {timeout:g} s of SIGKILL"
            )
        return done

    async def power_on(self, timeout: float) -> None:
        await self._run(lambda f: power_on_host(f, self.node), check_timeout(timeout), "on")

    async def test(self, timeout: float) -> str:
        rec = await self.record(timeout)
        agent = f"agent pid {rec.agent.pid}" if rec.agent is not None else "no agent recorded"
        return f"sim host {self.node}: power {rec.power.value}, boot {rec.boot_id[:8]}, {agent}"
