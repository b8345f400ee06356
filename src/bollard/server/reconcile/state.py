"""The state reconciler: the database against what the hosts report.

A pass gathers the facts (VM records, the hosts' inventories from ``host_vms``, the tasks
VMs point at) in one read and classifies every difference (facts.py, bollard.domain.drift:
in a worker thread or process, see scanners.py) and, for the
classes whose ``reconcile.auto.<class>`` policy is ``fix``, fixes them (state_fixes.py).
The storage classes (storage_drift.py asks the hosts for their pools' files,
bollard.domain.storage_drift decides, storage_fixes.py fixes) have a loop of their own, every
``reconcile.storage.interval`` seconds: a host slow to list its files never holds up the VM
classes. ``bollard reconcile`` looks at both at once.
It runs every ``reconcile.state.interval`` seconds and at once when a host reports a change.
A difference is recorded as a ``reconcile.detected`` event the first time a pass sees it;
every fix as ``reconcile.fixed`` (or ``reconcile.fix_failed``), naming the class, the old
and the new value. A mass change (more than ``MASS_CHANGE`` new differences of one class on
one node, e.g. a host reboot that stopped 500 VMs) is one event, and so are its fixes.
``bollard reconcile`` shows the same differences and fixes the classes asked for, through the
same code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from bollard.domain.drift import ALL_CLASSES, STORAGE_CLASSES, Drift, DriftClass, DriftKey
from bollard.domain.storage_drift import auto_fix
from bollard.server.clock import Clock
from bollard.server.metrics import ServerMetrics
from bollard.server.ports import SettingsReader, TaskWaiter, Touch, UnitOfWork
from bollard.server.reconcile.facts import ScanRequest
from bollard.server.reconcile.loop import PassLoop
from bollard.server.reconcile.scanners import Scanners
from bollard.server.reconcile.state_fixes import FixResult, StateFixer
from bollard.server.reconcile.storage_drift import StorageLooks, StorageScan
from bollard.store import events

log = logging.getLogger(__name__)

# Seconds after which a difference no longer seen is forgotten (recorded again if it returns).
FORGET_AFTER = 600.0
# More differences than this of one class on one node at once are recorded as one event
# (and their fixes as one more), which names the first `MASS_LISTED` VMs.
MASS_CHANGE = 20
MASS_LISTED = 50


@dataclass
class Scan:
    differences: list[Drift]
    vms: int
    nodes: int
    seconds: float
    scanned_in: str = "thread"  # or "process" (scanners.py)
    volumes: int = 0  # volumes checked (0: storage not looked at)
    silent_hosts: list[str] = field(default_factory=list)  # gave no storage answer in time

    def add(self, looked: StorageScan | None) -> None:
        """Add the storage classes' look (if any) to this VM scan."""
        if looked is None:
            return
        self.differences += looked.differences
        self.volumes, self.silent_hosts = looked.volumes, list(looked.silent)
        self.seconds += looked.seconds


@dataclass
class FixReport:
    fixed: list[FixResult] = field(default_factory=list)
    failed: list[FixResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fixed": [r.to_dict() for r in self.fixed],
            "failed": [r.to_dict() for r in self.failed],
        }


def _matches(drift: Drift, node: str | None, vm: str | None) -> bool:
    if node is not None and drift.node != node:
        return False
    return vm is None or vm in (drift.vm_name, drift.vm_uuid)


