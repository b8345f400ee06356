"""The typed parameters of every kind of task, validated when the task is created (and read
back the same way when it runs or resumes). A task stored by an older version, without a
field added since, gets the field's default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.domain.errors import InvalidInput
from bollard.domain.states import DesiredPower


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def stored(self) -> dict[str, Any]:
        """The JSON form written to the task's row."""
        return self.model_dump(mode="json", by_alias=True)

    def nodes(self) -> frozenset[str]:
        """Nodes besides the task's own whose agents a resumed task waits for."""
        return frozenset()


# What a flow names as its params model (an alias: flows have a `type` attribute of their own).
ParamsModel = type[TaskParams]


def validate(kind: str, model: ParamsModel, params: BaseModel | dict[str, Any]) -> TaskParams:
    """A `kind` task's parameters as its flow's `model` (InvalidInput naming what does not
    fit)."""
    if isinstance(params, TaskParams) and isinstance(params, model):
        return params
    raw = params.model_dump(by_alias=True) if isinstance(params, BaseModel) else params
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"{kind} task parameters: {problems}") from exc


class NoParams(TaskParams):
    """For tasks whose target (VM or node) says everything."""


class CreateParams(TaskParams):
    vcpus: int = Field(ge=1)
    memory_mb: int = Field(ge=1)
    start: bool = False
    node: str | None = None  # the node asked for, if any
    # The VM's local disks ({"size_mb"}) and NICs ({"mac", "network"|"bridge", "model"}),
    # as the DEFINE command carries them (none in tasks from before disks and NICs).
    disks: list[dict[str, Any]] = Field(default_factory=list)
    nics: list[dict[str, Any]] = Field(default_factory=list)


class PowerParams(TaskParams):
    """start, stop, shutdown, restart: a shutdown's grace period (None: the server's), and
    the VM's desired power before the request changed it (given back if the task fails)."""

    timeout: float | None = Field(default=None, gt=0)
    found_desired: DesiredPower | None = None


class DeleteParams(TaskParams):
    """delete: the VM's desired power before the request changed it (given back if the
    delete fails)."""

    found_desired: DesiredPower | None = None


MigrationMode = Literal["migrate", "move", "unmigrate"]
MigrationMethod = Literal["default", "live", "shutdown"]


class MigrateParams(TaskParams):
    mode: MigrationMode
    source: str
    target: str
    method: MigrationMethod
    force_live: bool = False
    was_running: bool
    epoch: int  # the VM's epoch on the source; the target's is epoch + 1
    vcpus: int
    memory_mb: int
    shutdown_timeout: float | None = None
    # Some of its disks are volumes of shared pools (whose locks move with the VM).
    shared_disks: bool = False

    def nodes(self) -> frozenset[str]:
        return frozenset({self.source, self.target})


class HaRestartParams(TaskParams):
    source: str = Field(alias="from")  # the fenced node the VM is restarted away from
    epoch: int
    priority: int = 0
    start: bool = True  # False: only define it on its new node (it was meant to be off)
    found_desired: DesiredPower | None = None  # given back if the restart fails


class DrainParams(TaskParams):
    during: str  # the node's scheduling state while the task runs (flushing, unflushing)


# -- storage (domain/storage.py; flows/volumes.py, flows/volume_copies.py) -------------------


class VolumeParams(TaskParams):
    """A task on one volume (delete, detach)."""

    volume_id: str
    volume: str = ""  # its name, for people reading the task


class VolumeCreateParams(VolumeParams):
    # Made from a snapshot of another volume: that volume's id and the snapshot's name.
    source_id: str | None = None
    snapshot: str | None = None


class VolumeGrowParams(VolumeParams):
    size_mb: int = Field(ge=1)
    from_mb: int = Field(ge=1)  # its size before


class VolumeAttachParams(VolumeParams):
    vm_uuid: str
    device: str


class SnapshotParams(VolumeParams):
    snapshot: str


class VolumeCopyParams(VolumeParams):
    """copy: `volume_id` is the source; `target_id` the new volume. migrate: `target_id` is
    the same volume; it moves to `pool` (on `node`, a local pool) under `file`."""

    target_id: str
    pool: str
    node: str | None = None
    file: str
    # Where it was (migrate): its pool, node and file before, and whether the old copy has
    # been removed.
    from_pool: str = ""
    from_node: str | None = None
    from_file: str = ""
    # A disk of a running VM (migrate): moved while the guest runs (block copy, pivot) by
    # the VM's host; its device there.
    live: bool = False
    device: str | None = None
    attached: bool = False  # a disk of a VM (stopped, unless `live`)


# -- resize (flows/resize.py, flows/resize_end.py) --------------------------------------------


class ResizeDisk(TaskParams):
    """One disk a resize copies: the original volume (attached at `device`) and its copy."""

    device: str
    original_id: str
    copy_id: str
    from_mb: int
    size_mb: int  # the copy's size (the root disk grows to the flavor's)


class ResizeParams(TaskParams):
    migration_id: str
    source: str
    dest: str
    epoch: int  # the VM's epoch on the source; on another destination it is epoch + 1
    was_running: bool
    old_vcpus: int
    old_memory_mb: int
    vcpus: int
    memory_mb: int
    disks: list[ResizeDisk] = Field(default_factory=list)
    shutdown_timeout: float | None = None

    @property
    def same_node(self) -> bool:
        return self.source == self.dest

    @property
    def dest_epoch(self) -> int:
        return self.epoch if self.same_node else self.epoch + 1

    def nodes(self) -> frozenset[str]:
        return frozenset({self.source, self.dest})


class ResizeEndParams(TaskParams):
    """confirm or revert: the resize's record, its hosts, and the epoch the VM has on the
    destination now (a revert gives the source the next one)."""

    migration_id: str
    source: str
    dest: str
    epoch: int
    source_epoch: int  # the epoch of the copy the source keeps
    was_running: bool  # before the resize (a revert starts it on the source if so)

    @property
    def same_node(self) -> bool:
        return self.source == self.dest

    def nodes(self) -> frozenset[str]:
        return frozenset({self.source, self.dest})


# -- images of VMs between cells (flows/vm_images.py) ---------------------------------------


class ImageDisk(TaskParams):
    """One disk of a VM as its image carries it: the volume attached at `device`, which is
    also the disk's name in the image."""

    device: str = Field(pattern=r"^vd[a-p]$")
    volume_id: str


class VmExportParams(TaskParams):
    """vm_export: the spool image the VM's disks go to (one step per disk, device order)."""

    image: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
    disks: list[ImageDisk] = Field(default_factory=list)


class VmSpawnParams(TaskParams):
    """vm_spawn: the spool image the VM's reserved volumes are made from, and whether the
    VM is started once defined."""

    image: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
    start: bool = True
    disks: list[ImageDisk] = Field(default_factory=list)
