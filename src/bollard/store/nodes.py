"""Queries on nodes. Resource claims are compare-and-swap updates, so no node is overcommitted
even with several servers placing VMs at once. Health and scheduling state change only
through transition(), checked against their whitelisted tables (domain/nodes.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, case, delete, func, insert, or_, select, update

from bollard.domain.errors import AlreadyExists, NotFound
from bollard.domain.models import Node, Page
from bollard.domain.nodes import health_allowed, scheduling_allowed
from bollard.domain.states import NodeHealth, SchedulingState
from bollard.store import pagination
from bollard.store.any_of import PerDialect, any_of
from bollard.store.db import utc
from bollard.store.tables import host_vms, nodes, vms

log = logging.getLogger(__name__)


def _node(row: Row[Any], vm_count: int = 0) -> Node:
    m = row._mapping
    return Node(
        name=m["name"],
        health=NodeHealth(m["health"]),
        scheduling=SchedulingState(m["scheduling"]),
        connected=bool(m["connected"]),
        vcpus=m["vcpus"],
        memory_mb=m["memory_mb"],
        allocated_vcpus=m["allocated_vcpus"],
        allocated_memory_mb=m["allocated_memory_mb"],
        driver=m["driver"],
        agent_incarnation=m["agent_incarnation"],
        boot_id=m["boot_id"],
        last_heartbeat=utc(m["last_heartbeat"]),
        last_seq=m["last_seq"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        vm_count=vm_count,
        load=m["load"],
        power_driver=m["power_driver"],
        power_address=m["power_address"],
        has_power_credentials=m["power_secret"] is not None,
        health_since=utc(m["health_since"]),
        report_host_time=m["report_host_time"],
        inventory_incarnation=m["inventory_incarnation"],
        migration_endpoint=dict(m["migration_endpoint"]) if m["migration_endpoint"] else None,
        maintenance=bool(m.get("maintenance", False)),
        shutdown_policy=m.get("shutdown_policy"),
        shutdown_kind=m.get("shutdown_kind"),
        shutdown_at=utc(m.get("shutdown_at")),
    )


def create(conn: Connection, name: str, token_hash: str, now: datetime) -> Node:
    if conn.execute(select(nodes.c.name).where(nodes.c.name == name)).first():
        raise AlreadyExists(f"node {name!r} already exists")
    conn.execute(
        insert(nodes).values(
            name=name,
            token_hash=token_hash,
            health=NodeHealth.SUSPECT.value,
            scheduling=SchedulingState.READY.value,
            connected=False,
            vcpus=0,
            memory_mb=0,
            allocated_vcpus=0,
            allocated_memory_mb=0,
            last_seq=0,
            created_at=now,
            updated_at=now,
        )
    )
    return get(conn, name)


def _vm_count(conn: Connection, name: str) -> int:
    return int(conn.execute(select(func.count()).where(vms.c.node == name)).scalar_one())


def get(conn: Connection, name: str) -> Node:
    row = conn.execute(select(nodes).where(nodes.c.name == name)).first()
    if row is None:
        raise NotFound(f"node {name!r} does not exist")
    return _node(row, _vm_count(conn, name))


def token_hash(conn: Connection, name: str) -> str | None:
    value = conn.execute(select(nodes.c.token_hash).where(nodes.c.name == name)).scalar()
    return None if value is None else str(value)


def list_all(conn: Connection) -> list[Node]:
    return [_node(r) for r in conn.execute(select(nodes).order_by(nodes.c.name)).all()]


def find_many(conn: Connection, names: set[str]) -> list[Node]:
    """The nodes with these names that exist (one query)."""
    if not names:
        return []
    return [_node(r) for r in conn.execute(select(nodes).where(nodes.c.name.in_(names))).all()]


# Every page of VMs reads this: three columns (not the ~30 of a Node), one statement whatever
# the number of names (store/any_of.py).
_HEARD = PerDialect(
    lambda dialect: select(nodes.c.name, nodes.c.last_heartbeat, nodes.c.report_host_time).where(
        any_of(nodes.c.name, "names", dialect)
    )
)


def last_heard(
    conn: Connection, names: set[str]
) -> dict[str, tuple[datetime | None, float | None]]:
    """Of each of these nodes that exists: when it last reported (server clock) and its host's
    clock at that report (`Node.last_heartbeat` and `Node.report_host_time`)."""
    if not names:
        return {}
    rows = conn.execute(_HEARD.of(conn), {"names": list(names)})
    return {name: (utc(beat), host_time) for name, beat, host_time in rows}


_COUNTS = select(
    func.count(), func.coalesce(func.sum(case((nodes.c.connected.is_(True), 1), else_=0)), 0)
).select_from(nodes)


def counts(conn: Connection) -> tuple[int, int]:
    """How many nodes there are, and how many of them are connected (no Node rows built:
    /api/v1/status asks at every call)."""
    total, connected = conn.execute(_COUNTS).one()
    return int(total), int(connected)


def names_with_health(conn: Connection, health: NodeHealth) -> list[str]:
    """The names of the nodes in this health (no Node rows built: this runs at every connect)."""
    query = select(nodes.c.name).where(nodes.c.health == health.value).order_by(nodes.c.name)
    return [str(name) for name in conn.execute(query).scalars()]


def health_candidates(conn: Connection, silent_since: datetime) -> list[Node]:
    """The nodes whose health may change now: every suspect one, every up one that is
    disconnected or has not beaten since `silent_since`, and every dead one still connected
    (it may beat again). The health monitor reads these at each tick instead of every node
    (2,500 rows turned into objects four times a heartbeat)."""
    query = select(nodes).where(
        or_(
            nodes.c.health == NodeHealth.SUSPECT.value,
            and_(nodes.c.health == NodeHealth.DEAD.value, nodes.c.connected.is_(True)),
            and_(
                nodes.c.health == NodeHealth.UP.value,
                or_(nodes.c.connected.is_(False), nodes.c.last_heartbeat < silent_since),
            ),
        )
    )
    return [_node(r) for r in conn.execute(query.order_by(nodes.c.name)).all()]


def list_page(conn: Connection, *, limit: int, cursor: str | None) -> Page:
    result = pagination.page(conn, nodes, nodes.c.name, _node, limit=limit, cursor=cursor)
    counts: dict[str, int] = dict(
        conn.execute(
            select(vms.c.node, func.count())
            .where(vms.c.node.in_([n.name for n in result.items]))
            .group_by(vms.c.node)
        ).all()
    )
    result.items[:] = [replace(n, vm_count=int(counts.get(n.name, 0))) for n in result.items]
    return result


def register_agent(
    conn: Connection,
    name: str,
    *,
    incarnation: str,
    boot_id: str,
    driver: str,
    vcpus: int,
    memory_mb: int,
    now: datetime,
    migration_endpoint: dict[str, Any] | None = None,
    server_id: str | None = None,
) -> None:
    """The agent's session is on: its hello's facts, and the server holding the session."""
    conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(
            migration_endpoint=migration_endpoint,
            connected=True,
            server_id=server_id,
            agent_incarnation=incarnation,
            boot_id=boot_id,
            driver=driver,
            vcpus=vcpus,
            memory_mb=memory_mb,
            last_heartbeat=now,
            updated_at=now,
        )
    )


def mark_disconnected(
    conn: Connection, name: str, incarnation: str, now: datetime, *, server_id: str | None = None
) -> None:
    """Only the session of the current incarnation may mark the node disconnected; given
    `server_id` (the server its session was recorded under), only while the record names that
    server or none: the same incarnation may have a session on another server since (its
    agent dialled another while this server could not reach the database)."""
    query = update(nodes).where(nodes.c.name == name, nodes.c.agent_incarnation == incarnation)
    if server_id is not None:
        query = query.where(or_(nodes.c.server_id.is_(None), nodes.c.server_id == server_id))
    conn.execute(query.values(connected=False, server_id=None, updated_at=now))


def mark_all_disconnected(conn: Connection, now: datetime) -> None:
    """At server start: no agent is connected yet, and every up node is suspect until it
    beats again."""
    conn.execute(update(nodes).values(connected=False, server_id=None))
    transition_all(conn, NodeHealth.UP, NodeHealth.SUSPECT, now)


def disconnect_unheld(conn: Connection, live: Collection[str], now: datetime) -> list[str]:
    """At a server's start beside others: the nodes marked connected (or held) by a server
    that is not live are disconnected, and those up become suspect until they beat again.
    Their names."""
    held = or_(nodes.c.connected.is_(True), nodes.c.server_id.is_not(None))
    unheld = or_(nodes.c.server_id.is_(None), nodes.c.server_id.not_in(sorted(live)))
    done = conn.execute(
        update(nodes)
        .where(held, unheld)
        .values(connected=False, server_id=None, updated_at=now)
        .returning(nodes.c.name)
    )
    names = sorted(str(name) for name in done.scalars())
    for name in names:
        set_health(conn, name, NodeHealth.SUSPECT, now, expect=NodeHealth.UP)
    return names


def reclaim_session(
    conn: Connection,
    name: str,
    incarnation: str,
    old: str | None,
    new: str | None,
    now: datetime,
) -> bool:
    """A server that joined again under a new id records, under it (`new`), a session it
    still holds, registered under `old`: only while the node's agent is that incarnation
    and its record names `old` or no server (ended by the leader's reaper), not another
    server. Whether it did."""
    done = conn.execute(
        update(nodes)
        .where(
            nodes.c.name == name,
            nodes.c.agent_incarnation == incarnation,
            or_(nodes.c.server_id.is_(None), nodes.c.server_id == old),
        )
        .values(connected=True, server_id=new, updated_at=now)
    )
    return done.rowcount == 1


def session_holders(conn: Connection) -> dict[str, str]:
    """Connected node -> the server holding its agent session."""
    query = select(nodes.c.name, nodes.c.server_id).where(
        nodes.c.connected.is_(True), nodes.c.server_id.is_not(None)
    )
    return {str(name): str(server) for name, server in conn.execute(query).all()}


def disconnect_server(conn: Connection, server_id: str, now: datetime) -> list[str]:
    """The sessions of a server that stopped or was found gone are over: its nodes are
    disconnected (their health follows as for any lost session). Their names."""
    done = conn.execute(
        update(nodes)
        .where(nodes.c.server_id == server_id)
        .values(connected=False, server_id=None, updated_at=now)
        .returning(nodes.c.name)
    )
    return sorted(str(name) for name in done.scalars())


def record_heartbeat(
    conn: Connection,
    name: str,
    seq: int,
    now: datetime,
    *,
    host_time: float | None = None,
    load: float | None = None,
) -> bool:
    """Store the heartbeat's time, sequence, host clock and load in one update; False when
    it is older than one already seen (nothing is stored then)."""
    result = conn.execute(
        update(nodes)
        .where(nodes.c.name == name, nodes.c.last_seq < seq)
        .values(last_seq=seq, last_heartbeat=now, report_host_time=host_time, load=load)
    )
    return result.rowcount == 1


def set_inventory_incarnation(conn: Connection, name: str, incarnation: str | None) -> None:
    conn.execute(
        update(nodes).where(nodes.c.name == name).values(inventory_incarnation=incarnation)
    )


def claim(
    conn: Connection,
    name: str,
    vcpus: int,
    memory_mb: int,
    *,
    vcpu_limit: Callable[[int], int] | None = None,
) -> bool:
    """Reserve resources on a node if they are still free (compare-and-swap). vCPUs may be
    handed out up to `vcpu_limit(the node's vCPUs)` (default: its vCPUs); memory never
    beyond the node's. False when another request took the room first."""
    capacity = conn.execute(select(nodes.c.vcpus).where(nodes.c.name == name)).scalar()
    if capacity is None:
        return False
    limit = int(capacity) if vcpu_limit is None else vcpu_limit(int(capacity))
    result = conn.execute(
        update(nodes)
        .where(
            nodes.c.name == name,
            nodes.c.vcpus == capacity,  # the limit was computed from this capacity
            nodes.c.allocated_vcpus + vcpus <= limit,
            nodes.c.allocated_memory_mb + memory_mb <= nodes.c.memory_mb,
        )
        .values(
            allocated_vcpus=nodes.c.allocated_vcpus + vcpus,
            allocated_memory_mb=nodes.c.allocated_memory_mb + memory_mb,
        )
    )
    return result.rowcount == 1


def release(conn: Connection, name: str, vcpus: int, memory_mb: int) -> None:
    conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(
            allocated_vcpus=_greatest(conn)(nodes.c.allocated_vcpus - vcpus, 0),
            allocated_memory_mb=_greatest(conn)(nodes.c.allocated_memory_mb - memory_mb, 0),
        )
    )


