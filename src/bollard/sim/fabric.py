"""The sim fabric: a directory holding the state of every simulated host.

Layout::

    <fabric>/lock                          flock taken by every mutation
    <fabric>/hosts/<node>/host.json        SimHostRecord: power, boot_id, capacity
    <fabric>/hosts/<node>/vms/<uuid>.json  SimVm: name, size, power, epoch, acpi

This is a plain synchronous library; several processes (agents, ``bollard sim``) may use one
fabric at once. Reads take no lock (files are replaced atomically); every read-modify-write
holds the fabric lock, which is reentrant within a thread so that later multi-file changes
(a migration moving a VM between hosts, a host power-off) can compose the primitives here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError

from bollard.domain.ha import ShutdownKind
from bollard.domain.states import PowerState
from bollard.durable import TMP_PREFIX, fsync_dir
from bollard.sim import sriov_nic
from bollard.sim.execlog import ExecLog
from bollard.sim.faults import HostFaults
from bollard.sim.files import (
    DEFAULT_LOCK_TIMEOUT,
    NAME_RE,
    FabricBusy,
    check_component,
    flock,
    read_json,
    report_corrupt,
    write_json_atomic,
)
from bollard.sim.jobs import HostJobs
from bollard.sim.models import ExecutedOp, HostPower, SimAgentProcess, SimHostRecord, SimVm

__all__ = ["Fabric", "FabricBusy", "SimHost"]

log = logging.getLogger(__name__)


class Fabric:
    def __init__(self, root: Path | str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Fabric({str(self.root)!r})"

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive fabric-wide lock (across processes); reentrant within one thread."""
        depth: int = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        with flock(self.root / "lock", self.lock_timeout):
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0

    def host(self, node: str) -> SimHost:
        return SimHost(self, check_component("node name", node))

    def nodes(self) -> list[str]:
        """Names of the hosts present in the fabric, sorted."""
        try:
            entries = list(os.scandir(self.hosts_dir))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if e.is_dir() and NAME_RE.match(e.name))

    def hosts(self) -> list[SimHost]:
        return [SimHost(self, node) for node in self.nodes()]

    def snapshot(self, *, settle: bool = True, now: float | None = None) -> dict[str, list[SimVm]]:
        """Every host's VMs (node -> VMs), read together under the fabric lock: a consistent
        cut, in which no migration shows a VM running on two hosts or vanished. ``settle``
        first applies the migration phases due by ``now`` (default: the wall clock)."""
        from bollard.sim.migration import Migrations

        with self.lock():
            if settle:
                Migrations(self).settle(time.time() if now is None else now)
            return {host.node: host.list_vms() for host in self.hosts()}


