"""Flavors: named sizes for VMs (vCPUs, memory, root disk) with free-form properties.

A VM keeps a copy of the flavor it was given (`FlavorRef`), taken when the flavor was applied
(at creation or by a resize), so changing or deleting the flavor later changes no VM. A
flavor some VM (or an unfinished resize) still names cannot be deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bollard.domain.limits import MAX_DISK_MB

FLAVOR_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PROPERTY_KEY = r"^[A-Za-z0-9_.:-]{1,255}$"
MAX_PROPERTIES = 64
MAX_PROPERTY_VALUE = 255
MAX_VCPUS = 1024
MIN_MEMORY_MB = 16
MAX_MEMORY_MB = 16 * 1024 * 1024
_NAME = re.compile(FLAVOR_NAME)
_KEY = re.compile(PROPERTY_KEY)


@dataclass(frozen=True)
class FlavorRef:
    """A flavor as a VM (or a resize) recorded it when it was applied. A size given by hand
    (a VM created without a flavor) is a ref with no id and no name."""

    id: str | None
    name: str | None
    vcpus: int
    memory_mb: int
    disk_mb: int  # its root disk (vda) in MiB; 0: the flavor asks for none
    properties: dict[str, str] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "disk_mb": self.disk_mb,
            "properties": dict(self.properties),
        }

    @property
    def custom(self) -> bool:
        return self.id is None

    @property
    def label(self) -> str:
        """Its name, or the size for one given by hand."""
        return self.name or f"custom ({self.vcpus} vCPU, {self.memory_mb} MiB)"

    @classmethod
    def of(cls, raw: dict[str, Any]) -> FlavorRef:
        return cls(
            id=None if raw.get("id") is None else str(raw["id"]),
            name=None if raw.get("name") is None else str(raw["name"]),
            vcpus=int(raw["vcpus"]),
            memory_mb=int(raw["memory_mb"]),
            disk_mb=int(raw.get("disk_mb") or 0),
            properties={str(k): str(v) for k, v in (raw.get("properties") or {}).items()},
        )


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    memory_mb: int
    disk_mb: int
    description: str | None
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.vcpus, self.memory_mb, self.disk_mb)

    def ref(self) -> FlavorRef:
        """The copy a VM keeps of this flavor as it is now."""
        return FlavorRef(
            self.id, self.name, self.vcpus, self.memory_mb, self.disk_mb, dict(self.properties)
        )


def check_flavor_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a flavor name (1-63 of A-Z, a-z, 0-9, '.', '-', '_', starting "
            "with a letter or digit)"
        )
    return name


def check_size(vcpus: int, memory_mb: int, disk_mb: int) -> None:
    """ValueError naming the first value out of range."""
    if not 1 <= vcpus <= MAX_VCPUS:
        raise ValueError(f"vcpus: {vcpus} is not between 1 and {MAX_VCPUS}")
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise ValueError(
            f"memory_mb: {memory_mb} is not between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}"
        )
    if not 0 <= disk_mb <= MAX_DISK_MB:
        raise ValueError(f"disk_mb: {disk_mb} is not between 0 and {MAX_DISK_MB}")


def check_properties(properties: dict[str, str]) -> dict[str, str]:
    """The properties, or ValueError naming the first bad key or value."""
    if len(properties) > MAX_PROPERTIES:
        raise ValueError(f"properties: at most {MAX_PROPERTIES}")
    for key, value in properties.items():
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"property {key!r}: a key is 1-255 of A-Z, a-z, 0-9, '_', '.', ':', '-'"
            )
        if len(value) > MAX_PROPERTY_VALUE:
            raise ValueError(f"property {key!r}: the value is longer than {MAX_PROPERTY_VALUE}")
    return properties
