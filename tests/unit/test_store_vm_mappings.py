"""A VM's mapping to its cell written by two transactions at once (the API server's discovery
sweep and a cross-cell move's flip): the second waits for the first and then points the
mapping where it was told, instead of failing on the name's key (seen in CI: the move's flip
crashed and the whole move rolled back)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text

from bollard.store import cells
from bollard.store.db import Database
from bollard.store.tables import vm_mappings
from tests.support.cluster import wait_until

NOW = datetime(2026, 12, 7, tzinfo=UTC)
DEADLINE = 30.0


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def _waiting_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()
    return bool(waiting)


def _point(db: Database, cell: str) -> bool:
    with db.write() as conn:
        return cells.set_vm(conn, "s", cell, NOW, uuid="u-1")


def test_set_vm_while_another_transaction_maps_the_name(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: they cannot interleave")
    with db.engine.connect() as sweep, sweep.begin():
        # The sweep maps the VM to the cell it saw it in, not committed yet.
        sweep.execute(insert(vm_mappings).values(name="s", uuid="u-1", cell="cell1",
                                                 created_at=NOW, updated_at=NOW))  # fmt: skip
        with ThreadPoolExecutor(max_workers=1) as pool:
            flip = pool.submit(_point, db, "cell2")  # reads no mapping, then its insert waits
            wait_until(lambda: _waiting_on_a_lock(db), "the flip to wait", DEADLINE)
            sweep.commit()
            assert flip.result(timeout=DEADLINE) is True
    with db.read() as conn:
        mapping = cells.vm_cell(conn, "s")
    assert mapping is not None and (mapping.cell, mapping.uuid) == ("cell2", "u-1")


def test_map_if_unmapped_leaves_a_mapping_alone(db: Database) -> None:
    with db.write() as conn:
        assert cells.map_vm_if_unmapped(conn, "s", "cell1", NOW, uuid="u-1")
        assert not cells.map_vm_if_unmapped(conn, "s", "cell2", NOW, uuid="u-1")
        assert not cells.set_vm(conn, "s", "cell1", NOW, uuid="u-1")  # nothing to change
        assert cells.set_vm(conn, "s", "cell2", NOW, uuid=None)
        mapping = cells.vm_cell(conn, "s")
    assert mapping is not None and mapping.cell == "cell2"
