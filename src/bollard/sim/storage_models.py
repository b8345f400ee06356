"""Records of sim storage stored in the fabric: volumes of pools, their snapshots, the pool
settings, the disks of sim VMs and what a copy job carries (see bollard.sim.storage)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

VolumeFormat = Literal["qcow2", "raw"]
PoolType = Literal["local", "shared"]

DEFAULT_POOL_CAPACITY_MB = 1024 * 1024  # 1 TiB


class _Record(BaseModel):
    # Unknown fields (written by a newer version) are ignored rather than fatal.
    model_config = ConfigDict(extra="ignore")


class SimSnapshot(_Record):
    """An internal snapshot of a sim volume: its content digest and size when it was taken."""

    checksum: str
    size_mb: int = Field(ge=0)
    data_mb: int = Field(default=0, ge=0)  # how much of it the guest had written
    created_at: float


class SimPartial(_Record):
    """A volume being filled by a copy job: the job (on host ``node``, command
    ``command_id``) decides whether the volume is there: while the job runs it is partial,
    once the job completed it is whole, and an aborted, failed or vanished job leaves a
    leftover that counts as absent."""

    node: str
    command_id: str


class SimVolume(_Record):
    """``<pool dir>/<file>.json``: one volume of a pool.

    ``checksum`` stands for the guest-visible content (hex sha256): an empty volume has the
    digest of nothing, every write chains its data into it (sha256(old digest + data)), a
    copy or a migration carries it as it is, whatever the format. ``data_mb`` is how much
    the guest has written (from the start of the disk): a qcow2 volume allocates that much,
    a raw one its whole size.
    """

    file: str
    format: VolumeFormat
    size_mb: int = Field(ge=0)
    data_mb: int = Field(default=0, ge=0)
    checksum: str
    snapshots: dict[str, SimSnapshot] = Field(default_factory=dict)
    partial: SimPartial | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @property
    def allocated_mb(self) -> int:
        return self.size_mb if self.format == "raw" else min(self.data_mb, self.size_mb)


class SimPoolSettings(_Record):
    """``<pool dir>/.pool.json`` (absent: the defaults)."""

    capacity_mb: int = Field(default=DEFAULT_POOL_CAPACITY_MB, ge=0)


class SimDisk(_Record):
    """A disk of a sim VM defined by its device: a volume of a pool (``path``, a sim://
    path), or a local disk that names its device (``path`` ""). Local disks at devices by
    index stay in ``SimVm.disks`` (their sizes), as before pools existed."""

    device: str
    size_mb: int = Field(ge=0)  # when defined or last resized (a volume's own size wins)
    path: str = ""
    format: VolumeFormat = "qcow2"


class SimCopy(_Record):
    """What a copy job carries (``SimJob.copy``): where its target is, so that an abort can
    remove it."""

    target_node: str | None  # None: a shared pool
    target_pool: str
    target_type: PoolType
    target_file: str
