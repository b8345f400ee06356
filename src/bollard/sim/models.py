"""Records stored in the fabric: one per sim host, one per VM defined on it."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState


class HostPower(StrEnum):
    ON = "on"
    OFF = "off"


class _Record(BaseModel):
    # Unknown fields (written by a newer version) are ignored rather than fatal.
    model_config = ConfigDict(extra="ignore")


class SimHostRecord(_Record):
    """``<fabric>/hosts/<node>/host.json``."""

    node: str
    power: HostPower = HostPower.ON
    boot_id: str  # new for every simulated boot of the host
    vcpus: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    booted_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


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
    result: dict[str, object] = Field(default_factory=dict)

    @property
    def ends_at(self) -> float:
        return self.started_at + self.duration

    def state(self, now: float) -> JobState:
        if self.aborted_at is not None:
            return JobState.ABORTED
        return JobState.COMPLETED if now >= self.ends_at else JobState.RUNNING

    def progress(self, now: float) -> float:
        end = now if self.aborted_at is None else min(now, self.aborted_at)
        if self.duration <= 0:
            return 1.0 if self.aborted_at is None else 0.0
        return max(0.0, min(1.0, (end - self.started_at) / self.duration))
