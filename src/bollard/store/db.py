"""Database engines: SQLite (embedded default, WAL) and PostgreSQL (psycopg 3).

`Database.write()` opens a write transaction. On SQLite it begins with BEGIN IMMEDIATE, so a
transaction that reads then writes never fails half-way on a lock upgrade, and writers of one
process queue on a lock instead of spinning in SQLite's busy handler.

On PostgreSQL a session whose client was cut off in the middle of a transaction keeps that
transaction, and its row locks, until TCP gives up or the cut heals (late statements still
arrive then). `bound_idle_in_transaction` (one transaction) has PostgreSQL end such a
session after so long idle inside the transaction; a transaction that runs a statement is not
idle, however long the statement takes, so only a client that stopped talking between
statements is hit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from bollard.durable import private_file

# SQLite connections kept open between transactions (more are opened when more threads use
# the database at once, and closed when they are done).
SQLITE_POOL = 10


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'bollard.db').resolve()}"


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use psycopg 3 for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact_url(url: str) -> str:
    """The URL without its password, for logs and API output."""
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time Bollard stores is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def raw_rows(conn: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of a parameterless SELECT as the driver returns them, without SQLAlchemy's
    per-row processing (a third of the cost of reading 100,000 rows). Values are the
    driver's own: a timestamp is a string on SQLite (see `raw_utc`), a bool an int."""
    sql = str(query.compile(dialect=conn.dialect))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    finally:
        cursor.close()
    return rows


def raw_utc(value: str | datetime) -> datetime:
    """A timestamp read by `raw_rows`: SQLite's text (stored as UTC) or the driver's own."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def bound_idle_in_transaction(conn: Connection, seconds: float) -> None:
    """Have PostgreSQL end this session should it sit idle inside the current transaction
    for `seconds` (its client cut off mid-transaction), for this transaction only: its locks
    go with it. One more round trip; nothing on SQLite (one process: no such client)."""
    if conn.dialect.name == "sqlite":
        return
    conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {_ms(seconds)}")


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError(f"an idle-in-transaction bound must be positive, not {seconds}")
    return max(1, round(seconds * 1000))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, emit BEGIN (see the "begin" hook below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("bollard_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalise_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:" and not database.startswith("file:"):
                # SQLite gives the WAL and shared-memory files the database file's mode.
                private_file(Path(database))
            self.engine: Engine = create_engine(
                self.url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 15},
                # Connections are kept (a new one costs its open and pragmas: about half of
                # a small transaction); one per worker thread is what is ever in use.
                **(
                    {"poolclass": QueuePool, "pool_size": SQLITE_POOL, "max_overflow": -1}
                    if ":memory:" not in self.url
                    else {}
                ),
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(
                self.url,
                echo=echo,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def kind(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with (
            self._write_lock,
            self.engine.connect().execution_options(bollard_write=True) as conn,
            conn.begin(),
        ):
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
