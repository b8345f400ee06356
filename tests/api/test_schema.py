"""The Alembic migrations build exactly the schema the code's table definitions describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bollard.store import migrate
from bollard.store.db import Database
from bollard.store.tables import metadata


def test_migrations_match_the_table_definitions(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.upgrade(db) == migrate.head_revision()
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        db.dispose()


def test_upgrade_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    try:
        first = migrate.upgrade(db)
        assert migrate.upgrade(db) == first
        assert migrate.current_revision(db) == first
    finally:
        db.dispose()
