"""Expand and contract steps of the schema (store/migrate.py): servers of the previous release
run on a schema a newer one expanded, the contract steps wait for them to be gone, and a
server that joined while a contract ran leaves. "Old" is this release's scripts (head
0017…); "new" is a copy of them with two more steps: 0900 expands (a table added), 0901
contracts (it drops a column of `settings`' neighbour the old release reads: here, a table)."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from bollard.domain.errors import SchemaContractRefused, SchemaTooNew
from bollard.server.assembly import prepare
from bollard.server.cluster.membership import Membership
from bollard.server.config import ServerConfig
from bollard.store import migrate, servers, settings
from bollard.store.db import Database

OLD_HEAD = migrate.head_revision()

EXPAND = f'''
"""test: a table added"""
import sqlalchemy as sa
from alembic import op

revision = "0900"
down_revision = "{OLD_HEAD}"
branch_labels = None
depends_on = None
phase = "expand"


def upgrade() -> None:
    op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("probe")
'''

CONTRACT = '''
"""test: what the previous release used, removed"""
from alembic import op

revision = "0901"
down_revision = "0900"
branch_labels = None
depends_on = None
phase = "contract"
oldest_server = "0900"


def upgrade() -> None:
    op.drop_table("probe")


def downgrade() -> None:
    pass
'''


@pytest.fixture
def new_scripts(tmp_path: Path) -> Path:
    """The migrations of a next release: this one's and 0900 (expand), 0901 (contract)."""
    directory = tmp_path / "next-migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "versions" / "0900_expand.py").write_text(textwrap.dedent(EXPAND))
    (directory / "versions" / "0901_contract.py").write_text(textwrap.dedent(CONTRACT))
    return directory


@pytest.fixture
def db(empty_db_url: str) -> Any:
    database = Database(empty_db_url)
    yield database
    database.dispose()


def _old_server_lives(db: Database, name: str = "old-1") -> str:
    """The row of a live server of this (the old) release, as its membership writes it."""
    with db.write() as conn:
        record = servers.register(
            conn, id=f"id-{name}", name=name, url="http://127.0.0.1:1", version="0.1.0",
            protocols=[1], schema_revision=OLD_HEAD, pid=1, now=servers.db_now(conn), ttl=600,
        )  # fmt: skip
    return record.id


def test_a_new_database_takes_every_step_and_refuses_the_old_release(
    db: Database, new_scripts: Path
) -> None:
    state = migrate.upgrade(db, directory=new_scripts)
    assert (state.revision, state.expand, state.contract) == ("0901", [], [])
    assert state.oldest_server == "0900"
    with pytest.raises(SchemaTooNew, match="servers of schema 0900 or newer"):
        migrate.check_compatible(db)


def test_the_old_release_runs_on_the_expanded_schema_until_the_contract(
    db: Database, new_scripts: Path
) -> None:
    migrate.upgrade(db)  # the old release made it
    old = _old_server_lives(db)

    # The new release starts beside the old server: the expand step only.
    state = migrate.upgrade(db, directory=new_scripts)
    assert (state.revision, state.contract) == ("0900", ["0901"])
    assert "probe" in inspect(db.engine).get_table_names()
    assert migrate.check_compatible(db).known is False  # the old release: newer, and fine
    assert migrate.upgrade(db).revision == "0900"  # ... it migrates nothing, refuses nothing

    # The contract, asked for: refused while the old server lives, naming it.
    with pytest.raises(SchemaContractRefused, match=rf"old-1 \(schema {OLD_HEAD}\)"):
        migrate.upgrade(db, contract=True, directory=new_scripts)
    assert migrate.current_revision(db) == "0900"

    # The old server stops (upgraded): the next start applies the contract by itself.
    with db.write() as conn:
        servers.stop(conn, old, servers.db_now(conn))
    state = migrate.upgrade(db, directory=new_scripts)
    assert (state.revision, state.contract, state.oldest_server) == ("0901", [], "0900")
    assert "probe" not in inspect(db.engine).get_table_names()
    with pytest.raises(SchemaTooNew, match="upgrade this server"):
        migrate.check_compatible(db)


def test_no_contract_holds_the_step_back_and_status_says_so(
    db: Database, new_scripts: Path
) -> None:
    migrate.upgrade(db)
    state = migrate.upgrade(db, contract=False, directory=new_scripts)
    assert (state.revision, state.contract) == ("0900", ["0901"])
    seen = migrate.schema_state(db, new_scripts)
    assert (seen.revision, seen.head, seen.expand, seen.contract) == ("0900", "0901", [], ["0901"])
    # A server of an expired lease does not hold the contract back.
    _old_server_lives(db, "old-expired")
    with db.write() as conn:
        conn.execute(servers.servers.update().values(expires_at=datetime(2000, 1, 1, tzinfo=UTC)))
    assert migrate.upgrade(db, contract=True, directory=new_scripts).revision == "0901"


def test_a_server_that_joins_while_a_contract_runs_leaves(
    tmp_path: Path, empty_db_url: str, new_scripts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old release checked the schema (fine: 0900), then the contract ran before it
    joined: once joined it looks again, leaves, and refuses to start."""
    db = Database(empty_db_url)
    try:
        migrate.upgrade(db)
        migrate.upgrade(db, contract=False, directory=new_scripts)
    finally:
        db.dispose()
    joined: list[str] = []
    join = Membership.join_blocking

    def contract_then_join(self: Membership) -> Any:
        other = Database(empty_db_url)
        try:
            assert migrate.upgrade(other, contract=True, directory=new_scripts).revision == "0901"
        finally:
            other.dispose()
        joined.append(self.id)
        return join(self)

    monkeypatch.setattr(Membership, "join_blocking", contract_then_join)
    with pytest.raises(SchemaTooNew, match="0900 or newer"):
        prepare(ServerConfig(data_dir=tmp_path / "old", db_url=empty_db_url))
    db = Database(empty_db_url)
    try:
        with db.read() as conn:
            row = servers.get(conn, joined[0])
            assert row is not None and row.state.value == "stopped"
            assert settings.get(conn, migrate.OLDEST_SERVER_KEY) == "0900"
    finally:
        db.dispose()


def test_a_step_must_say_what_it_is(tmp_path: Path, new_scripts: Path, db: Database) -> None:
    path = new_scripts / "versions" / "0901_contract.py"
    path.write_text(path.read_text().replace('oldest_server = "0900"\n', ""))
    with pytest.raises(ValueError, match="0901: a contract step names oldest_server"):
        migrate.upgrade(db, directory=new_scripts)
