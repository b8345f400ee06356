"""Reading a qcow2 image's table of internal snapshots (the qcow2 specification,
docs/interop/qcow2.txt in QEMU), from bytes the driver downloads through libvirt.

``qemu-img`` lists snapshots without the size the image had when each was taken; the table
has it (the ``disk_size`` of each entry's extra data, written by QEMU since qcow2 version
3). Reading the table through ``virStorageVolDownload`` works wherever the daemon is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"QFI\xfb"
HEADER_BYTES = 72  # through snapshots_offset
_ENTRY = struct.Struct(">QIHHIIQII")  # the fixed part of a snapshot entry (40 bytes)


class Qcow2Error(ValueError):
    """Not a qcow2 image, or a table that cannot be read."""


@dataclass(frozen=True)
class TableLocation:
    count: int
    offset: int


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    created_at: float  # seconds since the epoch
    disk_size: int | None  # bytes (None: the entry does not say)


def table_location(header: bytes) -> TableLocation:
    """Where the snapshot table is, from the image's first ``HEADER_BYTES`` bytes."""
    if len(header) < HEADER_BYTES or header[:4] != MAGIC:
        raise Qcow2Error("not a qcow2 image")
    count, offset = struct.unpack_from(">IQ", header, 60)
    return TableLocation(count, offset)


def parse_table(data: bytes, count: int) -> list[Snapshot] | None:
    """The ``count`` entries of the table at the start of ``data``, in table order; None
    when ``data`` ends before the last entry does (read more)."""
    out = []
    pos = 0
    for _ in range(count):
        if pos + _ENTRY.size > len(data):
            return None
        _l1, _l1_size, id_size, name_size, sec, nsec, _clock, _vm_state, extra_size = (
            _ENTRY.unpack_from(data, pos)
        )
        extra_at = pos + _ENTRY.size
        id_at = extra_at + extra_size
        name_at = id_at + id_size
        end = name_at + name_size
        if end > len(data):
            return None
        disk_size = None
        if extra_size >= 16:
            (disk_size,) = struct.unpack_from(">Q", data, extra_at + 8)
        try:
            ident = data[id_at:name_at].decode()
            name = data[name_at:end].decode()
        except UnicodeDecodeError:
            raise Qcow2Error("a snapshot's id or name is not UTF-8") from None
        out.append(Snapshot(ident, name, sec + nsec / 1e9, disk_size))
        pos = (end + 7) & ~7  # entries are padded to a multiple of 8 bytes
    return out
