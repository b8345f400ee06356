"""The interface every hypervisor driver implements (``sim``, ``libvirt``).

All methods are idempotent where the operation allows it: defining a VM that is already
defined with the same uuid, starting a running VM, stopping a stopped one and undefining an
absent one succeed without doing anything. Errors are the Driver* errors of
bollard.domain.errors: DriverNotFound (no such VM), DriverInvalidState (e.g. undefine while
running), DriverTemporary (retry later), DriverPermanent.

Optional facilities, checked with ``isinstance``:

- ``JobDriver``: long operations (a migration, a block copy) run as hypervisor jobs that
  outlive the agent process; the agent polls them and aborts the ones that must not run
  unsupervised when it loses its server or restarts (the cancel hooks).
- ``MigrationDriver``: live and offline migration of a VM to another host, as a job.
- ``MigrationEndpoint``: what other hosts' drivers need to migrate VMs to this host.
- ``LoadSource``: the host's load for heartbeats.
- ``FaultSource``: faults of the agent process around the driver (a dropped answer, a crash),
  injected for tests and demos (the sim driver reads them from its fabric).
- ``ReportFaultSource``: the "hold report" fault: a heartbeat held back and delivered late,
  after a newer one, to test that the server ignores out-of-order reports (sim only).
- ``StateWatcher``: the hypervisor tells when a VM changed state by itself (a guest powered
  off or crashed, a VM was changed out of band) or when the driver lost and remade its
  connection, so the agent can send a report at once instead of at the next heartbeat.
- ``ConsoleSource``: the tail of a VM's serial console log and how to reach its display
  (e.g. VNC), for Inspect's console request.
- ``DiskSource``: the VM's disks as this host has them (device, size, where stored).
- ``PartitionSource``: whether the host is cut off from the server (a simulated network
  partition, sim only): while it is, the agent holds no connection and does not dial.
- ``AgentProcessRecorder``: records the agent's process where the host's power switch finds
  it, so that switching the host off kills the agent too (sim only).
- ``VfUseSource``: which SR-IOV virtual functions (VFs) the VMs defined here use, as their
  definitions say, so the agent can report each VF's user and the server can check its
  claims against the host (libvirt, sim and memory drivers).

NICs (``VmSpec.nics``): each on a network, a bridge of the host, or an SR-IOV VF (the VF the
server claimed for it on this host: its PCI address, and its network device for macvtap),
with its MAC; ``define`` adds the ones a defined VM lacks (by MAC) and keeps the others as
they are, except an SR-IOV NIC the definition has on another VF: that one is replaced, since
which VF a VM holds on a host is the server's claim, never what an older definition says.
The sim and memory hypervisors have no networks: they keep NICs as given, and report the VFs
of SR-IOV NICs.

Disks: a VM's disks (``VmSpec.disks``, devices vda, vdb, ... by index unless a disk names
its ``device``). A disk without ``path`` is local to its host: ``define`` creates it empty
where it does not exist yet (an existing one is kept as it is); ``undefine`` removes it with
the definition. A disk with ``path`` is a volume of a pool (drivers/storage.py): ``define``
uses it as it is and ``undefine`` leaves it (the server deletes volumes). Migrations (live and
offline) take the VM's disks in local pools along, data included, and remove them from the
source once the VM has moved; disks in shared pools stay where they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from bollard.domain.models import MAX_DISKS as MAX_DISKS  # (re-exported for drivers)
from bollard.domain.models import MAX_NICS as MAX_NICS
from bollard.domain.models import disk_device as disk_device
from bollard.domain.protocol import Capacity, VmReport
from bollard.domain.sriov import DEVICE, PCI_ADDRESS, PHYSNET
from bollard.domain.states import CommandType

# The id of the command a driver call is made for; the executor sets it around each call, so
# drivers can tag what they do with it (the sim driver's execution log does).
current_command_id: ContextVar[str | None] = ContextVar("bollard_command_id", default=None)


class DiskSpec(BaseModel):
    """One disk of a VM. Without ``path``: a disk of the legacy kind, created empty by
    ``define`` where it does not exist (in the host's default storage directory, named for
    the VM and its device). With ``path``: a volume of a pool the agent has already made or
    found (see drivers/storage.py), used as it is."""

    size_mb: int = Field(ge=1)
    device: str | None = Field(default=None, pattern=r"^vd[a-p]$")  # None: by its index
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    format: Literal["qcow2", "raw"] = "qcow2"


class NicSpec(BaseModel):
    """A network interface: on a hypervisor network, on a host bridge or on an SR-IOV VF
    (one of the three), with the MAC address the VM keeps wherever it runs.

    An SR-IOV NIC (``sriov``: the physical network its VF is cabled to) takes the VF the
    server claimed for it on this host: ``vf_pci`` (its PCI address) always, ``vf_netdev``
    (its network device) for ``mode`` macvtap, where the guest reaches the VF through a
    macvtap device in passthrough mode (it can migrate live); with hostdev the VF is the
    guest's PCI device (the faster path; it cannot migrate live). The physical network is
    the server's: hypervisors do not keep it (libvirt reads it back as None)."""

    mac: str = Field(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
    network: str | None = Field(default=None, min_length=1, max_length=63)
    bridge: str | None = Field(default=None, min_length=1, max_length=63)
    sriov: str | None = Field(default=None, pattern=f"^{PHYSNET.pattern}$")
    mode: Literal["macvtap", "hostdev"] | None = None
    vf_pci: str | None = Field(default=None, pattern=f"^{PCI_ADDRESS.pattern}$")
    vf_netdev: str | None = Field(default=None, pattern=f"^{DEVICE.pattern}$")
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"

    @model_validator(mode="after")
    def _one_attachment(self) -> NicSpec:
        kinds = [k for k in ("network", "bridge", "sriov") if getattr(self, k) is not None]
        if len(kinds) != 1:
            given = " and ".join(kinds) or "none"
            raise ValueError(
                f"NIC {self.mac}: on a network, a bridge or SR-IOV (exactly one), got {given}"
            )
        vf = {k: v for k in ("mode", "vf_pci", "vf_netdev") if (v := getattr(self, k))}
        if self.sriov is None:
            if vf:
                raise ValueError(
                    f"NIC {self.mac}: {', '.join(vf)} only for an SR-IOV NIC, not on a {kinds[0]}"
                )
            return self
        if self.mode is None or self.vf_pci is None:
            missing = [k for k in ("mode", "vf_pci") if getattr(self, k) is None]
            raise ValueError(
                f"NIC {self.mac}: SR-IOV NIC on {self.sriov} needs {' and '.join(missing)}"
            )
        if self.mode == "macvtap" and self.vf_netdev is None:
            raise ValueError(
                f"NIC {self.mac}: macvtap on VF {self.vf_pci} needs vf_netdev (its network device)"
            )
        return self

    def vf_key(self) -> str | None:
        """How ``VfUseSource.vf_users`` names this NIC's VF (None: not an SR-IOV NIC)."""
        return self.vf_pci if self.sriov is not None else None


class VmSpec(BaseModel):
    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    epoch: int = 0
    disks: list[DiskSpec] = Field(default_factory=list, max_length=MAX_DISKS)
    nics: list[NicSpec] = Field(default_factory=list, max_length=MAX_NICS)


class DiskInfo(BaseModel):
    """One of a VM's disks as its host has it."""

    device: str  # vda, vdb, ...
    size_mb: int  # its capacity
    path: str = ""  # where the host keeps it ("" if not a file)


class HostInfo(BaseModel):
    boot_id: str
    capacity: Capacity


class HypervisorDriver(Protocol):
    name: str

    async def host_info(self) -> HostInfo: ...

    async def list_vms(self) -> list[VmReport]: ...

    async def define(self, spec: VmSpec) -> VmReport: ...

    async def start(self, uuid: str) -> VmReport: ...

    async def shutdown(self, uuid: str, timeout: float) -> VmReport:
        """Graceful (ACPI) shutdown; forced stop once ``timeout`` seconds have passed."""
        ...

    async def stop(self, uuid: str) -> VmReport:
        """Forced power off."""
        ...

    async def restart(self, uuid: str) -> VmReport: ...

    async def undefine(self, uuid: str, *, force: bool = False) -> None:
        """Remove the VM's definition; it must be stopped (DriverInvalidState otherwise)
        unless ``force``, which destroys (forced stop) a running or paused VM first."""
        ...

    async def close(self) -> None: ...


class JobStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


# The error codes of a failed migration job, the same from every driver (what each means for
# where the VM is: bollard.agent.migrate).
MIGRATION_FAILED = "migration-failed"
CLEANUP_FAILED = "migration-cleanup-failed"


class JobInfo(BaseModel):
    """A hypervisor job as the driver reports it; one job per command, keyed by its id."""

    command_id: str
    kind: str
    vm_uuid: str | None = None
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    supervised: bool = True  # must not run unsupervised (aborted by the cancel hooks)
    message: str = ""  # why it was aborted or failed
    # The answer's error code when the job failed (default "job-failed"), and what it did.
    error_code: str = ""
    phase: str = ""  # where the job is (or ended), e.g. a migration's "transfer"
    result: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class JobDriver(Protocol):
    async def job(self, command_id: str) -> JobInfo | None:
        """The job of this command (running or ended); None if the hypervisor has none."""
        ...

    async def abort_job(self, command_id: str, reason: str) -> JobInfo | None:
        """Abort the job if it is still running; the job as it now is (None: no such job)."""
        ...

    async def abort_jobs(self, reason: str = "") -> list[str]:
        """Abort every running job that must not run unsupervised; their command ids."""
        ...

    async def vm_busy(self, uuid: str) -> bool:
        """Whether a job concerning this VM (e.g. a migration from or to this host) runs."""
        ...


@runtime_checkable
class MigrationDriver(Protocol):
    async def migrate(
        self,
        command_id: str,
        uuid: str,
        target: str,
        *,
        live: bool,
        new_epoch: int,
        target_endpoint: dict[str, Any] | None = None,
        nics: Sequence[NicSpec] | None = None,
    ) -> JobInfo:
        """Start migrating VM ``uuid`` to host ``target`` as the job of ``command_id``
        (idempotent: an existing job of that command is returned as it is).

        ``target`` is the target's node name; ``target_endpoint`` is what the target's
        driver advertises about itself (``MigrationEndpoint``), forwarded by the server;
        drivers that need none (sim) ignore it. ``nics``: the VM's NICs as the target is to
        have them (each SR-IOV NIC on the VF the server claimed for it there): the VM lands
        with its definition's NICs merged with them by the rule of ``define`` (an SR-IOV NIC
        moves to the VF given), since a VF is a device of one host. None: unchanged.

        Refused, with nothing done: DriverNotFound (not on this host), DriverTemporary
        (target missing or powered off), DriverInvalidState (live migration of a VM that is
        not running, offline migration of a running one, the target has the VM with a newer
        epoch or running). A completed job's ``result`` is ``{"vm": VmReport}`` on the target.
        """
        ...


@runtime_checkable
class MigrationEndpoint(Protocol):
    def migration_endpoint(self) -> dict[str, Any] | None:
        """What the drivers of other hosts need to migrate VMs to this host (e.g. the
        libvirt driver's ``{"uri": ..., "address": ...}``), as JSON values; None when VMs
        cannot be migrated here. The agent reports it; the server forwards the target's
        endpoint in ``migrate`` commands."""
        ...


@runtime_checkable
class LoadSource(Protocol):
    async def load(self) -> float | None:
        """Runnable work per CPU (1.0: every CPU busy); None if not known."""
        ...


class AgentFault(StrEnum):
    DROP_ANSWER = "drop-answer"  # execute and journal, but do not send the answer
    CRASH_AGENT = "crash-agent"  # die abruptly after journaling PROCESSING


@runtime_checkable
class FaultSource(Protocol):
    async def take_agent_fault(self, command: CommandType) -> AgentFault | None:
        """Fire (and count down) an agent fault armed for this command type, if any."""
        ...


@runtime_checkable
class ReportFaultSource(Protocol):
    async def take_report_hold(self) -> bool:
        """Whether the next heartbeat is to be held back and delivered after a newer one
        (sim fault for tests); counts the armed fault down."""
        ...


@runtime_checkable
class StateWatcher(Protocol):
    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever a VM may have changed state other than by this
        driver's own operations, or the connection to the hypervisor was lost or remade.

        The callback runs in the asyncio event loop the driver is used from (never in a
        hypervisor thread), must not block, and may be called more often than needed.
        """
        ...


@runtime_checkable
class ConsoleSource(Protocol):
    async def console_log(self, uuid: str, lines: int = 100) -> str:
        """The last ``lines`` lines of the VM's serial console log ("" if it has written
        nothing yet); undecodable bytes are replaced. DriverNotFound: no such VM here."""
        ...

    async def display(self, uuid: str) -> dict[str, Any] | None:
        """How to reach the VM's display, e.g. ``{"type": "vnc", "listen": "127.0.0.1",
        "port": 5901}``; None when it has none now (e.g. not running). DriverNotFound: no
        such VM here."""
        ...


@runtime_checkable
class DiskSource(Protocol):
    async def disks(self, uuid: str) -> list[DiskInfo]:
        """The VM's disks on this host, in device order. DriverNotFound: no such VM here."""
        ...


