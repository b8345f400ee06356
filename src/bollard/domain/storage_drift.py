"""Differences between the volume records and the files the hosts' pools hold, by class.
Pure: the state reconciler gathers the facts (server/reconcile/storage_drift.py), this
decides, and every case is unit-tested.

- ``volume-missing``: a volume at rest (ready or attached, no task) whose file its pool does
  not have on the host that must have it: its node in a local pool; in a shared pool, none
  of the hosts of the pool that listed it (they all see one directory).
- ``volume-orphan``: a file in a pool that no volume record owns (same pool, and in a local
  pool same node), that no running task writes (the target of a copy or a migration, or the
  source a migration has yet to remove), and that is not a file of a volume a task holds
  (a VM migration carries its local volumes to another host before its record follows).
  The unfinished target of a copy (``partial``) that no running task drives is one too: a
  leftover, which the default policy cleans by itself (see `auto_fix`).
- ``volume-stuck``: a volume in a transitional state whose task has ended, does not exist,
  or is not set at all; or a volume at rest still held by a task that ended.
- ``volume-size``: the file's size on its host differs from the record's (at rest).

A claim about a host's files rests only on that host's answer in this pass: a host that did
not answer, or could not read the pool, claims nothing (no file is missing there, none is an
orphan). The records are read twice, before and after the hosts are asked; a volume whose
record differs between the two reads (a task took it, ended, moved it) is not judged in this
pass, nor is a volume whose VM a task holds or changed between the reads, so what a host
listed is never judged against a record that was not true while it listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bollard.domain.drift import Drift, DriftClass
from bollard.domain.states import TaskStatus
from bollard.domain.storage import Pool, PoolType, Volume, VolumeState

# The files Bollard names (domain/storage.py volume_file and vm_disk_file): only those are
# ever deleted by a fix; any other file in a pool is someone else's and only reported.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_BOLLARD_FILE = re.compile(rf"^(?:vol-{_UUID}\.(?:qcow2|raw)|{_UUID}-vd[a-p]\.qcow2)$")

# The policies of reconcile.auto.<class>; `partial` only for volume-orphan (its default).
REPORT = "report"
FIX = "fix"
PARTIAL = "partial"

# The states in which a volume's file must be in its pool: at rest, not in error (a volume
# in error says so already; one whose create failed may have no file).
_MUST_HAVE_FILE = frozenset({VolumeState.READY, VolumeState.ATTACHED})

Place = tuple[str, str | None, str]  # (pool, node or None for a shared pool, file)


def bollard_file(name: str) -> bool:
    """Whether `name` is a volume file as Bollard names them (``vol-<uuid>.<fmt>``, or
    ``<vm-uuid>-vd<x>.qcow2`` for disks made with their VM)."""
    return _BOLLARD_FILE.fullmatch(name) is not None


def auto_fix(drift: Drift, policy: str) -> bool:
    """Whether the reconciler fixes `drift` by itself under its class's policy."""
    if policy == FIX:
        return True
    return (
        policy == PARTIAL
        and drift.kind is DriftClass.VOLUME_ORPHAN
        and bool(drift.data.get("partial"))
    )


@dataclass(frozen=True)
class HostFile:
    """A file of a pool as one host listed it."""

    file: str
    size_mb: int
    partial: bool = False  # the target of a copy still running (or left by one)


@dataclass(frozen=True)
class VolumeTask:
    """A task as the storage classes read it: whether it runs, and the files it writes or
    removes besides its volumes' own (a copy's or a migration's target, a migration's
    source)."""

    id: str
    type: str
    state: TaskStatus
    places: tuple[Place, ...] = ()


@dataclass(frozen=True)
class StorageFacts:
    pools: Mapping[str, Pool]
    volumes: Sequence[Volume]  # the records as read after the hosts answered
    before: Mapping[str, Volume]  # the records as read before they were asked, by id
    # (pool, node) -> file -> what the host listed; only pools whose host answered, could
    # read the pool and listed its files.
    listings: Mapping[tuple[str, str], Mapping[str, HostFile]]
    tasks: Mapping[str, VolumeTask]  # the tasks volumes point at, and every unfinished one
    # VMs a task held in either read, or whose record changed between the reads: their
    # volumes are their tasks' business in this pass.
    busy_vms: frozenset[str] = field(default_factory=frozenset)


