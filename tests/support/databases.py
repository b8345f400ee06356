"""Real databases for tests: a SQLite file, and a PostgreSQL database of its own per test
when a server answers on 127.0.0.1:5432 (BOLLARD_TEST_PG overrides the admin URL).

Bringing a new database to the newest schema runs every Alembic migration (a few tenths of a
second); the many tests that only need the schema as it is get a copy of a template that the
migrations built once per test session (``SchemaTemplates``): a file copy on SQLite, a
``CREATE DATABASE ... TEMPLATE`` on PostgreSQL."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "BOLLARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test?connect_timeout=3"
)


@cache
def postgres_unavailable() -> str | None:
    """None when PostgreSQL is reachable, else the reason to print with the skip."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {first}"
    return None


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.split('?', 1)[0].rsplit('/', 1)[0]}/{name}"


def _drop_postgres(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """Create a throw-away database (empty, or a copy of the database `template`) and yield
    its URL; drop it afterwards."""
    name = _create_postgres(template)
    try:
        yield _pg_url(name)
    finally:
        _drop_postgres(name)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'bollard.db'}"


def _migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema, and close every connection to it
    (a SQLite file is whole then: its WAL is checkpointed into it and removed)."""
    from bollard.store import migrate
    from bollard.store.db import Database

    db = Database(url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()


def _create_postgres(template: str | None = None) -> str:
    """Create a database (empty, or a copy of the database `template`); its name."""
    import psycopg
    from psycopg import sql

    name = f"bollard_test_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(create)
    return name


class SchemaTemplates:
    """Databases at the newest schema, copied from templates made on first use: a SQLite
    file under `directory`; a PostgreSQL database, whose copies a worker thread makes one
    ahead (while a test runs, the next one's is made) and drops after use, so that tests do
    not wait for either. ``close`` waits for the worker, drops what is left and raises what
    went wrong in it."""

    DEADLINE = 120.0  # seconds for one CREATE or DROP DATABASE, however loaded the machine

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-databases")
        self._spare: Future[str] | None = None  # the next test's copy
        self._drops: list[Future[None]] = []

    def sqlite(self, directory: Path) -> str:
        """A SQLite database at the newest schema in `directory` (as ``sqlite_url``)."""
        if self._sqlite is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            _migrate(sqlite_url(self._directory))
            self._sqlite = self._directory / "bollard.db"
            leftovers = [p.name for p in self._directory.glob("bollard.db-*")]
            assert not leftovers, f"the SQLite template is not one closed file: {leftovers}"
        target = directory / "bollard.db"
        shutil.copyfile(self._sqlite, target)
        target.chmod(0o600)
        return sqlite_url(directory)

    def _template(self) -> str:
        if self._postgres is None:
            name = _create_postgres()
            try:
                _migrate(_pg_url(name))
            except BaseException:
                _drop_postgres(name)
                raise
            self._postgres = name  # dropped by close()
        return self._postgres

    def _check_drops(self) -> None:
        """Raise the error of a drop that failed (the ones still running are kept)."""
        done = [f for f in self._drops if f.done()]
        self._drops = [f for f in self._drops if not f.done()]
        for drop in done:
            drop.result()

    @contextmanager
    def postgres(self) -> Iterator[str]:
        """A PostgreSQL database of its own at the newest schema; dropped afterwards."""
        template = self._template()
        self._check_drops()
        ready = self._spare or self._worker.submit(_create_postgres, template)
        self._spare = self._worker.submit(_create_postgres, template)
        name = ready.result(timeout=self.DEADLINE)
        try:
            yield _pg_url(name)
        finally:
            self._drops.append(self._worker.submit(_drop_postgres, name))

    def close(self) -> None:
        try:
            if self._spare is not None:
                spare, self._spare = self._spare, None
                self._drops.append(
                    self._worker.submit(_drop_postgres, spare.result(timeout=self.DEADLINE))
                )
            for drop in self._drops:
                drop.result(timeout=self.DEADLINE)
            self._drops = []
        finally:
            self._worker.shutdown(wait=True)
            if self._postgres is not None:
                _drop_postgres(self._postgres)
                self._postgres = None
