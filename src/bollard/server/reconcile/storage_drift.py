"""The storage part of a state-reconciliation pass: which hosts to ask for their pools' files,
and the facts the storage classes are judged on (bollard.domain.storage_drift decides).

A look reads the records (pools, volumes, the tasks they point at and every unfinished task,
the VMs volumes are attached to), asks every connected host at once for the files of the
pools it is a host of, with one deadline for all (`ASK_DEADLINE`), then reads the records
again: a host that does not answer in time, or cannot read a pool, claims nothing about it,
and a record that changed between the two reads is not judged (see the domain module).

Listing files is costly on a real host (a pool refresh, then each file's header), so the
reconciler looks at storage in a loop of its own, every ``reconcile.storage.interval``
seconds; `bollard reconcile` (GET /reconcile, POST /reconcile/fix) always looks now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bollard.domain.drift import Drift
from bollard.domain.protocol import StorageReport
from bollard.domain.storage import Pool, PoolType, Volume
from bollard.domain.storage_drift import (
    HostFile,
    Place,
    StorageFacts,
    VolumeTask,
    classify_storage,
)
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import nodes, pools, tasks, vms, volumes

log = logging.getLogger(__name__)

ASK_DEADLINE = 5.0  # seconds every host has to list its pools' files, all asked at once
# A shared pool is one directory every host of it sees: this many of its hosts list it (the
# first connected ones by name), not all of them.
SHARED_WITNESSES = 2


class StorageAsker(Protocol):
    """What a host's pools hold (server/storage_query.py StorageQueries)."""

    async def query(
        self, node: str, of: list[Pool], *, volumes: bool = False, timeout: float = ...
    ) -> StorageReport | None: ...


Listings = dict[tuple[str, str], dict[str, HostFile]]


@dataclass(frozen=True)
class Records:
    """One read of what the storage classes judge."""

    pools: dict[str, Pool]
    volumes: list[Volume]
    tasks: dict[str, VolumeTask]
    vms: dict[str, tuple[str | None, str | None, Any]]  # uuid -> (task_id, node, updated_at)
    connected: list[str]


@dataclass
class StorageScan:
    differences: list[Drift]
    volumes: int = 0
    asked: list[str] = field(default_factory=list)  # the hosts asked for their files
    silent: list[str] = field(default_factory=list)  # those that did not answer in time
    seconds: float = 0.0  # how long the look took


def task_places(params: Mapping[str, Any]) -> tuple[Place, ...]:
    """The files a volume task writes or removes besides its volumes' own: a copy's or a
    migration's target (`pool`, `node`, `file`), a migration's source (`from_*`)."""
    places: list[Place] = []
    for prefix in ("", "from_"):
        pool, file = params.get(f"{prefix}pool"), params.get(f"{prefix}file")
        if isinstance(pool, str) and isinstance(file, str) and pool and file:
            node = params.get(f"{prefix}node")
            places.append((pool, node if isinstance(node, str) else None, file))
    return tuple(places)


def read_records(conn: Any) -> Records:
    """Read what the storage classes judge (in one read transaction)."""
    node_list = nodes.list_all(conn)
    all_pools = {p.name: p for p in pools.list_all(conn)}
    all_volumes = volumes.all_volumes(conn)
    held = [v.task_id for v in all_volumes if v.task_id]
    found = {t.id: t for t in tasks.get_many(conn, held)}
    found.update({t.id: t for t in tasks.unfinished(conn, include_rolling_back=True)})
    views = {t.id: VolumeTask(t.id, t.type, t.state, task_places(t.params)) for t in found.values()}
    attached = sorted({v.vm_uuid for v in all_volumes if v.vm_uuid})
    vm_state = {
        uuid: (vm.task_id, vm.node, vm.updated_at)
        for uuid, vm in vms.find_many(conn, attached).items()
    }
    connected = sorted(n.name for n in node_list if n.connected)
    return Records(all_pools, all_volumes, views, vm_state, connected)


def facts_of(first: Records, second: Records, listings: Listings) -> StorageFacts:
    """The facts of a look: the second read judged, the first one for what changed."""
    busy = {
        uuid
        for uuid in first.vms.keys() | second.vms.keys()
        if first.vms.get(uuid) != second.vms.get(uuid)
        or (first.vms.get(uuid) or (None,))[0] is not None
        or (second.vms.get(uuid) or (None,))[0] is not None
    }
    return StorageFacts(
        pools=second.pools,
        volumes=second.volumes,
        before={v.id: v for v in first.volumes},
        listings=listings,
        tasks={**first.tasks, **second.tasks},
        busy_vms=frozenset(busy),
    )


def listings_of(node: str, asked: list[Pool], report: StorageReport) -> Listings:
    """What a host's answer lists: each pool it could read and whose files it listed."""
    names = {p.name for p in asked}
    out: Listings = {}
    for entry in report.pools:
        if entry.name not in names or not entry.ok or entry.volumes is None:
            continue
        out[(entry.name, node)] = {
            f.file: HostFile(f.file, f.size_mb, f.partial) for f in entry.volumes
        }
    return out


def whom_to_ask(all_pools: Iterable[Pool], connected: list[str]) -> dict[str, list[Pool]]:
    """Which pools to ask each connected host about: each local pool of every host of it;
    each shared pool of its first `SHARED_WITNESSES` connected hosts."""
    asked: dict[str, list[Pool]] = {}
    for pool in all_pools:
        hosts = [n for n in sorted(connected) if pool.sees(n)]
        if pool.type is PoolType.SHARED:
            hosts = hosts[:SHARED_WITNESSES]
        for node in hosts:
            asked.setdefault(node, []).append(pool)
    return asked


class StorageLooks:
    """Asks hosts what their pools hold, and makes the storage part of a pass."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        storage: StorageAsker,
        deadline: float = ASK_DEADLINE,
    ) -> None:
        self.work = work
        self.clock = clock
        self.storage = storage
        self.deadline = deadline

    async def scan(self) -> StorageScan:
        """Read, ask the hosts, read again, classify."""

        def read() -> Records:
            with self.work.read() as conn:
                return read_records(conn)

        started = self.clock.monotonic()
        first = await self.work.run(read)
        asked = whom_to_ask(first.pools.values(), first.connected)
        listings, silent = await self.ask(asked)
        second = await self.work.run(read)
        differences = classify_storage(facts_of(first, second, listings))
        seconds = self.clock.monotonic() - started
        return StorageScan(differences, len(second.volumes), sorted(asked), silent, seconds)

    async def ask(self, asked: Mapping[str, list[Pool]]) -> tuple[Listings, list[str]]:
        """Ask each host for its pools' files, all at once; what they listed, and the hosts
        that gave no answer in time."""
        names = sorted(asked)
        answers = await asyncio.gather(
            *(self.storage.query(n, asked[n], volumes=True, timeout=self.deadline) for n in names)
        )
        listings: Listings = {}
        silent: list[str] = []
        for node, report in zip(names, answers, strict=True):
            if report is None:
                silent.append(node)
                continue
            listings.update(listings_of(node, asked[node], report))
        if silent:
            log.info("storage look: no answer from %s; nothing is claimed there", ", ".join(silent))
        return listings, silent