def adjust_allocation(conn: Connection, name: str, vcpus: int, memory_mb: int) -> None:
    """Change a node's allocation by what a VM really uses now (it may exceed the node's
    capacity: this records reality, it does not place anything)."""
    conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(
            allocated_vcpus=_greatest(conn)(nodes.c.allocated_vcpus + vcpus, 0),
            allocated_memory_mb=_greatest(conn)(nodes.c.allocated_memory_mb + memory_mb, 0),
        )
    )


def _greatest(conn: Connection) -> Any:
    """SQL's two-argument maximum: max() on SQLite, greatest() on PostgreSQL."""
    return func.max if conn.dialect.name == "sqlite" else func.greatest


def reset_sequence(conn: Connection, name: str) -> None:
    conn.execute(update(nodes).where(nodes.c.name == name).values(last_seq=0))


def transition(
    conn: Connection,
    name: str,
    now: datetime,
    *,
    health: NodeHealth | None = None,
    scheduling: SchedulingState | None = None,
    expect_health: NodeHealth | None = None,
    expect_scheduling: SchedulingState | None = None,
) -> bool:
    """Move a node's health and/or scheduling state (the ones given) if their tables allow
    it from the current states (and, with `expect_...`, only from those).

    Returns False (and logs) when a move is refused, and False when the node does not
    exist or is not in the state expected. The update is guarded by the states it read, so
    a concurrent change makes it return False instead of overwriting. A health change
    stamps `health_since`."""
    if health is None and scheduling is None:
        raise ValueError("a node transition needs a health or a scheduling state")
    row = conn.execute(
        select(nodes.c.health, nodes.c.scheduling).where(nodes.c.name == name)
    ).first()
    if row is None:
        return False  # (as a compare-and-swap on a missing row)
    current_health, current_scheduling = NodeHealth(row[0]), SchedulingState(row[1])
    if expect_health is not None and current_health is not expect_health:
        return False
    if expect_scheduling is not None and current_scheduling is not expect_scheduling:
        return False
    query = update(nodes).where(nodes.c.name == name)
    values: dict[str, Any] = {"updated_at": now}
    if health is not None:
        if not health_allowed(current_health, health):
            log.warning("node %s: refused health %s -> %s", name, current_health, health)
            return False
        query = query.where(nodes.c.health == current_health.value)
        values |= {"health": health.value, "health_since": now}
    if scheduling is not None:
        if not scheduling_allowed(current_scheduling, scheduling):
            log.warning(
                "node %s: refused scheduling %s -> %s", name, current_scheduling, scheduling
            )
            return False
        query = query.where(nodes.c.scheduling == current_scheduling.value)
        values["scheduling"] = scheduling.value
    return conn.execute(query.values(**values)).rowcount == 1


