"""Records stored in the fabric: one per sim host, one per VM defined on it."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.ha import ShutdownKind
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState
from bollard.sim.storage_models import SimCopy, SimDisk


class HostPower(StrEnum):
    ON = "on"
    OFF = "off"


class _Record(BaseModel):
    # Unknown fields (written by a newer version) are ignored rather than fatal.
    model_config = ConfigDict(extra="ignore")


class SimAgentProcess(_Record):
    """The agent process of a sim host, as it recorded itself at start (see
    bollard.sim.power): enough to kill it on a simulated power off, and to recognise a
    reused pid, which is never killed."""

    pid: int = Field(gt=0)
    start_ticks: int = Field(ge=0)  # /proc/<pid>/stat field 22: start time since boot
    cmdline: list[str] = Field(default_factory=list)
    kernel_boot_id: str | None = None  # the real kernel's boot id: pids restart at reboot
    registered_at: float = Field(default_factory=time.time)


class SimHostRecord(_Record):
    """``<fabric>/hosts/<node>/host.json``."""

    node: str
    power: HostPower = HostPower.ON
    boot_id: str  # new for every simulated boot of the host
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    booted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    # Load reported in heartbeats instead of the computed one (``bollard sim load set``).
    load: float | None = Field(default=None, ge=0)
    # The host's agent process (set by a sim agent process at start, cleared at power off).
    agent: SimAgentProcess | None = None
    # Network partition (``bollard sim partition``): the host's agent is cut off from the
    # server (it drops its connection and does not reconnect) while the host stays on.
    partitioned: bool = False
    # "Hold report" fault (``bollard sim report hold``): the agent holds back its next this
    # many heartbeats, each delivered late, after a newer one (see bollard.sim.out_of_band).
    hold_reports: int = Field(default=0, ge=0)
    # A clean shutdown under way (``bollard sim node shutdown``, see bollard.sim.host_shutdown):
    # "poweroff" or "reboot"; the agent reads it when it is stopped. Cleared when it boots.
    shutting_down: ShutdownKind | None = None


class SimVm(_Record):
    """``<fabric>/hosts/<node>/vms/<uuid>.json``: one VM as the simulated hypervisor has it."""

    uuid: str
    name: str
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    power: PowerState = PowerState.STOPPED
    epoch: int = 0
    # Whether the guest honours an ACPI shutdown request (a graceful shutdown). A guest that
    # does not is only stopped by a forced power off, e.g. when a shutdown times out.
    acpi: bool = True
    disks: list[int] = Field(default_factory=list)  # their sizes in MiB, in device order
    # Disks defined by their device (volumes of pools, see bollard.sim.storage, and local
    # disks that name their device), sorted by device; none at a device of ``disks``.
    drives: list[SimDisk] = Field(default_factory=list)
    # Migrations (see bollard.sim.migration): on a target, the paused copy a running
    # migration brings in (the id of its command); on a source, the stopped definition a
    # migration past its switchover leaves behind until its cleanup.
    incoming: str | None = None
    outgoing: str | None = None
    updated_at: float = Field(default_factory=time.time)

    def report(self) -> VmReport:
        return VmReport(
            uuid=self.uuid,
            name=self.name,
            power=self.power,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            epoch=self.epoch,
        )


class MigrationPhase(StrEnum):
    """The phases of a sim migration, in order (see bollard.sim.migration)."""

    PREPARE = "prepare"  # checks; the target gets a paused incoming copy
    TRANSFER = "transfer"  # memory is copied; progress grows with time
    SWITCHOVER = "switchover"  # the atomic moment: the VM runs on the target from now on
    CLEANUP = "cleanup"  # the source's stopped definition is removed


class FaultMode(StrEnum):
    """What an injected fault does to a command of the given type on one sim host."""

    FAIL = "fail"  # the driver operation fails with a permanent error
    HANG = "hang"  # the driver operation never completes by itself
    DELAY = "delay"  # the driver operation takes `seconds` longer than usual
    DROP_ANSWER = "drop-answer"  # executed and journaled, but the answer is not sent
    CRASH_AGENT = "crash-agent"  # the agent dies after journaling PROCESSING


# Faults the hypervisor itself produces, and faults of the agent process around it.
DRIVER_FAULTS = frozenset({FaultMode.FAIL, FaultMode.HANG, FaultMode.DELAY})
AGENT_FAULTS = frozenset({FaultMode.DROP_ANSWER, FaultMode.CRASH_AGENT})


class SimFault(_Record):
    """One fault armed on a host for one command type (``<host>/faults.json``)."""

    command: str  # a CommandType value
    mode: FaultMode
    count: int = Field(default=1, ge=0)  # how many times it fires; 0 = until cleared
    fired: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)  # for DELAY
    phase: MigrationPhase | None = None  # for FAIL of a migrate: the phase that fails
    vm: str | None = None  # a VM's uuid: only that VM's commands (None: every VM's)
    set_at: float = Field(default_factory=time.time)

    @property
    def remaining(self) -> int | None:
        """Fires left; None when it fires until cleared."""
        return None if self.count == 0 else max(0, self.count - self.fired)


class FaultTable(_Record):
    faults: dict[str, SimFault] = Field(default_factory=dict)  # command type -> fault


class ExecutedOp(_Record):
    """One line of ``<host>/executed.jsonl``: a mutating operation the sim driver performed."""

    command_id: str | None  # None when not done on behalf of a command
    command: str  # operation name, e.g. "start"
    vm_uuid: str | None
    at: float


class JobState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class MigrationStage(StrEnum):
    """How far the fabric reflects a migration (each step is redone if a crash cut it)."""

    TRANSFER = "transfer"  # the incoming copy exists (or is being rolled back)
    SWITCHING = "switching"  # switchover decided; its two writes may be incomplete
    SWITCHED = "switched"  # the VM runs on the target; the source leftover awaits cleanup
    ENDED = "ended"  # completed, failed or aborted, and the fabric shows it


class SimMigration(_Record):
    """What a migration job carries (``SimJob.migration``)."""

    source: str
    target: str
    live: bool
    new_epoch: int
    vm: SimVm  # the VM as it was on the source when the migration started
    switchover_at: float  # when the switchover is due (absolute, fabric wall clock)
    fail_phase: MigrationPhase | None = None  # injected fault
    hang: bool = False  # injected fault: the transfer never ends by itself
    stage: MigrationStage = MigrationStage.TRANSFER
    failed_phase: MigrationPhase | None = None  # set when it failed

    def phase(self, job: SimJob, now: float) -> MigrationPhase:
        """The phase the migration is in (or ended in)."""
        if self.failed_phase is not None:
            return self.failed_phase
        if job.aborted_at is not None:
            return MigrationPhase.TRANSFER  # only a migration in transfer can be aborted
        if self.stage in (MigrationStage.SWITCHED, MigrationStage.ENDED):
            return MigrationPhase.CLEANUP
        if self.stage == MigrationStage.SWITCHING:
            return MigrationPhase.SWITCHOVER
        if job.aborted_at is None and not self.hang and now >= self.switchover_at:
            return MigrationPhase.SWITCHOVER
        return MigrationPhase.TRANSFER


class SimJob(_Record):
    """A long hypervisor operation (``<host>/jobs/<command_id>.json``).

    Its progress is a function of time: it completes ``duration`` seconds after it started,
    whether or not any agent is watching, unless it is aborted first.
    """

    command_id: str
    kind: str  # e.g. "migrate", "block-copy"
    vm_uuid: str | None = None
    started_at: float
    duration: float = Field(ge=0)
    # True: must not run unsupervised; aborted when its agent loses the server or restarts.
    supervised: bool = True
    aborted_at: float | None = None
    abort_reason: str = ""
    # Set when the job ended by itself before its time (failed) or was finished explicitly.
    failed_at: float | None = None
    failure: str = ""
    completed_at: float | None = None
    result: dict[str, object] = Field(default_factory=dict)
    migration: SimMigration | None = None
    volume_copy: SimCopy | None = None  # a volume copy's target (see bollard.sim.volume_copy)

    @property
    def ends_at(self) -> float:
        return self.started_at + self.duration

    def state(self, now: float) -> JobState:
        if self.aborted_at is not None:
            return JobState.ABORTED
        if self.failed_at is not None:
            return JobState.FAILED
        if self.completed_at is not None:
            return JobState.COMPLETED
        if self.migration is not None:
            # Its end has effects on the fabric: only the fabric's settling ends it.
            return JobState.RUNNING
        return JobState.COMPLETED if now >= self.ends_at else JobState.RUNNING

    def progress(self, now: float) -> float:
        if self.completed_at is not None:
            return 1.0
        ended = [t for t in (self.aborted_at, self.failed_at) if t is not None]
        end = min([now, *ended])
        if self.migration is not None and self.migration.hang:
            end = min(end, self.started_at + self.duration / 2)  # stuck half way
        if self.duration <= 0:
            return 1.0 if not ended else 0.0
        return max(0.0, min(1.0, (end - self.started_at) / self.duration))
