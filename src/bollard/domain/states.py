"""State enums shared by every component (DESIGN.md section 5)."""

from __future__ import annotations

from enum import StrEnum


class PowerState(StrEnum):
    """Power state of a VM as a host reports it, or as the server last knew it."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CRASHED = "crashed"
    # Only on the server side: the host reported it does not have the VM at all.
    ABSENT = "absent"
    # Only on the server side: no report has been received yet.
    UNKNOWN = "unknown"


class DesiredPower(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class VmState(StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    PAUSED = "paused"
    RESIZED = "resized"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(StrEnum):
    """What operation is in progress on a VM (None when none is)."""

    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    POWERING_ON = "powering-on"
    POWERING_OFF = "powering-off"
    REBOOTING = "rebooting"
    MIGRATING = "migrating"
    RESIZE_PREP = "resize-prep"
    RESIZE_MIGRATING = "resize-migrating"
    RESIZE_FINISH = "resize-finish"
    RESIZE_REVERTING = "resize-reverting"
    RESIZE_CONFIRMING = "resize-confirming"
    DELETING = "deleting"


class ApiStatus(StrEnum):
    """The status shown to users; always derived, never stored (see status.py)."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    PAUSED = "PAUSED"
    MIGRATING = "MIGRATING"
    RESIZE = "RESIZE"
    VERIFY_RESIZE = "VERIFY_RESIZE"
    REBOOT = "REBOOT"
    ERROR = "ERROR"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"


class NodeHealth(StrEnum):
    UP = "up"
    SUSPECT = "suspect"
    DEAD = "dead"
    FENCING = "fencing"
    FENCED = "fenced"
    FENCE_FAILED = "fence_failed"


class SchedulingState(StrEnum):
    READY = "ready"
    FLUSHING = "flushing"
    FLUSHED = "flushed"
    UNFLUSHING = "unflushing"
    MAINTENANCE = "maintenance"


class TaskStatus(StrEnum):
    """State of a task (an operation) as a whole."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def ended(self) -> bool:
        return self in _TASK_ENDED


_TASK_ENDED = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.ROLLED_BACK,
        TaskStatus.NEEDS_ATTENTION,
    }
)


class CommandType(StrEnum):
    """Commands a server sends to an agent."""

    DEFINE = "define"
    START = "start"
    SHUTDOWN = "shutdown"
    STOP = "stop"
    RESTART = "restart"
    UNDEFINE = "undefine"
    # Sent to the VM's current (source) host; args: target (node name), live (bool),
    # new_epoch (int: the epoch the VM carries on the target). Runs as a backend job.
    MIGRATE = "migrate"
