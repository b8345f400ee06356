"""The faults and operator actions of a scenario's timeline, applied to its cluster: on the
sim fabric (power, partition, clean shutdown, start failures), on the processes (agents, the
server) and through the REST API (maintenance, settings, VM fields, migrations).

Each action returns one line for the timeline, or raises ``StepFailed``. A clean shutdown or
reboot takes as long as the host's agent takes to exit (with the policy migrate, until its
VMs have moved away): it runs in a thread of its own (``Background``), so the timeline and
the checks go on meanwhile.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bollard.cli.client import ApiError, CliError
from bollard.cli.cluster import is_running
from bollard.cli.scenario_cluster import ScenarioCluster
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from bollard.sim.scenario.model import Action, Step

__all__ = ["Background", "StepFailed", "StepRunner"]

SERVER_RESTART_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 600.0  # as an agent waits for the server's drain (host_shutdown_ready)


class StepFailed(Exception):
    pass


@dataclass
class Background:
    """Steps still running in their threads; each reports its own line when it ends."""

    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> list[str]:
        """Wait for them (``timeout`` in all); the names of those still running."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            for thread in self.threads:
                while thread.is_alive() and not deadline.is_set():
                    thread.join(0.1)
        finally:
            timer.cancel()
        return [t.name for t in self.threads if t.is_alive()]