def transition_all(conn: Connection, src: NodeHealth, dst: NodeHealth, now: datetime) -> int:
    """Move every node whose health is `src` to `dst`, in one statement; how many moved.
    Refused (logged, nothing written) when the table does not allow the move."""
    if not health_allowed(src, dst):
        log.warning("nodes: refused health %s -> %s", src, dst)
        return 0
    result = conn.execute(
        update(nodes)
        .where(nodes.c.health == src.value)
        .values(health=dst.value, health_since=now, updated_at=now)
    )
    return int(result.rowcount)


def set_health(
    conn: Connection,
    name: str,
    health: NodeHealth,
    now: datetime,
    *,
    expect: NodeHealth | None = None,
) -> bool:
    """Change a node's health (compare-and-swap on `expect` when given); False when it is
    not in the health expected, or the move is not allowed (see transition())."""
    return transition(conn, name, now, health=health, expect_health=expect)


def set_scheduling(
    conn: Connection,
    name: str,
    state: SchedulingState,
    now: datetime,
    *,
    expect: SchedulingState | None = None,
) -> bool:
    """Change a node's scheduling state (compare-and-swap on `expect` when given); False
    when it is not in the state expected, or the move is not allowed (see transition())."""
    return transition(conn, name, now, scheduling=state, expect_scheduling=expect)


