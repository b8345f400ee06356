"""GET /api/v1/servers and the `servers` counts of /api/v1/status, against a real server and
two sim agents: peer servers are rows written through the store (as their processes would
register them), the leader lease is taken with `leases.take`, and each agent's session is
put on a peer. Asserts only about those rows, so it holds whether or not the answering
server registers itself too. The listing's rules (roles, the expired lease, which server
answered) also as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, update

from bollard import __version__
from bollard.domain.ids import new_id
from bollard.domain.servers import Lease, ServerRecord, ServerState
from bollard.server.api.servers import LEADER_LEASE, server_counts, server_list
from bollard.store import leases, servers
from bollard.store.tables import nodes
from tests.support.cluster import AgentThread, ServerThread, wait_until

TTL = 60.0


def _register(conn: Connection, name: str, since: float, now: datetime, ttl: float = TTL) -> str:
    """A peer's row, registered `since` seconds before `now` with a lease of `ttl`."""
    server_id = new_id()
    servers.register(
        conn, id=server_id, name=name, url=f"https://{name}", version=__version__,
        protocols=[1], schema_revision="0017", pid=4242,
        now=now - timedelta(seconds=since), ttl=ttl,
    )  # fmt: skip
    return server_id


def _lead(conn: Connection, holder: str, now: datetime) -> None:
    """`holder` takes the leader lease (from whoever holds it: the server itself, once it
    runs for leader)."""
    if leases.take(conn, LEADER_LEASE, holder, now, TTL) is not None:
        return
    current = leases.get(conn, LEADER_LEASE)
    assert current is not None
    leases.give_up(conn, LEADER_LEASE, current.holder, current.token)
    assert leases.take(conn, LEADER_LEASE, holder, now, TTL) is not None


def _mine(answer: dict[str, Any], ids: dict[str, str]) -> list[dict[str, Any]]:
    """The listed items that are the peers written here, in the listing's order."""
    return [i for i in answer["items"] if i["id"] in ids.values()]


