"""The must-never checks on the sim fabric, read continuously while a scenario runs.

A thread takes one consistent cut of the fabric (``Fabric.snapshot``, under its lock) every
``interval`` seconds and records, once each, what must never be seen:

- a VM running on two hosts;
- a volume of a shared pool opened by running VMs on two hosts;
- two VMs of a strict ``apart`` rule running on one host;
- a VM that must stay stopped seen running;
- a VM that must not move seen running on a host other than its first.

The recovery-before-fence check reads the server's events instead (checks.FenceOrder).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bollard.domain.states import PowerState
from bollard.sim.fabric import Fabric
from bollard.sim.models import SimVm

__all__ = ["FabricView", "FabricWatch", "Violation", "WatchPlan"]

log = logging.getLogger(__name__)

SHARED_PREFIX = "sim://shared/"


@dataclass(frozen=True)
class Violation:
    check: str  # two_hosts, disk_two_hosts, apart, running, moved, recovery_before_fence
    subject: str  # what it is about (a VM, a volume, a rule)
    text: str


@dataclass(frozen=True)
class WatchPlan:
    """What to watch, by VM uuid (``names``: uuid -> name, for the messages)."""

    names: dict[str, str]
    stay_stopped: frozenset[str] = frozenset()
    stay_on: dict[str, str] = field(default_factory=dict)  # uuid -> the only node it may run on
    apart: tuple[tuple[str, frozenset[str]], ...] = ()  # (rule, its VMs' uuids), strict only


@dataclass
class FabricView:
    """One cut of the fabric: where each VM runs, by uuid."""

    running: dict[str, list[str]]  # uuid -> hosts it runs on
    vms: dict[str, SimVm]  # uuid -> its record on (one of) the host(s) it runs on
    disks: dict[str, set[str]]  # shared volume path -> hosts of running VMs that opened it

    @classmethod
    def of(cls, snapshot: dict[str, list[SimVm]]) -> FabricView:
        running: dict[str, list[str]] = {}
        vms: dict[str, SimVm] = {}
        disks: dict[str, set[str]] = {}
        for node, host_vms in snapshot.items():
            for vm in host_vms:
                if vm.power != PowerState.RUNNING:
                    continue
                running.setdefault(vm.uuid, []).append(node)
                vms[vm.uuid] = vm
                for drive in vm.drives:
                    if drive.path.startswith(SHARED_PREFIX):
                        disks.setdefault(drive.path, set()).add(node)
        return cls(running, vms, disks)

    def host_of(self, uuid: str) -> str | None:
        hosts = self.running.get(uuid)
        return hosts[0] if hosts and len(hosts) == 1 else None


def violations(view: FabricView, plan: WatchPlan) -> list[Violation]:
    """What ``view`` shows that must never be (pure)."""
    found: list[Violation] = []

    def name(uuid: str) -> str:
        return plan.names.get(uuid, uuid)

    for uuid, hosts in view.running.items():
        if len(hosts) > 1:
            found.append(
                Violation(
                    "two_hosts",
                    name(uuid),
                    f"{name(uuid)} runs on two hosts: {', '.join(sorted(hosts))}",
                )
            )
        if uuid in plan.stay_stopped:
            found.append(
                Violation(
                    "running",
                    name(uuid),
                    f"{name(uuid)} runs on {', '.join(sorted(hosts))} but must stay stopped",
                )
            )
        home = plan.stay_on.get(uuid)
        if home is not None and any(h != home for h in hosts):
            found.append(
                Violation(
                    "moved",
                    name(uuid),
                    f"{name(uuid)} runs on "
                    f"{', '.join(sorted(hosts))}, not on {home} where it must "
                    "stay",
                )
            )
    for path, openers in view.disks.items():
        if len(openers) > 1:
            found.append(
                Violation(
                    "disk_two_hosts",
                    path,
                    f"volume {path} is open on two hosts: {', '.join(sorted(openers))}",
                )
            )
    for rule, members in plan.apart:
        by_host: dict[str, list[str]] = {}
        for uuid in members:
            for host in view.running.get(uuid, []):
                by_host.setdefault(host, []).append(name(uuid))
        for host, together in sorted(by_host.items()):
            if len(together) > 1:
                found.append(
                    Violation(
                        "apart",
                        f"{rule}@{host}",
                        f"strict apart rule {rule}: "
                        f"{', '.join(sorted(together))} run together on {host}",
                    )
                )
    return found


class FabricWatch:
    """Reads the fabric in a thread until stopped; ``report`` gets each new violation once
    (per check and subject). ``last_host`` remembers where each VM was last seen running."""

    def __init__(
        self,
        fabric: Fabric,
        plan: WatchPlan,
        report: Callable[[Violation], None],
        *,
        interval: float = 0.05,
    ) -> None:
        self.fabric = fabric
        self.plan = plan
        self.report = report
        self.interval = interval
        self.reads = 0
        self.errors: list[str] = []
        self.last_host: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fabric-watch", daemon=True)

    def start(self) -> FabricWatch:
        self.read_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.read_once()  # one last look

    def read_once(self) -> FabricView:
        view = FabricView.of(self.fabric.snapshot())
        with self._lock:
            self.reads += 1
            for uuid, hosts in view.running.items():
                if len(hosts) == 1:
                    self.last_host[uuid] = hosts[0]
            fresh = [
                v for v in violations(view, self.plan) if (v.check, v.subject) not in self._seen
            ]
            self._seen.update((v.check, v.subject) for v in fresh)
        for violation in fresh:
            self.report(violation)
        return view

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval):
            try:
                self.read_once()
                failures = 0
            except (OSError, TimeoutError) as exc:  # a busy or half-written fabric: read again
                failures += 1
                log.warning("cannot read the sim fabric: %s", exc)
                if failures == 20:
                    self.errors.append(f"cannot read the sim fabric: {exc}")


def stay_on_plan(view: FabricView, uuids: Iterable[str]) -> dict[str, str]:
    """The node each of ``uuids`` runs on now (those running nowhere are left out)."""
    homes = {}
    for uuid in uuids:
        host = view.host_of(uuid)
        if host is not None:
            homes[uuid] = host
    return homes