def set_power(
    conn: Connection,
    name: str,
    *,
    driver: str | None,
    address: str | None,
    secret: str | None,
    now: datetime,
) -> None:
    conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(power_driver=driver, power_address=address, power_secret=secret, updated_at=now)
    )


def power_secret(conn: Connection, name: str) -> str | None:
    value = conn.execute(select(nodes.c.power_secret).where(nodes.c.name == name)).scalar()
    return None if value is None else str(value)


def set_load(conn: Connection, name: str, load: float | None) -> None:
    conn.execute(update(nodes).where(nodes.c.name == name).values(load=load))


def set_token_hash(conn: Connection, name: str, token_hash: str, now: datetime) -> None:
    """Replace the node's agent token (by its hash): the old one is refused from now on."""
    result = conn.execute(
        update(nodes).where(nodes.c.name == name).values(token_hash=token_hash, updated_at=now)
    )
    if result.rowcount != 1:
        raise NotFound(f"node {name!r} does not exist")


def delete_node(conn: Connection, name: str) -> None:
    """Remove the node's row, and with it its agent token and what its host reported. The
    caller makes sure no VM is owned by it (the vms foreign key refuses otherwise); VMs that
    came from it forget it as their previous node."""
    conn.execute(delete(host_vms).where(host_vms.c.node == name))
    conn.execute(update(vms).where(vms.c.previous_node == name).values(previous_node=None))
    if conn.execute(delete(nodes).where(nodes.c.name == name)).rowcount != 1:
        raise NotFound(f"node {name!r} does not exist")


