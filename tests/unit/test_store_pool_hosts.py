"""A host's report of a pool against the pool's removal (store/pools.record_host): the report
takes the pool's row before its host row, as a removal does, so the two never deadlock on
PostgreSQL, and a report of a pool removed meanwhile records nothing instead of failing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from bollard.domain.storage import PoolType
from bollard.store import nodes, pools
from bollard.store.db import Database
from tests.support.cluster import wait_until

NOW = datetime(2026, 12, 7, tzinfo=UTC)
DEADLINE = 30.0


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    with database.write() as conn:
        nodes.create(conn, "node1", "hash1", NOW)
        pools.create(
            conn, name="scratch", type=PoolType.SHARED, path="/srv/scratch", nodes=None,
            description=None, now=NOW,
        )  # fmt: skip
        pools.record_host(conn, "scratch", "node1", NOW, capacity_mb=10, free_mb=5, error=None)
    yield database
    database.dispose()


def _report(db: Database) -> None:
    with db.write() as conn:
        pools.record_host(conn, "scratch", "node1", NOW, capacity_mb=10, free_mb=4, error=None)


def _waiting_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()
    return bool(waiting)


def test_a_report_of_a_pool_removed_meanwhile_records_nothing(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: they cannot interleave")
    with db.engine.connect() as removal, removal.begin():
        pools.remove(removal, "scratch")
        with ThreadPoolExecutor(max_workers=1) as pool:
            report = pool.submit(_report, db)
            wait_until(lambda: _waiting_on_a_lock(db), "the report to wait", DEADLINE)
            removal.commit()
            report.result(timeout=DEADLINE)  # no foreign key violation, no deadlock
    with db.read() as conn:
        assert pools.find(conn, "scratch") is None
        assert conn.execute(text("SELECT count(*) FROM pool_hosts")).scalar() == 0


def test_a_removal_waits_for_a_report_under_way(db: Database) -> None:
    """The other order: a report holds the pool's row; the removal waits, then removes the
    pool with the report's row."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: they cannot interleave")

    def remove() -> None:
        with db.write() as conn:
            pools.remove(conn, "scratch")

    with db.engine.connect() as report, report.begin():
        pools.record_host(report, "scratch", "node1", NOW, capacity_mb=10, free_mb=3, error=None)
        with ThreadPoolExecutor(max_workers=1) as pool:
            removal = pool.submit(remove)
            wait_until(lambda: _waiting_on_a_lock(db), "the removal to wait", DEADLINE)
            report.commit()
            removal.result(timeout=DEADLINE)
    with db.read() as conn:
        assert pools.find(conn, "scratch") is None
        assert conn.execute(text("SELECT count(*) FROM pool_hosts")).scalar() == 0
