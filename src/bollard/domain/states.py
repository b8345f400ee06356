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
    # Resize (and its confirm and revert): spelt as Nova spells them.
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    DELETING = "deleting"
    # A stopped VM's disks being exported to its cell's image spool (vm_export).
    IMAGE_UPLOADING = "image_uploading"


class ApiStatus(StrEnum):
    """The status shown to users; always derived, never stored (see status.py)."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    PAUSED = "PAUSED"
    MIGRATING = "MIGRATING"
    RESIZE = "RESIZE"
    VERIFY_RESIZE = "VERIFY_RESIZE"
    REVERT_RESIZE = "REVERT_RESIZE"
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
    # Storage (drivers/storage.py): args carry the pool ({"name", "type", "path"}) and the
    # volume's file; vm_uuid only for the ones that concern a VM's definition (attach, detach,
    # grow of an attached volume). The agent serialises them per volume file.
    VOLUME_CREATE = "volume_create"
    VOLUME_DELETE = "volume_delete"
    VOLUME_GROW = "volume_grow"
    VOLUME_ATTACH = "volume_attach"
    VOLUME_DETACH = "volume_detach"
    SNAPSHOT_CREATE = "snapshot_create"
    SNAPSHOT_DELETE = "snapshot_delete"
    SNAPSHOT_REVERT = "snapshot_revert"
    # A copy of a volume (or of a snapshot) to a new file, on this host or another; a job.
    VOLUME_COPY = "volume_copy"
    # A running VM's disk moved to a new file while the guest runs (block copy, pivot); a job
    # on the VM's host.
    VOLUME_MOVE_LIVE = "volume_move_live"
    # A volume's image to and from the cell server's image spool (over HTTP, with the node's
    # token): export uploads it (args: pool, file, image, disk), import makes a new volume
    # from it (args: pool, file, format, size_mb, image, disk, sha256).
    VOLUME_EXPORT = "volume_export"
    VOLUME_IMPORT = "volume_import"
    # SR-IOV (issue 22): change one VF's runtime settings on the node (args: pf (its device),
    # vf (its index), settings (the VfSettings fields to set)); no vm_uuid. The answer's
    # result is {"vf": the VF as the host read it back}.
    VF_SET = "vf_set"

    @property
    def storage(self) -> bool:
        """Whether this command acts on a pool's files (its outcome is seen in the pool, not
        in the VM's power state)."""
        return self in STORAGE_COMMANDS


STORAGE_COMMANDS = frozenset(
    {
        CommandType.VOLUME_CREATE,
        CommandType.VOLUME_DELETE,
        CommandType.VOLUME_GROW,
        CommandType.VOLUME_ATTACH,
        CommandType.VOLUME_DETACH,
        CommandType.SNAPSHOT_CREATE,
        CommandType.SNAPSHOT_DELETE,
        CommandType.SNAPSHOT_REVERT,
        CommandType.VOLUME_COPY,
        CommandType.VOLUME_MOVE_LIVE,
        CommandType.VOLUME_EXPORT,
        CommandType.VOLUME_IMPORT,
    }
)
