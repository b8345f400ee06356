"""The image of a sim volume: what ``export_volume`` gives and ``import_volume`` takes (see
agent/drivers/storage.py).

A sim volume keeps no bytes, only a digest standing for its content (see bollard.sim.storage),
so its image is a small JSON document of its record: format, size, how much the guest wrote
and the content digest. The same volume always gives the same bytes (keys sorted, no
spaces), and an import makes a volume with the same ``checksum``: the guest's data moved.
Snapshots do not travel (an image is the volume as it is now).
"""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bollard.sim.storage import PoolKey, SimStorage, StorageRefused
from bollard.sim.storage_models import SimVolume, VolumeFormat

KIND = "bollard-sim-volume"
MAX_IMAGE = 64 * 1024  # bytes: a sim image is a few hundred; more is not one


class SimImage(BaseModel):
    """The document an exported sim volume is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=f"^{KIND}$")
    version: int = Field(ge=1, le=1)
    format: VolumeFormat
    size_mb: int = Field(ge=1)
    data_mb: int = Field(ge=0)
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")

    def same(self, rec: SimVolume) -> bool:
        """Whether the volume holds what this image holds."""
        return (rec.format, rec.size_mb, rec.data_mb, rec.checksum) == (
            self.format, self.size_mb, self.data_mb, self.checksum,
        )  # fmt: skip


def image_of(rec: SimVolume) -> bytes:
    """The volume's image (always the same bytes for the same content)."""
    doc = SimImage(
        kind=KIND, version=1, format=rec.format, size_mb=rec.size_mb, data_mb=rec.data_mb,
        checksum=rec.checksum,
    )  # fmt: skip
    text = json.dumps(doc.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode()


def parse_image(data: bytes, fmt: VolumeFormat, size_mb: int) -> SimImage:
    """The image in ``data``, which must be of ``fmt`` and ``size_mb``; StorageRefused
    (invalid-input) otherwise."""
    if len(data) > MAX_IMAGE:
        raise StorageRefused("invalid-input", f"not a sim volume image: over {MAX_IMAGE} bytes")
    try:
        image = SimImage.model_validate(json.loads(data))
    except (ValueError, ValidationError):
        raise StorageRefused("invalid-input", "not a sim volume image") from None
    if (image.format, image.size_mb) != (fmt, size_mb):
        raise StorageRefused(
            "invalid-input",
            f"the image is {image.format} of {image.size_mb} MiB, not {fmt} of {size_mb} MiB",
        )
    return image


def export_record(storage: SimStorage, node: str, pool: PoolKey, file: str, now: float) -> bytes:
    """The image of a whole volume no running VM has open (StorageRefused otherwise)."""
    rec = storage.get(node, pool, file, now)
    if rec is None:
        where = "" if pool.type == "shared" else f" on {node}"
        raise StorageRefused("not-found", f"no volume {file} in {pool}{where}")
    if rec.partial is not None:
        raise StorageRefused("invalid-state", f"volume {file} in {pool} is being copied into")
    users = storage.running_users(node, pool, file)
    if users:
        who = ", ".join(f"{vm.name} on {host}" for host, vm in users)
        raise StorageRefused("invalid-state", f"volume {file} is in use by running VM {who}")
    return image_of(rec)


def import_record(
    storage: SimStorage, node: str, pool: PoolKey, file: str, image: SimImage, now: float
) -> SimVolume:
    """Make the volume from the image (the caller holds the fabric lock): the existing one
    if it holds that content; StorageRefused if it holds another, or there is no room. The
    record is written whole (a temporary file renamed), so it is there or not."""
    rec = storage.get(node, pool, file, now)
    if rec is not None:
        if rec.partial is None and image.same(rec):
            return rec
        what = "being copied into" if rec.partial else "with other content"
        raise StorageRefused("invalid-state", f"volume {file} exists in {pool} {what}")
    new = SimVolume(
        file=file, format=image.format, size_mb=image.size_mb, data_mb=image.data_mb,
        checksum=image.checksum, created_at=time.time(),
    )  # fmt: skip
    storage.check_room(node, pool, new.allocated_mb, now)
    return storage.put(node, pool, new)