class SimHost:
    """One simulated hypervisor host in a fabric."""

    def __init__(self, fabric: Fabric, node: str) -> None:
        self.fabric = fabric
        self.node = node
        self.dir = fabric.hosts_dir / node
        self.vms_dir = self.dir / "vms"
        self.host_file = self.dir / "host.json"
        # Fault injection, long-running jobs and the log of executed operations.
        self.faults = HostFaults(fabric.lock, self.dir / "faults.json")
        self.jobs = HostJobs(fabric.lock, self.dir / "jobs")
        self.exec_log = ExecLog(self.dir / "executed.jsonl")

    def __repr__(self) -> str:
        return f"SimHost({self.node!r} in {self.fabric!r})"

    # host record

    def record(self) -> SimHostRecord | None:
        """The host's record, or None if the host was never set up (or its file is corrupt)."""
        data = read_json(self.host_file)
        if data is None:
            return None
        try:
            return SimHostRecord.model_validate(data)
        except ValidationError as exc:
            report_corrupt(self.host_file, f"invalid host record: {exc.error_count()} errors")
            return None

    def ensure_host(self, vcpus: int, memory_mb: int) -> SimHostRecord:
        """Create the host (powered on, with a fresh boot id) or record its new capacity.

        An existing host keeps its power state and boot id: restarting an agent is not a
        reboot of the host.
        """
        with self.fabric.lock():
            rec = self.record()
            now = time.time()
            if rec is None:
                rec = SimHostRecord(
                    node=self.node,
                    boot_id=str(uuidlib.uuid4()),
                    vcpus=vcpus,
                    memory_mb=memory_mb,
                    booted_at=now,
                    updated_at=now,
                )
                log.info("sim fabric: host %s created (boot %s)", self.node, rec.boot_id)
            elif (rec.vcpus, rec.memory_mb) == (vcpus, memory_mb):
                return rec
            else:
                rec = rec.model_copy(update={"vcpus": vcpus, "memory_mb": memory_mb})
                rec.updated_at = now
            self.vms_dir.mkdir(parents=True, exist_ok=True)
            self._write_record(rec)
            return rec

    def power_off(self) -> SimHostRecord:
        """Cut the host's power: every VM on it stops at once (fault-injection primitive)."""
        with self.fabric.lock():
            rec = self._require_record()
            for vm in self.list_vms():
                if vm.power != PowerState.STOPPED:
                    self.put_vm(vm.model_copy(update={"power": PowerState.STOPPED}))
            if rec.power != HostPower.OFF:
                rec = rec.model_copy(update={"power": HostPower.OFF, "updated_at": time.time()})
                self._write_record(rec)
            return rec

    def power_on(self) -> SimHostRecord:
        """Boot the host: a new boot id; VMs stay defined and stopped; the SR-IOV NICs lose
        their VFs, as a cold boot does (sriov_nic.py). No-op if already on."""
        with self.fabric.lock():
            rec = self._require_record()
            if rec.power == HostPower.ON:
                return rec
            sriov_nic.cold_boot(self.fabric.root, self.node)
            now = time.time()
            rec = rec.model_copy(
                update={
                    "power": HostPower.ON,
                    "boot_id": str(uuidlib.uuid4()),
                    "booted_at": now,
                    "updated_at": now,
                    "shutting_down": None,  # a shutdown ends with the boot
                }
            )
            self._write_record(rec)
            return rec

    def set_agent(self, agent: SimAgentProcess | None) -> SimHostRecord:
        """Record (or forget) the host's agent process (see bollard.sim.power)."""
        with self.fabric.lock():
            rec = self._require_record().model_copy(update={"agent": agent})
            rec.updated_at = time.time()
            self._write_record(rec)
            return rec

    def set_partitioned(self, partitioned: bool) -> SimHostRecord:
        """Cut the host's agent off from the server, or lift that (see bollard.sim.partition)."""
        with self.fabric.lock():
            rec = self._require_record()
            if rec.partitioned == partitioned:
                return rec
            rec = rec.model_copy(update={"partitioned": partitioned, "updated_at": time.time()})
            self._write_record(rec)
            return rec

    def set_shutting_down(self, kind: ShutdownKind | None) -> SimHostRecord:
        """Mark a clean shutdown under way, or clear it (see bollard.sim.host_shutdown)."""
        with self.fabric.lock():
            rec = self._require_record()
            if rec.shutting_down == kind:
                return rec
            rec = rec.model_copy(update={"shutting_down": kind, "updated_at": time.time()})
            self._write_record(rec)
            return rec

    def set_load(self, load: float | None) -> SimHostRecord:
        """Make heartbeats report ``load`` (None: the load computed from the running VMs)."""
        if load is not None and load < 0:
            raise ValueError("load must be >= 0")
        with self.fabric.lock():
            rec = self._require_record().model_copy(update={"load": load})
            rec.updated_at = time.time()
            self._write_record(rec)
            return rec

    def load(self) -> float | None:
        """Runnable work per CPU: the value set by ``set_load``, else the vCPUs of the
        running VMs over the host's vCPUs (None without a record or with no vCPUs)."""
        rec = self.record()
        if rec is None:
            return None
        if rec.load is not None:
            return rec.load
        if rec.vcpus <= 0:
            return None
        busy = sum(vm.vcpus for vm in self.list_vms() if vm.power == PowerState.RUNNING)
        return busy / rec.vcpus

    def _require_record(self) -> SimHostRecord:
        rec = self.record()
        if rec is None:
            raise LookupError(f"sim host {self.node} does not exist in {self.fabric.root}")
        return rec

    def _write_record(self, rec: SimHostRecord) -> None:
        write_json_atomic(self.host_file, rec.model_dump(mode="json"))

    def executed(self) -> list[ExecutedOp]:
        """Every mutating operation the sim driver performed on this host, oldest first."""
        return self.exec_log.read()

    # VMs

    def _vm_file(self, uuid: str) -> Path:
        return self.vms_dir / f"{check_component('vm uuid', uuid)}.json"

    def _load_vm(self, path: Path) -> SimVm | None:
        data = read_json(path)
        if data is None:
            return None
        try:
            vm = SimVm.model_validate(data)
        except ValidationError as exc:
            report_corrupt(path, f"invalid VM record: {exc.error_count()} errors")
            return None
        if f"{vm.uuid}.json" != path.name:
            report_corrupt(path, f"file name does not match uuid {vm.uuid}")
            return None
        return vm

    def list_vms(self) -> list[SimVm]:
        """Every VM defined on the host, sorted by name then uuid; corrupt files are skipped."""
        try:
            entries = list(os.scandir(self.vms_dir))
        except FileNotFoundError:
            return []
        vms = []
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or not entry.name.endswith(".json"):
                continue
            vm = self._load_vm(Path(entry.path))
            if vm is not None:
                vms.append(vm)
        vms.sort(key=lambda v: (v.name, v.uuid))
        return vms

    def get_vm(self, uuid: str) -> SimVm | None:
        return self._load_vm(self._vm_file(uuid))

    def put_vm(self, vm: SimVm) -> SimVm:
        """Create or replace a VM record (stamps ``updated_at``)."""
        path = self._vm_file(vm.uuid)
        vm = vm.model_copy(update={"updated_at": time.time()})
        with self.fabric.lock():
            write_json_atomic(path, vm.model_dump(mode="json"))
        return vm

    def update_vm(self, uuid: str, change: Callable[[SimVm], SimVm]) -> SimVm | None:
        """Atomically read, change and write back one VM; None (nothing called) if absent.

        ``change`` runs under the fabric lock and may raise to abort without writing.
        """
        path = self._vm_file(uuid)
        with self.fabric.lock():
            vm = self._load_vm(path)
            if vm is None:
                return None
            return self.put_vm(change(vm))

    def delete_vm(self, uuid: str) -> bool:
        """Remove a VM record; False if there was none."""
        path = self._vm_file(uuid)
        with self.fabric.lock():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            fsync_dir(path.parent)
            return True
