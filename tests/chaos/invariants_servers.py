"""What must also hold after a three-server run (beside invariants.py's checks):

7. no node fenced twice for one death: a node's fence tasks never overlap in time (nor its
   recover tasks), and it has no more fence tasks than deaths (``node.dead`` events);
8. no VM recovered twice: a VM's HA restarts and relocations never overlap in time;
9. the leader's fencing tokens grow with each new leader (``cluster.leader`` events);
10. every server is up again, one of them leads, and every agent is connected again, its
    session on a server that is up;
11. the cluster-wide duties resumed within two lease periods of each loss of the leader: the
    time from its kill (or its cut from the database) to a ``GET /servers`` naming another.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.chaos.cluster import Api
from tests.chaos.invariants import Violation
from tests.chaos.leader_watch import Failover

FENCES = ("fence", "recover")  # a node's: one at a time
RECOVERIES = ("ha_restart", "ha_relocate")  # a VM's: one at a time
EVENT_PAGE = 1000
# The failover is measured between two looks at GET /servers, a poll interval apart, each
# taking a little time on a loaded machine: what it may add to the true time.
MEASURE_SLACK = 0.75


@dataclass
class ServersSnapshot:
    tasks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    servers: dict[str, Any]  # GET /servers
    nodes: list[dict[str, Any]]

    @classmethod
    def take(cls, api: Api) -> ServersSnapshot:
        return cls(
            tasks=api.list_all("/tasks"),
            events=read_events(api),
            servers=api.get("/servers"),
            nodes=api.list_all("/nodes"),
        )


def read_events(api: Api) -> list[dict[str, Any]]:
    """Every event, oldest first."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get("/events", after=after, limit=EVENT_PAGE)
        found.extend(page["items"])
        after = page["last_id"]
        if not page["more"]:
            return found


def _span(task: dict[str, Any], now: datetime) -> tuple[datetime, datetime]:
    end = task["finished_at"]
    return (
        datetime.fromisoformat(task["created_at"]),
        datetime.fromisoformat(end) if end else now,
    )


def _overlaps(
    tasks: list[dict[str, Any]], now: datetime
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of tasks whose lifetimes overlap (each with the one before it, by creation)."""
    ordered = sorted(tasks, key=lambda t: _span(t, now)[0])
    pairs = []
    for i, later in enumerate(ordered):
        start = _span(later, now)[0]
        pairs += [(earlier, later) for earlier in ordered[:i] if _span(earlier, now)[1] > start]
    return pairs


def _task_line(t: dict[str, Any]) -> str:
    return (
        f"{t['type']} {t['id']} ({t['state']}, server {t['server']}) "
        f"{t['created_at']} .. {t['finished_at']}"
    )


def check_one_fence_per_death(snap: ServersSnapshot, now: datetime) -> Violation:
    v = Violation("7. nodes fenced twice (overlapping fences, or more fences than deaths)")
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in snap.tasks:
        if t["type"] in FENCES and t["node"]:
            by_node[t["node"]].append(t)
    deaths: dict[str, int] = defaultdict(int)
    for e in snap.events:
        if e["kind"] == "node.dead" and e["node"]:
            deaths[e["node"]] += 1
    for node, tasks in sorted(by_node.items()):
        for earlier, later in _overlaps(tasks, now):
            v.offenders.append(f"{node}: {_task_line(earlier)} overlaps {_task_line(later)}")
        fences = [t for t in tasks if t["type"] == "fence"]
        if len(fences) > deaths[node]:
            v.offenders.append(
                f"{node}: {len(fences)} fence task(s) for {deaths[node]} death(s): "
                + "; ".join(_task_line(t) for t in fences)
            )
    return v


def check_one_recovery_at_a_time(snap: ServersSnapshot, now: datetime) -> Violation:
    v = Violation("8. VMs recovered twice at once (overlapping HA restarts or relocations)")
    by_vm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in snap.tasks:
        if t["type"] in RECOVERIES and t["vm_uuid"]:
            by_vm[t["vm_uuid"]].append(t)
    for uuid, tasks in sorted(by_vm.items()):
        for earlier, later in _overlaps(tasks, now):
            v.offenders.append(f"{later['vm']}: {_task_line(earlier)} overlaps {_task_line(later)}")
            v.vm_uuids.add(uuid)
    return v


def check_leader_tokens(snap: ServersSnapshot) -> Violation:
    v = Violation("9. leader fencing tokens that did not grow")
    last: tuple[int, dict[str, Any]] | None = None
    for e in snap.events:
        if e["kind"] != "cluster.leader":
            continue
        token = int(e["data"].get("token", 0))
        if last is not None and token <= last[0]:
            v.offenders.append(
                f"event {e['id']} at {e['at']}: server {e['data'].get('server')} token {token}"
                f" after server {last[1]['data'].get('server')} token {last[0]} (event "
                f"{last[1]['id']})"
            )
        last = (token, e)
    return v


def check_servers_and_agents(snap: ServersSnapshot, servers: int) -> Violation:
    v = Violation("10. servers not up, no leader, or agents not connected to a live server")
    up = {s["id"]: s for s in snap.servers["items"] if s["state"] == "up"}
    if len(up) != servers:
        v.offenders.append(
            f"{len(up)} server(s) up, not {servers}: "
            + ", ".join(f"{s['name']} {s['state']}" for s in snap.servers["items"])
        )
    if snap.servers["leader"] not in up:
        v.offenders.append(f"no leader among the servers up (leader: {snap.servers['leader']})")
    away = [n["name"] for n in snap.nodes if not n["connected"]]
    if away:
        v.offenders.append(f"agents not connected: {away}")
    held = sum(s["agents"] for s in up.values())
    if held != len(snap.nodes):
        v.offenders.append(
            f"the servers up hold {held} agent session(s) for {len(snap.nodes)} node(s): "
            + ", ".join(f"{s['name']} {s['state']} agents={s['agents']}" for s in up.values())
        )
    stale = [s for s in snap.servers["items"] if s["state"] != "up" and s["agents"]]
    for s in stale:
        v.offenders.append(f"{s['name']} ({s['id']}) is {s['state']} yet holds {s['agents']}")
    return v


def check_failovers(failovers: list[Failover], lease_ttl: float, t0: float) -> Violation:
    bound = 2 * lease_ttl
    v = Violation(
        f"11. leader losses not followed by another leader within two lease periods "
        f"({bound:g}s, +{MEASURE_SLACK:g}s for the measure)"
    )
    for f in failovers:
        if f.seconds is None or f.seconds > bound + MEASURE_SLACK:
            v.offenders.append(f.describe(t0))
    return v


def servers_violations(
    snap: ServersSnapshot,
    *,
    servers: int,
    failovers: list[Failover],
    lease_ttl: float,
    t0: float,
) -> list[Violation]:
    now = datetime.now(UTC)
    found = [
        check_one_fence_per_death(snap, now),
        check_one_recovery_at_a_time(snap, now),
        check_leader_tokens(snap),
        check_servers_and_agents(snap, servers),
        check_failovers(failovers, lease_ttl, t0),
    ]
    return [v for v in found if v.offenders]
