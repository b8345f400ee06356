"""Bodies of /api/v1/flavors, the flavor a VM or a resize records (FlavorRefOut), and a
VM's open resize (ResizeOut)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from bollard.domain.flavors import (
    FLAVOR_NAME,
    MAX_MEMORY_MB,
    MAX_PROPERTIES,
    MAX_VCPUS,
    MIN_MEMORY_MB,
    Flavor,
    FlavorRef,
)
from bollard.domain.limits import MAX_DISK_MB
from bollard.domain.migrations import Migration
from bollard.domain.models import Page

FlavorName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=FLAVOR_NAME)]
ROOT_DISK = (
    "The root disk (vda) in MiB that a VM of this flavor gets (0: none asked for). A resize "
    "to a flavor grows the VM's root disk to it, and never shrinks one."
)


class FlavorRefOut(BaseModel):
    """A flavor as a VM (or a resize) recorded it when it was applied; `id` and `name` are
    null for a size given by hand."""

    id: str | None
    name: str | None
    vcpus: int
    memory_mb: int
    disk_mb: int
    properties: dict[str, str]

    @classmethod
    def of(cls, ref: FlavorRef) -> FlavorRefOut:
        return cls(
            id=ref.id, name=ref.name, vcpus=ref.vcpus, memory_mb=ref.memory_mb,
            disk_mb=ref.disk_mb, properties=dict(ref.properties),
        )  # fmt: skip


class FlavorCreate(BaseModel):
    name: FlavorName
    vcpus: int = Field(ge=1, le=MAX_VCPUS)
    memory_mb: int = Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    disk_mb: int = Field(default=0, ge=0, le=MAX_DISK_MB, description=ROOT_DISK)
    description: str | None = Field(default=None, max_length=200)
    properties: dict[str, Annotated[str, StringConstraints(max_length=255)]] = Field(
        default_factory=dict,
        max_length=MAX_PROPERTIES,
        description="Free-form key=value pairs (later: SR-IOV ports, CPU pinning).",
    )


class FlavorReplica(BaseModel):
    """A flavor as another database holds it (an API server in front of cells gives its
    cells theirs so)."""

    id: str = Field(min_length=1, max_length=36)
    vcpus: int = Field(ge=1, le=MAX_VCPUS)
    memory_mb: int = Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    disk_mb: int = Field(default=0, ge=0, le=MAX_DISK_MB, description=ROOT_DISK)
    description: str | None = Field(default=None, max_length=200)
    properties: dict[str, Annotated[str, StringConstraints(max_length=255)]] = Field(
        default_factory=dict, max_length=MAX_PROPERTIES
    )


class FlavorUpdate(BaseModel):
    description: str | None = Field(default=None, max_length=200)
    properties: dict[str, Annotated[str, StringConstraints(max_length=255)]] | None = Field(
        default=None, description="Properties to set (others are kept)."
    )
    unset_properties: list[str] | None = Field(default=None, description="Properties to remove.")


class FlavorOut(BaseModel):
    id: str
    name: str
    vcpus: int
    memory_mb: int
    disk_mb: int = Field(description=ROOT_DISK)
    description: str | None
    properties: dict[str, str]
    used_by: int = Field(description="VMs whose current size this flavor gave.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, f: Flavor, used_by: int) -> FlavorOut:
        return cls(
            id=f.id, name=f.name, vcpus=f.vcpus, memory_mb=f.memory_mb, disk_mb=f.disk_mb,
            description=f.description, properties=dict(f.properties), used_by=used_by,
            created_at=f.created_at, updated_at=f.updated_at,
        )  # fmt: skip


class FlavorPage(BaseModel):
    items: list[FlavorOut]
    next_cursor: str | None
    total: int

    @classmethod
    def of(cls, page: Page, used: dict[str, int]) -> FlavorPage:
        return cls(
            items=[FlavorOut.of(f, used.get(f.id, 0)) for f in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )


class ResizeOut(BaseModel):
    """A VM's resize that is not yet confirmed or reverted."""

    migration_id: str
    source: str | None
    dest: str | None
    old_flavor: FlavorRefOut | None
    new_flavor: FlavorRefOut | None
    status: str
    error: str | None
    updated_at: datetime

    @classmethod
    def of(cls, m: Migration) -> ResizeOut:
        return cls(
            migration_id=m.id,
            source=m.source,
            dest=m.dest,
            old_flavor=FlavorRefOut.of(m.old_flavor) if m.old_flavor else None,
            new_flavor=FlavorRefOut.of(m.new_flavor) if m.new_flavor else None,
            status=m.status.value,
            error=m.error,
            updated_at=m.updated_at,
        )