# --- HA policies (issue 21) ------------------------------------------------------------------


def set_maintenance(conn: Connection, name: str, on: bool, now: datetime) -> bool:
    """Per-node maintenance on or off; whether it changed."""
    done = conn.execute(
        update(nodes)
        .where(nodes.c.name == name, nodes.c.maintenance == (not on))
        .values(maintenance=on, updated_at=now)
    )
    return done.rowcount == 1


def set_shutdown_policy(conn: Connection, name: str, policy: str | None, now: datetime) -> None:
    """The node's shutdown policy (None: the setting ha.shutdown_policy)."""
    get(conn, name)
    conn.execute(
        update(nodes).where(nodes.c.name == name).values(shutdown_policy=policy, updated_at=now)
    )


def record_shutdown(conn: Connection, name: str, kind: str | None, now: datetime) -> None:
    """The clean shutdown (poweroff | reboot) its agent announced; None clears it (the agent
    is back)."""
    conn.execute(
        update(nodes)
        .where(nodes.c.name == name)
        .values(shutdown_kind=kind, shutdown_at=now if kind else None, updated_at=now)
    )


def in_maintenance(conn: Connection) -> list[str]:
    query = select(nodes.c.name).where(nodes.c.maintenance.is_(True)).order_by(nodes.c.name)
    return list(conn.execute(query).scalars())