class StateReconciler:
    """A `ports.DriftReconciler`; its `kick` is a `ports.NodeKick`."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        runner: TaskWaiter,
        scanners: Scanners,
        metrics: ServerMetrics,
        touch: Touch,
        fixer: StateFixer,
        heartbeat_interval: float,
        storage: StorageLooks | None = None,
        server_id: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`server_id()`: this server's id (tasks owned by other live servers are theirs to
        drive)."""
        self.server_id = server_id
        self.work = work
        self.clock = clock
        self.settings = settings
        self.runner = runner
        self.scanners = scanners
        self.metrics = metrics
        self.touch = touch
        self.fixer = fixer
        self.heartbeat_interval = heartbeat_interval
        self.storage = storage
        self._loop = PassLoop(
            work=work,
            clock=clock,
            settings=settings,
            name="state reconciler",
            interval_key="reconcile.state.interval",
            body=self.reconcile_pass,
        )
        self._storage_loop = PassLoop(
            work=work,
            clock=clock,
            settings=settings,
            name="storage reconciler",
            interval_key="reconcile.storage.interval",
            body=self.storage_pass,
        )
        # One VM pass (or operator's fix) at a time, and one storage pass: a host slow to
        # answer (a look, or a storage fix looking again) never holds up the VM classes.
        # An operator's fix takes both.
        self._lock = asyncio.Lock()
        self._storage_lock = asyncio.Lock()
        # When each difference was last seen (monotonic): one that comes back within
        # FORGET_AFTER (e.g. hidden while a task held its VM) is not recorded again. Both
        # passes record in worker threads: `_seen_lock` guards it.
        self._seen: dict[DriftKey, float] = {}
        self._seen_lock = threading.Lock()
        self.passes = 0
        self.storage_passes = 0
        self._storage_at: float | None = None  # when the last storage pass began (monotonic)
        self.last_pass_seconds = 0.0

    def kick(self, node: str | None = None) -> None:
        """Run a pass now (a host reported a change) instead of at the next interval."""
        self._loop.kick()

    async def run(self) -> None:
        """The periodic loops (the VM classes', the storage classes'); run until cancelled."""
        if self.storage is None:
            await self._loop.run()
            return
        await asyncio.gather(self._loop.run(), self._storage_loop.run())

    async def _policies(self) -> tuple[dict[DriftClass, str], float]:
        """reconcile.auto.<class> of each class, and reconcile.storage.interval."""
        settings = await self.work.run(self.settings.all)
        policies = {c: str(settings[f"reconcile.auto.{c.value}"]) for c in ALL_CLASSES}
        return policies, float(settings["reconcile.storage.interval"])

    async def reconcile_pass(self) -> FixReport:
        """Detect the VM classes, record what is new, fix what the policies say; and wake
        the storage loop if its look is due (its interval may have just been shortened)."""
        policies, interval = await self._policies()
        if self.storage is not None:
            last = self._storage_at
            if last is None or self.clock.monotonic() - last >= interval:
                self._storage_loop.kick()
        async with self._lock:
            scan = await self._scan()
            await self.work.run(self._record_new, scan.differences)
            report = await self._auto(scan.differences, policies)
        self.passes += 1
        return report

    async def storage_pass(self) -> FixReport:
        """Look at the pools' files (asking the hosts: outside the lock), record what is
        new, fix what the policies say."""
        self._storage_at = self.clock.monotonic()
        looked = await self._look()
        if looked is None:
            return FixReport()
        policies, _ = await self._policies()
        async with self._storage_lock:
            await self.work.run(self._record_new, looked.differences)
            report = await self._auto(looked.differences, policies)
        self.storage_passes += 1
        return report

    async def _auto(self, differences: list[Drift], policies: dict[DriftClass, str]) -> FixReport:
        chosen = [d for d in differences if auto_fix(d, policies[d.kind])]
        report = await self._fix(chosen, auto=True)
        if report.fixed or report.failed:
            self.touch()
        return report

    async def _look(self) -> StorageScan | None:
        return await self.storage.scan() if self.storage is not None else None

    async def scan(self, node: str | None = None, vm: str | None = None) -> Scan:
        looked = await self._look()
        async with self._lock:
            scan = await self._scan()
            scan.add(looked)
            await self.work.run(self._record_new, scan.differences)
        scan.differences = [d for d in scan.differences if _matches(d, node, vm)]
        return scan

    async def fix(
        self, classes: Collection[DriftClass], node: str | None = None, vm: str | None = None
    ) -> tuple[FixReport, Scan]:
        """Fix the differences of `classes` (filtered); returns what was done and what is
        left afterwards (the filtered scan after the fixes)."""
        looked = await self._look()
        async with self._storage_lock, self._lock:
            scan = await self._scan()
            scan.add(looked)
            chosen = [d for d in scan.differences if d.kind in classes and _matches(d, node, vm)]
            await self.work.run(self._record_new, scan.differences)
            report = await self._fix(chosen, auto=False)
            after = await self._scan()
        after.add(await self._look())
        self.touch()
        after.differences = [d for d in after.differences if _matches(d, node, vm)]
        return report, after

    async def _scan(self) -> Scan:
        """The VM classes."""
        started = self.clock.monotonic()
        request = ScanRequest(
            now=self.clock.now(),
            task_grace=timedelta(seconds=max(30.0, 6 * self.heartbeat_interval)),
            driven=self.runner.running_ids(),
            server=self.server_id(),
        )
        # In a worker thread or process (scanners.py): reading and classifying 100,000 VMs
        # is about a second of Python that must not hold up heartbeats and the API.
        result = await self.scanners.scan(request)
        # A task the runner took up while the scan ran is driven after all.
        differences = [
            d
            for d in result.differences
            if not (d.data.get("undriven") and self.runner.is_running(d.data["task_id"]))
        ]
        seconds = self.clock.monotonic() - started
        self.last_pass_seconds = seconds
        self.metrics.reconcile_pass_seconds.observe(seconds)
        return Scan(
            differences, result.vms, result.nodes, seconds, self.scanners.last_where or "thread"
        )

    async def close(self) -> None:
        """Stop the scan worker process, if one runs."""
        await self.scanners.close()

    async def _fix(self, drifts: list[Drift], *, auto: bool) -> FixReport:
        report = FixReport()
        mass = _mass_groups(drifts)
        done: dict[tuple[str | None, DriftClass], list[FixResult]] = {key: [] for key in mass}
        for drift in drifts:
            group = done.get((drift.node, drift.kind))
            result = await self.fixer.fix(drift, auto=auto, record=group is None)
            if result is None:
                continue  # nothing to do now (e.g. a failure already recorded)
            (report.fixed if result.ok else report.failed).append(result)
            if group is not None and not result.skipped:
                group.append(result)
            if result.ok:
                with self._seen_lock:  # fixed: if it happens again, it is news
                    self._seen.pop(drift.key, None)
        for results in done.values():
            for ok in (True, False):
                chosen = [r for r in results if r.ok is ok]
                if chosen:
                    await self.work.run(self._record_mass_fix, chosen, ok)
        return report

    def _record_mass_fix(self, results: list[FixResult], ok: bool) -> None:
        first = results[0].drift
        kind = "reconcile.fixed" if ok else "reconcile.fix_failed"
        what = "fixed" if ok else "could not fix"
        message = (
            f"{what} {first.kind} of {len(results)} {_noun(first.kind)} on {first.node} at "
            f"once (such as {first.label}: {results[0].action})"
        )
        log.log(logging.INFO if ok else logging.WARNING, "reconcile: %s", message)
        with self.work.write() as conn:
            events.add(
                conn,
                kind,
                message,
                self.clock.now(),
                node=first.node,
                data={
                    "class": first.kind.value,
                    "count": len(results),
                    "vms": [r.drift.label for r in results[:MASS_LISTED]],
                    "action": results[0].action,
                },
            )

    def _record_new(self, differences: list[Drift]) -> None:
        now_mono = self.clock.monotonic()
        with self._seen_lock:
            new = [d for d in differences if d.key not in self._seen]
            for d in differences:
                self._seen[d.key] = now_mono
            for key, at in list(self._seen.items()):
                if now_mono - at > FORGET_AFTER:
                    del self._seen[key]
        if not new:
            return
        now = self.clock.now()
        mass = _mass_groups(new)
        with self.work.write() as conn:
            for group in mass.values():
                _record_mass_difference(conn, group, now)
            for d in new:
                if (d.node, d.kind) in mass:
                    continue
                log.warning("reconcile: %s: %s on %s: record %s, host %s", d.kind, d.label,
                            d.node, d.record, d.host)  # fmt: skip
                data: dict[str, Any] = {"class": d.kind.value, "old": d.record, "new": d.host}
                if d.kind in STORAGE_CLASSES:
                    data |= {"volume": d.volume, "pool": d.pool, "file": d.file}
                events.add(
                    conn,
                    "reconcile.detected",
                    f"{d.kind}: {d.label}: record says {d.record}; "
                    f"host says {d.host}" + (f" ({d.detail})" if d.detail else ""),
                    now,
                    vm_uuid=d.vm_uuid or None,
                    vm_name=d.vm_name or None,
                    node=d.node,
                    data=data,
                )


