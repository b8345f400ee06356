"""A state-reconciliation scan: read the facts (VM records, the hosts' inventories, the tasks
VMs point at, the SR-IOV VFs held or used) in one read transaction and classify them
(bollard.domain.drift, bollard.domain.sriov_drift).

This is the O(cluster) part of a pass and needs nothing of the running server but its
database and three values, carried by a `ScanRequest`; so it runs alike in a worker thread of
the server and in a worker process of its own (scanners.py, scan_worker.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from bollard.domain.drift import (
    Drift,
    Facts,
    HostView,
    NodeView,
    ResizeView,
    TaskView,
    VmView,
    classify,
)
from bollard.domain.models import Task
from bollard.domain.sriov_drift import classify_vfs
from bollard.store import (
    events,
    host_vms,
    migrations_log,
    nodes,
    servers,
    sriov_reconcile,
    tasks,
    vms,
)
from bollard.store.db import Database


@dataclass(frozen=True)
class ScanRequest:
    now: datetime  # the server's clock at the start of the scan
    task_grace: timedelta  # a task nobody drives is pending once still this long
    driven: frozenset[str] = field(default_factory=frozenset)  # tasks this server runs
    # This server's id: a task owned by another live server is driven there (several
    # servers; one whose server is gone is taken over by the task takeover).
    server: str | None = None


@dataclass
class ScanResult:
    differences: list[Drift]
    vms: int
    nodes: int


def scan(db: Database, request: ScanRequest) -> ScanResult:
    """Read and classify (blocking; in a worker thread or the worker process)."""
    with db.read() as conn:
        facts = gather(conn, request)
    return ScanResult(classify(facts) + classify_vfs(facts), len(facts.vms), len(facts.nodes))


def gather(conn: Connection, request: ScanRequest) -> Facts:
    # The read order matters where each statement sees the latest commits (PostgreSQL's
    # READ COMMITTED): the hosts' side first, the VM records after it, so a record is
    # never older than the reports it is judged against (a newer record is caught by
    # the "reported after the record changed" rule).
    node_list = nodes.list_all(conn)
    known = [n.name for n in node_list if n.inventory_known]
    hosts: dict[str, dict[str, HostView]] = {name: {} for name in known}
    for node, entry in host_vms.views(conn, known):
        hosts[node][entry.uuid] = entry
    vfs = sriov_reconcile.vf_views(conn)  # the hosts' side too: their users as reported
    open_tasks = tasks.unfinished(conn, include_rolling_back=True)
    all_vms = vms.views(conn)
    held_ids = [v.task_id for v in all_vms if v.task_id]
    held = {t.id: t for t in tasks.get_many(conn, held_ids)}
    in_db = {v.uuid for v in all_vms}
    on_hosts = {u for entries in hosts.values() for u in entries}
    on_vfs = {u for vf in vfs for u in (vf.used_by, vf.host_used_by) if u is not None}
    unknown = sorted((on_hosts | on_vfs) - in_db)
    deleted = events.latest_at(conn, "vm.deleted", unknown)
    all_vms = confirm_held(conn, all_vms, held)
    resizes = {
        m.vm_uuid: ResizeView(
            m.id, m.vm_uuid, m.vm_name, m.source, m.dest, m.status.value, m.updated_at
        )
        for m in migrations_log.open_resizes(conn)
    }
    views = {
        n.name: NodeView(n.name, n.health, n.inventory_known, n.last_heartbeat) for n in node_list
    }
    live = {s.id for s in servers.live(conn, servers.db_now(conn))} - {request.server}
    task_views = {
        t.id: TaskView(
            t.id, t.type, t.state, t.updated_at, _driven(t, request, live), t.vm_uuid, t.vm_name
        )
        for t in [*held.values(), *open_tasks]
    }
    return Facts(
        all_vms, hosts, views, task_views, deleted, request.now, request.task_grace, resizes,
        vfs,
    )  # fmt: skip


def _driven(task: Task, request: ScanRequest, live: set[str]) -> bool:
    return task.id in request.driven or (task.owner is not None and task.owner in live)


def confirm_held(conn: Connection, all_vms: list[VmView], held: dict[str, Task]) -> list[VmView]:
    """A VM read as held by a task that has ended (or is missing) is read again, after
    its task, so a task that ended and released its VM between the two reads is not
    taken for a leftover: a task read as ended means its release is visible too."""
    suspects = [
        v for v in all_vms if v.task_id and (v.task_id not in held or held[v.task_id].state.ended)
    ]
    if not suspects:
        return all_vms
    for task in tasks.get_many(conn, [v.task_id for v in suspects if v.task_id]):
        held[task.id] = task
    reread = {v.uuid for v in suspects}
    fresh = vms.find_many(conn, list(reread))
    confirmed: list[VmView] = []
    for vm in all_vms:
        if vm.uuid not in reread:
            confirmed.append(vm)
        elif (again := fresh.get(vm.uuid)) is not None:  # None: deleted meanwhile
            confirmed.append(VmView.of(again))
    return confirmed