class StepRunner:
    def __init__(
        self,
        cluster: ScenarioCluster,
        uuids: dict[str, str],
        report: Callable[[str, str], object],
    ) -> None:
        self.cluster = cluster
        self.fabric = Fabric(cluster.fabric_dir)
        self.uuids = uuids  # VM name -> uuid
        self.report = report  # (kind, text): a line on the timeline
        self.background = Background()
        self.failures: list[str] = []  # background steps that failed

    def run(self, step: Step) -> str:
        """Apply ``step`` (not a wait: the runner waits); one line saying what was done."""
        try:
            return self._run(step)
        except (CliError, LookupError, ValueError, OSError, TimeoutError) as exc:
            raise StepFailed(f"{step.describe()} (line {step.line}) failed: {exc}") from None

    def _run(self, step: Step) -> str:
        node = step.node or ""
        a = step.action
        if a is Action.POWER_OFF:
            from bollard.sim.power import power_off_host

            off = power_off_host(self.fabric, node)
            what = f"agent pid {off.killed.pid} killed" if off.killed else off.note
            return f"power off {node}" + (f" ({what})" if what else "")
        if a is Action.POWER_ON:
            from bollard.sim.power import power_on_host

            power_on_host(self.fabric, node)
            proc = self.cluster.restart(node)
            return f"power on {node}; its agent starts (pid {proc.pid})"
        if a in (Action.PARTITION, Action.HEAL):
            from bollard.sim.partition import heal_host, partition_host

            change = (partition_host if a is Action.PARTITION else heal_host)(self.fabric, node)
            return f"{a.value} {node}" + ("" if change.changed else " (no change)")
        if a is Action.KILL_AGENT:
            return self._kill_agent(node)
        if a is Action.RESTART_AGENT:
            proc = self.cluster.restart(node)
            return f"agent of {node} (re)started (pid {proc.pid})"
        if a in (Action.SHUTDOWN, Action.REBOOT):
            self.background.run(f"{a.value} {node}", lambda: self._shutdown(node, a))
            return f"clean {a.value} of {node} begins"
        if a in (Action.START_FAILS, Action.VM_START_FAILS):
            return self._start_fails(step)
        if a in (Action.START_WORKS, Action.VM_START_WORKS):
            return self._start_works(step)
        if a in (Action.MAINTENANCE_ON, Action.MAINTENANCE_OFF):
            on = a is Action.MAINTENANCE_ON
            self.cluster.client.post(f"/nodes/{node}/maintenance", {"on": on})
            return f"maintenance {'on' if on else 'off'} for {node}"
        if a is Action.CRASH_VM:
            return self._crash(step.vm or "")
        if a is Action.RESTART_SERVER:
            proc = self.cluster.restart("server")
            self.cluster.wait_healthy(SERVER_RESTART_TIMEOUT)
            return f"server restarted (pid {proc.pid}) and healthy"
        if a is Action.SET:
            for key, value in step.values.items():
                self.cluster.client.request("PUT", f"/settings/{key}", json={"value": value})
            return step.describe()
        if a is Action.SET_VM:
            self.cluster.client.request("PATCH", f"/vms/{step.vm}", json=step.values)
            return step.describe()
        if a is Action.MIGRATE:
            return self._migrate(step)
        raise StepFailed(f"{a.value} is not an action the runner applies")

    def _kill_agent(self, node: str) -> str:
        proc = self.cluster.process(node)
        if not is_running(proc.pid, proc.argv):
            return f"agent of {node} was not running"
        os.kill(proc.pid, signal.SIGKILL)
        return f"agent of {node} killed (pid {proc.pid}); the host and its VMs stay up"

    def _shutdown(self, node: str, action: Action) -> None:
        from bollard.sim.host_shutdown import shutdown_host

        reboot = action is Action.REBOOT
        try:
            done = shutdown_host(self.fabric, node, reboot=reboot, timeout=SHUTDOWN_TIMEOUT)
            how = (
                f"its agent exited after {done.agent_seconds:.1f} s"
                if done.agent_exited
                else done.note or "its agent did not exit: killed by the power off"
            )
            line = f"{node} is off ({how})"
            if reboot:
                proc = self.cluster.restart(node)
                line = f"{node} rebooted ({how}); its agent starts (pid {proc.pid})"
            self.report("fault", line)
        except (CliError, LookupError, ValueError, OSError, TimeoutError) as exc:
            failure = f"clean {action.value} of {node} failed: {exc}"
            self.failures.append(failure)
            self.report("miss", failure)

    def _crash(self, vm: str) -> str:
        from bollard.sim.out_of_band import kill_vm

        uuid = self.uuids[vm]
        view = self.fabric.snapshot()
        hosts = [
            n
            for n, vms in view.items()
            if any(v.uuid == uuid and v.power == "running" for v in vms)
        ]
        if len(hosts) != 1:
            raise StepFailed(f"{vm} crashes: it runs on {len(hosts)} hosts, expected one")
        kill_vm(self.fabric.host(hosts[0]), uuid, crashed=True)
        return f"{vm} crashed on {hosts[0]} (behind Bollard's back)"

    def _hosts(self, step: Step) -> list[str]:
        return [step.node] if step.node else self.fabric.nodes()

    def _start_fails(self, step: Step) -> str:
        vm = self.uuids.get(step.vm) if step.vm else None
        for node in self._hosts(step):
            self.fabric.host(node).faults.set("start", FaultMode.FAIL, step.times, vm=vm)
        return step.describe()

    def _start_works(self, step: Step) -> str:
        vm = self.uuids.get(step.vm) if step.vm else None
        key = "start" if vm is None else f"start@{vm}"
        for node in self._hosts(step):
            self.fabric.host(node).faults.clear(key)
        return step.describe()

    def _migrate(self, step: Step) -> str:
        body = {} if step.node is None else {"to": step.node}
        refused = step.values.get("refused")
        try:
            self.cluster.client.post(f"/vms/{step.vm}/migrate", body)
        except ApiError as exc:
            if refused is None:
                raise
            if isinstance(refused, str) and refused not in exc.message:
                raise StepFailed(
                    f"{step.describe()} (line {step.line}) was refused, but not "
                    f"with {refused!r}: {exc.message}"
                ) from None
            return f"{step.describe()}: refused as expected ({exc.message})"
        if refused is not None:
            raise StepFailed(
                f"{step.describe()} (line {step.line}) was accepted; expected a refusal"
            )
        return step.describe()