@runtime_checkable
class PartitionSource(Protocol):
    async def partitioned(self) -> bool:
        """Whether this host is cut off from the server now (a simulated network partition):
        while it is, the agent holds no connection and does not dial. A flag that cannot be
        read counts as not partitioned."""
        ...


# How ``VfUseSource.vf_users`` names a VF the driver knows by its network device only (a
# libvirt macvtap interface names the device, not the PCI address): the agent maps it with
# the VFs it discovered (``SriovVf.netdev``).
NETDEV_KEY = "netdev:"


@runtime_checkable
class VfUseSource(Protocol):
    async def vf_users(self) -> dict[str, str]:
        """``{VF: VM uuid}`` for every VF a VM defined on this host uses, as the VMs'
        definitions (persistent, and live for a running VM) say: the VF by its PCI address
        (``0000:03:10.2``), or ``NETDEV_KEY + device`` where the definition names only its
        network device. The agent reports it so the server can compare each VF's user with
        its claims; a VF no definition names is not in it."""
        ...


@runtime_checkable
class AgentProcessRecorder(Protocol):
    async def record_agent_process(self) -> None:
        """Record this process as the host's agent, so that switching the host off kills it
        (only for a process that is nothing but the agent). Failures are logged, not
        raised: the agent runs on without it."""
        ...