def classify_storage(facts: StorageFacts) -> list[Drift]:
    found: list[Drift] = []
    settled = [v for v in facts.volumes if facts.before.get(v.id) == v]
    by_pool: dict[str, list[tuple[str, Mapping[str, HostFile]]]] = {}
    for (pool, node), files in sorted(facts.listings.items()):
        by_pool.setdefault(pool, []).append((node, files))
    for volume in settled:
        stuck = _stuck(volume, facts)
        if stuck is not None:
            found.append(stuck)
            continue
        if volume.task_id is not None or (volume.vm_uuid or "") in facts.busy_vms:
            continue
        found.extend(_at_rest(volume, facts, by_pool))
    found.extend(_orphans(facts))
    return found


# -- stuck -------------------------------------------------------------------------------


def _stuck(v: Volume, facts: StorageFacts) -> Drift | None:
    if v.task_id is None:
        if v.state.at_rest:
            return None
        record, why = f"{v.state}, held by no task", "a transitional state needs its task"
        task_state = None
    else:
        task = facts.tasks.get(v.task_id)
        if task is not None and not task.state.ended:
            return None  # the task's business
        what = "does not exist" if task is None else f"ended {task.state}"
        record, why = f"{v.state} (task {v.task_id})", f"task {what}"
        task_state = None if task is None else task.state.value
    return _drift(
        DriftClass.VOLUME_STUCK, v, record=record, host=why,
        data={"volume_id": v.id, "state": v.state.value, "task_id": v.task_id,
              "task_state": task_state},
    )  # fmt: skip


# -- missing and size --------------------------------------------------------------------


Listed = Mapping[str, list[tuple[str, Mapping[str, HostFile]]]]  # pool -> [(node, files)]


def _witnesses(
    v: Volume, pool: Pool, facts: StorageFacts, by_pool: Listed
) -> list[tuple[str, Mapping[str, HostFile]]]:
    """The listings that must hold the volume's file: its node's (local pool), or every
    answering host's (shared pool)."""
    if pool.type is PoolType.LOCAL:
        if v.node is None:
            return []
        listing = facts.listings.get((pool.name, v.node))
        return [] if listing is None else [(v.node, listing)]
    return list(by_pool.get(pool.name, []))


def _at_rest(v: Volume, facts: StorageFacts, by_pool: Listed) -> Iterable[Drift]:
    pool = facts.pools.get(v.pool)
    if pool is None:
        return
    witnesses = _witnesses(v, pool, facts, by_pool)
    if not witnesses:
        return  # no host that must have it answered: no claim
    seen = [(node, files[v.file]) for node, files in witnesses if v.file in files]
    if not seen:
        if v.state not in _MUST_HAVE_FILE:
            return
        hosts = [node for node, _ in witnesses]
        elsewhere = _elsewhere(v, facts)
        yield _drift(
            DriftClass.VOLUME_MISSING, v,
            record=f"{v.state}, {v.size_mb} MiB", host=f"file {v.file} absent",
            detail=f"a file of that name is in {', '.join(elsewhere)}" if elsewhere else "",
            data={"volume_id": v.id, "hosts": hosts, "elsewhere": elsewhere},
        )  # fmt: skip
        return
    node, found = seen[0]
    if found.partial or found.size_mb == v.size_mb:
        return
    yield _drift(
        DriftClass.VOLUME_SIZE, v,
        record=f"{v.size_mb} MiB", host=f"{found.size_mb} MiB on {node}",
        data={"volume_id": v.id, "record_mb": v.size_mb, "size_mb": found.size_mb,
              "host": node},
    )  # fmt: skip


