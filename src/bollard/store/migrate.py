"""Schema management, only through Alembic migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bollard.domain.errors import SchemaTooNew
from bollard.store.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_not_newer(db: Database) -> None:
    """Refuse a schema written by a newer Bollard: a revision our scripts do not know."""
    current = current_revision(db)
    if current is None:
        return
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaTooNew(
            f"the database schema is at revision {current}, which this Bollard does not know "
            f"(newest known: {head_revision()}); upgrade Bollard or use another database"
        )


def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision; returns it. A schema already there is left
    as it is without running Alembic's environment (every server start)."""
    check_not_newer(db)
    head = head_revision()
    if current_revision(db) == head:
        return head
    cfg = _config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head_revision()
