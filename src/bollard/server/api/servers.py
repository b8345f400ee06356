"""/api/v1/servers: the management servers sharing the database, each with its role (the
leader holds the `leader` lease) and the agents whose sessions it holds; and the counts
/api/v1/status shows of them.

Liveness is judged on the database's clock (`servers.db_now`), as the servers' leases are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from fastapi import APIRouter
from sqlalchemy import Connection

from bollard.domain.servers import Lease, ServerRecord, ServerState
from bollard.server.api.deps import ServicesDep
from bollard.server.api.server_schemas import ServerCounts, ServerList, ServerOut, Shown
from bollard.store import leases, nodes, servers

router = APIRouter(tags=["status"])

LEADER_LEASE = "leader"
KEEP = 3600.0  # seconds a server that stopped or died stays listed
_SHOWN: dict[ServerState, Shown] = {
    ServerState.UP: "up",
    ServerState.STOPPED: "stopped",
    ServerState.GONE: "gone",
}


@router.get("/servers", response_model=ServerList)
async def list_servers(s: ServicesDep) -> ServerList:
    """The servers that are up (by start time), then those that stopped, were found gone or
    whose lease ran out in the last hour; which one leads; how many connected agents each
    holds; and which one answered."""
    this = s.server_id()

    def tx() -> ServerList:
        with s.work.read() as conn:
            return read_servers(conn, this)

    return await s.work.run(tx)


def read_servers(conn: Connection, this: str | None, *, agents: bool = True) -> ServerList:
    """The listing of `GET /servers`, read in the caller's transaction (`agents` False: each
    server's count of agents is 0, not read: `server_counts` does not use it)."""
    now = servers.db_now(conn)
    rows = servers.recent(conn, now, KEEP)
    shown = {r.id for r in rows}
    # Dead without a peer to mark them gone yet: shown as "expired" for as long as the others.
    since = now - timedelta(seconds=KEEP)
    rows += [r for r in servers.expired(conn, now) if r.id not in shown and r.renewed_at >= since]
    holders = nodes.session_holders(conn) if agents else {}
    return server_list(rows, leases.get(conn, LEADER_LEASE), holders, now, this)


def server_list(
    rows: Sequence[ServerRecord],
    lease: Lease | None,
    holders: Mapping[str, str],
    now: datetime,
    this: str | None,
) -> ServerList:
    """The servers as listed: live ones first (by start time), then the others (the most
    recently heard of first). `holders`: connected node -> the server holding its session."""
    leader = lease.holder if lease is not None and lease.expires_at >= now else None
    agents = Counter(holders.values())
    items = [_out(r, leader, agents[r.id], now, this) for r in rows]
    live = sorted((i for i in items if i.role != "-"), key=lambda i: i.started_at)
    others = sorted((i for i in items if i.role == "-"), key=_last_heard, reverse=True)
    return ServerList(items=[*live, *others], leader=leader)


def server_counts(listing: ServerList) -> ServerCounts:
    """The `servers` part of /api/v1/status."""
    leader = next((i.name for i in listing.items if i.id == listing.leader), listing.leader)
    return ServerCounts(
        total=len(listing.items),
        up=sum(i.role != "-" for i in listing.items),
        leader=leader,
    )


def _out(
    row: ServerRecord, leader: str | None, agents: int, now: datetime, this: str | None
) -> ServerOut:
    live = row.state is ServerState.UP and row.expires_at >= now
    state: Shown = "expired" if row.state is ServerState.UP and not live else _SHOWN[row.state]
    return ServerOut(
        id=row.id,
        name=row.name,
        url=row.url,
        version=row.version,
        schema_revision=row.schema_revision,
        protocols=row.protocols,
        state=state,
        started_at=row.started_at,
        renewed_at=row.renewed_at,
        expires_at=row.expires_at,
        stopped_at=row.stopped_at,
        role=("leader" if row.id == leader else "member") if live else "-",
        agents=agents,
        this=row.id == this,
    )


def _last_heard(item: ServerOut) -> datetime:
    return item.stopped_at or item.renewed_at