def test_lists_peers_with_role_state_and_agents(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, _ = cluster
    before = server.client.get("/status").json()["servers"]
    with server.runtime.db.write() as conn:
        now = servers.db_now(conn)
        ids = {
            "a": _register(conn, "a:8443", 300, now, ttl=400),
            "b": _register(conn, "b:8443", 100, now, ttl=200),
            "stopped": _register(conn, "stopped:8443", 900, now),
            "gone": _register(conn, "gone:8443", 800, now, ttl=10),
            "expired": _register(conn, "expired:8443", 500, now, ttl=10),
            "old": _register(conn, "old:8443", 9000, now),
        }
        servers.stop(conn, ids["stopped"], now - timedelta(seconds=60))
        assert servers.mark_gone(conn, ids["gone"], now - timedelta(seconds=30))
        servers.stop(conn, ids["old"], now - timedelta(seconds=7200))
        _lead(conn, ids["a"], now)
        for node, holder in (("node1", ids["a"]), ("node2", ids["a"])):
            conn.execute(update(nodes).where(nodes.c.name == node).values(server_id=holder))

    answer = server.client.get("/servers")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["leader"] == ids["a"]
    listed = _mine(body, ids)
    # Live ones by start time, then the others, the last heard of first; "old" stopped 2 h ago.
    assert [i["name"] for i in listed] == [
        "a:8443", "b:8443", "gone:8443", "stopped:8443", "expired:8443",
    ]  # fmt: skip
    shown = {i["name"]: (i["role"], i["state"], i["agents"], i["this"]) for i in listed}
    assert shown == {
        "a:8443": ("leader", "up", 2, False),
        "b:8443": ("member", "up", 0, False),
        "gone:8443": ("-", "gone", 0, False),
        "stopped:8443": ("-", "stopped", 0, False),
        "expired:8443": ("-", "expired", 0, False),
    }
    a = listed[0]
    assert a["url"] == "https://a:8443" and a["version"] == __version__
    assert a["stopped_at"] is None and listed[3]["stopped_at"] is not None
    assert datetime.fromisoformat(a["expires_at"]) > datetime.fromisoformat(a["renewed_at"])

    after = server.client.get("/status").json()["servers"]
    assert after["total"] == before["total"] + 5
    assert after["up"] == before["up"] + 2
    assert after["leader"] == "a:8443"


def test_agents_are_counted_on_the_server_holding_their_session(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, _ = cluster
    with server.runtime.db.write() as conn:
        now = servers.db_now(conn)
        ids = {"a": _register(conn, "a:8443", 10, now), "b": _register(conn, "b:8443", 5, now)}
        for node, holder in (("node1", ids["a"]), ("node2", ids["b"])):
            conn.execute(update(nodes).where(nodes.c.name == node).values(server_id=holder))
    agents = {i["name"]: i["agents"] for i in _mine(server.client.get("/servers").json(), ids)}
    assert agents == {"a:8443": 1, "b:8443": 1}
    with server.runtime.db.write() as conn:  # node2's agent is not connected: not counted
        conn.execute(update(nodes).where(nodes.c.name == "node2").values(connected=False))
    agents = {i["name"]: i["agents"] for i in _mine(server.client.get("/servers").json(), ids)}
    assert agents == {"a:8443": 1, "b:8443": 0}


def test_the_answering_server_registers_leads_and_holds_its_agents(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, agents = cluster
    me = server.runtime.membership.id

    def listed() -> dict[str, Any] | None:
        body = server.client.get("/servers").json()
        return body if body["leader"] == me else None

    body = wait_until(listed, "the server to take the leader's lease")
    [item] = [i for i in body["items"] if i["id"] == me]
    port = server.config.port
    assert item["this"] is True and item["role"] == "leader" and item["state"] == "up"
    assert item["url"] == f"http://127.0.0.1:{port}" and item["name"].endswith(f":{port}")
    assert item["agents"] == len(agents)  # both sessions are on it
    status = server.client.get("/status").json()["servers"]
    assert status["up"] >= 1 and status["leader"] == item["name"]


# -- the listing's rules, as a pure function -----------------------------------------------

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _row(server_id: str, started: float, expires: float, state: ServerState) -> ServerRecord:
    return ServerRecord(
        id=server_id, name=f"{server_id}:8443", url=f"https://{server_id}:8443",
        version=__version__, protocols=[1], schema_revision="0017", pid=1,
        started_at=NOW - timedelta(seconds=started),
        renewed_at=NOW + timedelta(seconds=expires - TTL),
        expires_at=NOW + timedelta(seconds=expires),
        stopped_at=None if state is ServerState.UP else NOW - timedelta(seconds=5),
        state=state,
    )  # fmt: skip


def _lease(holder: str, expires: float) -> Lease:
    return Lease(name=LEADER_LEASE, holder=holder, token=3,
                 expires_at=NOW + timedelta(seconds=expires), acquired_at=NOW)  # fmt: skip


ROWS = [
    _row("s2", 50, 30, ServerState.UP),
    _row("s1", 100, 30, ServerState.UP),
    _row("s3", 200, 30, ServerState.STOPPED),
]


def test_the_answering_server_is_marked_this() -> None:
    listing = server_list(ROWS, _lease("s2", 10), {"n1": "s1", "n2": "s1", "n3": "s2"}, NOW, "s2")
    assert [(i.id, i.role, i.agents, i.this) for i in listing.items] == [
        ("s1", "member", 2, False),
        ("s2", "leader", 1, True),
        ("s3", "-", 0, False),
    ]
    counts = server_counts(listing)
    assert (counts.total, counts.up, counts.leader) == (3, 2, "s2:8443")


def test_no_leader_while_the_lease_has_run_out() -> None:
    for lease in (_lease("s1", -1), None):
        listing = server_list(ROWS, lease, {}, NOW, None)
        assert listing.leader is None
        assert [i.role for i in listing.items] == ["member", "member", "-"]
        assert server_counts(listing).leader is None


def test_a_leader_without_a_listed_row_is_named_by_its_id() -> None:
    listing = server_list(ROWS, _lease("s9", 10), {}, NOW, None)
    assert listing.leader == "s9"
    assert server_counts(listing).leader == "s9"
    assert "leader" not in [i.role for i in listing.items]
