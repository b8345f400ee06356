"""A host's VM inventory as reports carry it: full on connect, then deltas with a digest.

The digest is order-independent (the sum of a 64-bit hash of every entry, modulo 2**64), so
either side updates it in O(changes) and compares it in O(1): a heartbeat that changes
nothing costs the server the same whether the host runs one VM or a thousand. When the
server's digest after applying a delta differs from the one the host sent, it asks for a
full report (``resync``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from bollard.domain.protocol import VmReport

_MOD = 1 << 64


def entry_hash(report: VmReport) -> int:
    text = "|".join(
        (
            report.uuid,
            report.name,
            report.power.value,
            str(report.vcpus),
            str(report.memory_mb),
            str(report.epoch),
        )
    )
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def format_digest(value: int) -> str:
    return f"{value:016x}"


@dataclass
class Delta:
    """What changed between two inventories: new or changed entries, and uuids gone."""

    changed: list[VmReport] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.gone)


class Inventory:
    """The VMs a host has, by uuid, with a running digest.

    Only each entry's hash is kept, not the report: the server holds one inventory per
    connected host (100,000 entries at 2,500 hosts), and a dict of strings to ints is
    invisible to the garbage collector, where 100,000 report objects were a third of what
    every full collection walked (docs/performance.md, fix #11)."""

    def __init__(self, reports: Iterable[VmReport] = ()) -> None:
        self._vms: dict[str, int] = {}
        self._sum = 0
        for report in reports:
            self._put(report.uuid, entry_hash(report))

    def __len__(self) -> int:
        return len(self._vms)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._vms

    def hash_of(self, uuid: str) -> int | None:
        """The hash of the entry held for `uuid` (entry_hash), or None."""
        return self._vms.get(uuid)

    def entries(self) -> dict[str, int]:
        """uuid -> entry hash, a copy."""
        return dict(self._vms)

    @property
    def digest(self) -> str:
        return format_digest(self._sum)

    def _put(self, uuid: str, new: int) -> None:
        old = self._vms.get(uuid)
        if old is not None:
            self._sum = (self._sum - old) % _MOD
        self._vms[uuid] = new
        self._sum = (self._sum + new) % _MOD

    def _drop(self, uuid: str) -> int | None:
        old = self._vms.pop(uuid, None)
        if old is not None:
            self._sum = (self._sum - old) % _MOD
        return old

    def diff(self, current: Iterable[VmReport]) -> Delta:
        """What turns this inventory into `current` (O(VMs); the host side uses it)."""
        delta = Delta()
        seen: set[str] = set()
        for report in current:
            seen.add(report.uuid)
            if self._vms.get(report.uuid) != entry_hash(report):
                delta.changed.append(report)
        delta.gone = [uuid for uuid in self._vms if uuid not in seen]
        return delta

    def apply(self, delta: Delta) -> Delta:
        """Apply `delta`; returns what really changed here (entries equal to the ones held
        and uuids not held are left out)."""
        applied = Delta()
        for report in delta.changed:
            new = entry_hash(report)
            if self._vms.get(report.uuid) != new:
                self._put(report.uuid, new)
                applied.changed.append(report)
        for uuid in delta.gone:
            if self._drop(uuid) is not None:
                applied.gone.append(uuid)
        return applied

    def replace(self, reports: Iterable[VmReport]) -> Delta:
        """Take a full report; returns what changed compared with the inventory held."""
        return self.apply(self.diff(list(reports)))
