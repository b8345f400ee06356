"""Outcomes established after their task has ended: the VM's record follows the host.

(Tasks interrupted by a server restart are resumed by the task engine; this handles the
rarer case of a command whose outcome the reconciler found only after its task had given up
waiting for it.)
"""

from __future__ import annotations

import asyncio
import logging

from bollard.domain.power_states import reported_power, vm_state_of
from bollard.domain.states import PowerState, VmState
from bollard.server.clock import Clock
from bollard.server.outcomes import CommandOutcome
from bollard.server.ports import UnitOfWork
from bollard.store import commands, events, vms

log = logging.getLogger(__name__)


class LateOutcomes:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self.work = work
        self.clock = clock
        self._background: set[asyncio.Task[None]] = set()

    def on_late_outcome(self, cid: str, outcome: CommandOutcome) -> None:
        """The dispatcher's `on_late_outcome`: nobody waited for this outcome any more."""
        known, power = reported_power(outcome.result)
        if not known:
            return
        job = asyncio.get_running_loop().create_task(self.work.run(self._settle, cid, power))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def _settle(self, cid: str, power: PowerState | None) -> None:
        """If no task holds the VM now, its vm_state follows what the host reported."""
        state = vm_state_of(power)
        if state is None:
            return
        now = self.clock.now()
        with self.work.write() as conn:
            cmd = commands.get(conn, cid)
            vm = vms.find_by_uuid(conn, cmd.vm_uuid) if cmd.vm_uuid else None
            if vm is None or vm.task_id is not None or vm.vm_state is state:
                return
            if vm.node != cmd.node:
                return  # the VM has moved since: this host's word no longer decides
            if vm.vm_state not in (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED):
                return
            vms.set_vm_state(conn, vm.uuid, state, now)
            events.add(
                conn,
                "vm.state",
                f"vm_state {vm.vm_state} -> {state} (late outcome of {cmd.type} {cid})",
                now,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                node=vm.node,
                data={"old": vm.vm_state.value, "new": state.value, "command_id": cid},
            )
            log.info("VM %s: late outcome of %s %s -> vm_state %s", vm.name, cmd.type, cid, state)