def _noun(kind: DriftClass) -> str:
    if kind is DriftClass.VOLUME_ORPHAN:
        return "files"
    return "volumes" if kind in STORAGE_CLASSES else "VMs"


def _mass_groups(drifts: list[Drift]) -> dict[tuple[str | None, DriftClass], list[Drift]]:
    """The groups of differences (one class, one node) too many to record one by one."""
    groups: dict[tuple[str | None, DriftClass], list[Drift]] = {}
    for d in drifts:
        groups.setdefault((d.node, d.kind), []).append(d)
    return {key: group for key, group in groups.items() if len(group) > MASS_CHANGE}


def _record_mass_difference(conn: Connection, group: list[Drift], now: datetime) -> None:
    """One event for many differences of one class on one node (e.g. a host reboot)."""
    first = group[0]
    (record, host), count = Counter((d.record, d.host) for d in group).most_common(1)[0]
    message = (
        f"{first.kind}: {len(group)} {_noun(first.kind)} on {first.node} at once ({count} of "
        f"them: record says {record}; host says {host})"
    )
    log.warning("reconcile: %s", message)
    events.add(
        conn,
        "reconcile.detected",
        message,
        now,
        node=first.node,
        data={
            "class": first.kind.value,
            "count": len(group),
            "vms": [d.label for d in group[:MASS_LISTED]],
            "old": record,
            "new": host,
        },
    )
