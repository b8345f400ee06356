"""The servers' rows (store/servers.py) on SQLite and PostgreSQL: register, renew (only while
up), stop, live and expired, a peer marking an expired server gone (not one that renewed),
the recent list and pruning; the database's clock; the node sessions each server holds
(store/nodes.py); and migration 0017 upgrading and downgrading with rows in place."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, text

from bollard.domain.errors import AlreadyExists
from bollard.domain.servers import ServerRecord, ServerState
from bollard.store import leases, migrate, nodes, relay, servers
from bollard.store.db import Database

NOW = datetime(2026, 12, 8, tzinfo=UTC)
TTL = 15.0


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def _register(db: Database, id: str, at: float = 0, name: str = "") -> ServerRecord:
    with db.write() as conn:
        return servers.register(
            conn,
            id=id,
            name=name or f"host-{id}:8443",
            url=f"https://{id}.example:8443",
            version="1.2.3",
            protocols=[1, 2],
            schema_revision="0017",
            pid=4242,
            now=_at(at),
            ttl=TTL,
        )


def _ids(records: list[ServerRecord]) -> list[str]:
    return [r.id for r in records]


def test_register_and_get(db: Database) -> None:
    record = _register(db, "s1", name="alpha:8443")
    assert record == ServerRecord(
        id="s1",
        name="alpha:8443",
        url="https://s1.example:8443",
        version="1.2.3",
        protocols=[1, 2],
        schema_revision="0017",
        pid=4242,
        started_at=NOW,
        renewed_at=NOW,
        expires_at=_at(TTL),
        stopped_at=None,
        state=ServerState.UP,
    )
    with db.read() as conn:
        assert servers.get(conn, "s1") == record
        assert servers.get(conn, "missing") is None
    with pytest.raises(AlreadyExists, match="server 's1' is already registered"):
        _register(db, "s1")


def test_renew_extends_the_lease_only_while_up(db: Database) -> None:
    _register(db, "s1")
    with db.write() as conn:
        assert servers.renew(conn, "s1", _at(5), TTL)
        record = servers.get(conn, "s1")
        assert record is not None
        assert (record.renewed_at, record.expires_at) == (_at(5), _at(5 + TTL))
        assert not servers.renew(conn, "missing", _at(5), TTL)
        servers.stop(conn, "s1", _at(6))
        assert not servers.renew(conn, "s1", _at(7), TTL)
        record = servers.get(conn, "s1")
    assert record is not None
    assert (record.state, record.stopped_at, record.expires_at) == (
        ServerState.STOPPED,
        _at(6),
        _at(5 + TTL),
    )


def test_live_and_expired(db: Database) -> None:
    _register(db, "s2", at=1)
    _register(db, "s1", at=0)
    _register(db, "s3", at=2)
    with db.write() as conn:
        servers.stop(conn, "s3", _at(3))
        assert _ids(servers.live(conn, _at(TTL))) == ["s1", "s2"]  # oldest first
        assert servers.expired(conn, _at(TTL)) == []
        assert servers.renew(conn, "s2", _at(10), TTL)
        assert _ids(servers.live(conn, _at(TTL + 0.5))) == ["s2"]
        assert _ids(servers.expired(conn, _at(TTL + 0.5))) == ["s1"]  # s3 stopped: not here


def test_mark_gone_takes_only_an_expired_server(db: Database) -> None:
    _register(db, "s1")
    _register(db, "s2")
    later = _at(TTL + 1)
    with db.write() as conn:
        assert not servers.mark_gone(conn, "s1", _at(TTL - 1))  # still live
        assert servers.renew(conn, "s2", _at(TTL - 1), TTL)  # renewed since it was read
        assert not servers.mark_gone(conn, "s2", later)
        assert servers.mark_gone(conn, "s1", later)
        assert not servers.mark_gone(conn, "s1", later)  # once
        gone = servers.get(conn, "s1")
        assert gone is not None and (gone.state, gone.stopped_at) == (ServerState.GONE, later)
        assert not servers.renew(conn, "s1", later, TTL)  # it must register anew
        servers.stop(conn, "s1", later)  # stays gone
        assert servers.get(conn, "s1") == gone
        assert _ids(servers.live(conn, later)) == ["s2"]


def test_recent_lists_live_and_lately_ended_servers(db: Database) -> None:
    for n, id in enumerate(("old-stop", "old-gone", "new-stop", "new-gone", "up", "expired")):
        _register(db, id, at=n)
    hour = 3600.0
    now = _at(2 * hour)
    with db.write() as conn:
        servers.stop(conn, "old-stop", _at(10))
        assert servers.mark_gone(conn, "old-gone", _at(20))
        servers.stop(conn, "new-stop", _at(hour + 10))
        assert servers.mark_gone(conn, "new-gone", _at(hour + 20))
        assert servers.renew(conn, "up", now, TTL)
        assert _ids(servers.recent(conn, now)) == ["new-stop", "new-gone", "up"]
        assert _ids(servers.recent(conn, now, keep=2 * hour)) == [
            "old-stop",
            "old-gone",
            "new-stop",
            "new-gone",
            "up",
        ]
        assert servers.prune(conn, _at(hour)) == 2
        assert servers.get(conn, "old-stop") is None and servers.get(conn, "old-gone") is None
        assert servers.prune(conn, now) == 2  # the up ones stay, expired or not
        assert sorted(_ids(servers.live(conn, now) + servers.expired(conn, now))) == [
            "expired",
            "up",
        ]


def test_db_now_is_utc_and_moves_within_a_transaction(db: Database) -> None:
    before = datetime.now(UTC)
    with db.read() as conn:
        first = servers.db_now(conn)
        second = servers.db_now(conn)
    assert first.utcoffset() == timedelta(0)
    assert first <= second
    assert first != second or db.is_sqlite  # clock_timestamp(), not the transaction's now()
    assert abs(first - before) < timedelta(minutes=1)  # the database runs on this machine


# --- node sessions ---------------------------------------------------------------------------


def _connect(db: Database, node: str, server_id: str | None, incarnation: str = "inc") -> None:
    with db.write() as conn:
        nodes.register_agent(
            conn,
            node,
            incarnation=incarnation,
            boot_id="boot",
            driver="sim",
            vcpus=4,
            memory_mb=4096,
            now=NOW,
            server_id=server_id,
        )


def test_node_sessions_record_their_server(db: Database) -> None:
    with db.write() as conn:
        for name in ("n1", "n2", "n3", "n4"):
            nodes.create(conn, name, f"hash-{name}", NOW)
    _connect(db, "n1", "s1")
    _connect(db, "n2", "s1")
    _connect(db, "n3", "s2", incarnation="inc3")
    with db.write() as conn:
        nodes.register_agent(  # an existing caller: no server named
            conn, "n4", incarnation="i", boot_id="b", driver="sim", vcpus=1, memory_mb=1, now=NOW
        )
        assert nodes.session_holders(conn) == {"n1": "s1", "n2": "s1", "n3": "s2"}
        nodes.mark_disconnected(conn, "n3", "other-incarnation", NOW)  # not its session
        assert nodes.session_holders(conn)["n3"] == "s2"
        nodes.mark_disconnected(conn, "n3", "inc3", NOW)
        assert nodes.session_holders(conn) == {"n1": "s1", "n2": "s1"}
        assert nodes.disconnect_server(conn, "s1", _at(1)) == ["n1", "n2"]
        assert nodes.disconnect_server(conn, "s1", _at(1)) == []
        assert nodes.session_holders(conn) == {}
        assert [n.name for n in nodes.list_all(conn) if n.connected] == ["n4"]
    _connect(db, "n1", "s2")
    with db.write() as conn:
        nodes.mark_all_disconnected(conn, _at(2))
        assert nodes.session_holders(conn) == {}
        assert (
            conn.execute(text("SELECT count(*) FROM nodes WHERE server_id IS NOT NULL")).scalar()
            == 0
        )


# --- migration 0017 ----------------------------------------------------------------------------


def test_migration_0017_upgrades_and_downgrades(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        cfg = migrate._config(db)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0016")
            values = {"no": False, "now": NOW, "later": _at(60)}
            for statement in (
                "INSERT INTO nodes (name, token_hash, health, scheduling, connected, vcpus,"
                " memory_mb, allocated_vcpus, allocated_memory_mb, last_seq, created_at,"
                " updated_at) VALUES ('node1', 'h', 'up', 'ready', :no, 8, 8192, 0, 0, 0,"
                " :now, :now)",
                "INSERT INTO tasks (id, type, state, params, cancel_requested, created_at,"
                " updated_at) VALUES ('t1', 'start', 'running', '{}', :no, :now, :now)",
                "INSERT INTO commands (id, node, type, args, epoch, task_id, state, attempts,"
                " created_at, updated_at) VALUES ('c1', 'node1', 'start', '{}', 1, 't1',"
                " 'sent', 0, :now, :now)",
                "INSERT INTO leases (name, holder, expires_at) VALUES ('health', 's-old', :later)",
            ):
                conn.execute(text(statement), values)
        assert not {"servers", "relay"} & set(inspect(db.engine).get_table_names())
        assert migrate.upgrade(db).revision == migrate.head_revision()
        with db.write() as conn:
            lease = leases.get(conn, "health")
            assert lease is not None
            assert (lease.holder, lease.token, lease.acquired_at) == ("s-old", 0, None)
            assert leases.take(conn, "health", "s-new", _at(61), TTL) == 1
            assert nodes.session_holders(conn) == {}
            relay.put(
                conn, to_server="s1", from_server="s2", node="node1", kind="k", body="b", now=NOW
            )
        _register(db, "s1")
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0016")
        assert migrate.current_revision(db) == "0016"
        assert not {"servers", "relay"} & set(inspect(db.engine).get_table_names())
        columns = {
            table: {c["name"] for c in inspect(db.engine).get_columns(table)}
            for table in ("nodes", "tasks", "leases")
        }
        assert "server_id" not in columns["nodes"] and "owner" not in columns["tasks"]
        assert not {"token", "acquired_at"} & columns["leases"]
        migrate.upgrade(db)
        with db.read() as conn:
            assert nodes.get(conn, "node1").name == "node1"
            assert conn.execute(text("SELECT count(*) FROM commands")).scalar() == 1
            lease = leases.get(conn, "health")
            assert lease is not None and (lease.holder, lease.token) == ("s-new", 0)
    finally:
        db.dispose()