def _elsewhere(v: Volume, facts: StorageFacts) -> list[str]:
    """The other places a file of the volume's name is listed in ("pool p on n")."""
    home = (v.pool, _node_in(v.pool, v.node, facts))
    places = {
        (pool, _node_in(pool, node, facts))
        for (pool, node), files in facts.listings.items()
        if v.file in files
    }
    return sorted(_where(pool, node) for pool, node in places - {home})


def _where(pool: str, node: str | None) -> str:
    return f"pool {pool}" if node is None else f"pool {pool} on {node}"


# -- orphans -----------------------------------------------------------------------------


def _orphans(facts: StorageFacts) -> Iterable[Drift]:
    after = {v.id: v for v in facts.volumes}
    records = {**facts.before, **after}  # every volume either read saw
    owned: set[Place] = set()
    by_file: dict[str, list[Volume]] = {}
    for v in records.values():
        owned.add((v.pool, _node_in(v.pool, v.node, facts), v.file))
        by_file.setdefault(v.file, []).append(v)
    written = {p for t in facts.tasks.values() if not t.state.ended for p in t.places}
    busy_files = {
        name
        for name, vols in by_file.items()
        if any(_moving(v, facts.before.get(v.id), after.get(v.id), facts) for v in vols)
    }
    listed_shared: set[tuple[str, str]] = set()  # a shared pool's file is reported once
    for (pool_name, node), files in sorted(facts.listings.items()):
        pool = facts.pools.get(pool_name)
        if pool is None:
            continue
        shared = pool.type is PoolType.SHARED
        for name, f in sorted(files.items()):
            place = (pool_name, None if shared else node, name)
            if place in owned or place in written or (pool_name, None, name) in written:
                continue
            if name in busy_files:
                continue  # a task holds a volume of that file: it may be carrying it here
            if shared:
                if (pool_name, name) in listed_shared:
                    continue
                listed_shared.add((pool_name, name))
            yield _orphan(pool, node, f, by_file.get(name, []))


def _node_in(pool: str, node: str | None, facts: StorageFacts) -> str | None:
    """A volume's node as its place in the pool: none in a shared pool."""
    p = facts.pools.get(pool)
    return None if p is not None and p.type is PoolType.SHARED else node


def _moving(v: Volume, before: Volume | None, after: Volume | None, facts: StorageFacts) -> bool:
    """Whether a task holds (or held, or changed) the volume across this pass."""
    return (
        before is None
        or after is None
        or before != after
        or v.task_id is not None
        or (v.vm_uuid or "") in facts.busy_vms
    )


def _orphan(pool: Pool, node: str, f: HostFile, same_name: list[Volume]) -> Drift:
    shared = pool.type is PoolType.SHARED
    copy_of = same_name[0] if same_name else None
    named = bollard_file(f.file)
    if f.partial:
        detail = "the unfinished target of a copy no running task drives"
    elif copy_of is not None:
        detail = f"a copy of volume {copy_of.name} (in {_where(copy_of.pool, copy_of.node)})"
    else:
        detail = "unknown to Bollard"
    if not named:
        detail += "; not named as Bollard names volume files: a fix leaves it alone"
    return Drift(
        DriftClass.VOLUME_ORPHAN, None if shared else node, "", "",
        record="no volume record", host=f"{f.size_mb} MiB" + (", partial" if f.partial else ""),
        detail=detail,
        data={
            "host": node, "size_mb": f.size_mb, "partial": f.partial, "bollard_name": named,
            "copy_of": copy_of.name if copy_of is not None else None,
            "copy_of_id": copy_of.id if copy_of is not None else None,
        },
        pool=pool.name, file=f.file,
    )  # fmt: skip


def _drift(
    kind: DriftClass,
    v: Volume,
    *,
    record: str,
    host: str,
    detail: str = "",
    data: dict[str, object],
) -> Drift:
    return Drift(
        kind, v.node, v.vm_uuid or "", v.vm_name or "", record=record, host=host,
        detail=detail, data=dict(data), volume=v.name, pool=v.pool, file=v.file,
    )  # fmt: skip
