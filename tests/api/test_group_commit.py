"""Group commit (bollard.server.group_commit) on real databases: writes submitted together share
one transaction, yet each submitter sees its own outcome, only after the commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    select,
)

from bollard.server.group_commit import GroupCommit
from bollard.server.unit_of_work import DatabaseWork
from bollard.store.db import Database

meta = MetaData()
parents = Table("gc_parents", meta, Column("id", Integer, primary_key=True))
rows = Table(
    "gc_rows",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("value", String(40), nullable=False, unique=True),
    # Checked at COMMIT, not at the insert: a way to make the shared commit itself fail.
    Column(
        "parent",
        Integer,
        ForeignKey("gc_parents.id", deferrable=True, initially="DEFERRED"),
        nullable=True,
    ),
)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    meta.create_all(database.engine)
    yield database
    database.dispose()


def stored(db: Database) -> list[str]:
    with db.read() as conn:
        return [str(v) for v in conn.execute(select(rows.c.value).order_by(rows.c.id)).scalars()]


def add(value: str, parent: int | None = None) -> Callable[[Connection], str]:
    def write(conn: Connection) -> str:
        conn.execute(insert(rows).values(value=value, parent=parent))
        return f"stored {value}"

    return write


def failing(conn: Connection) -> Any:
    conn.execute(insert(rows).values(value="half-done"))
    raise ValueError("this write fails after a statement")


def group(db: Database, max_batch: int = 250) -> GroupCommit:
    return GroupCommit(DatabaseWork(db), max_batch=max_batch)


class _StalledWork(DatabaseWork):
    """A database whose blocking work waits for `release` before it runs."""

    def __init__(self, db: Database, release: asyncio.Event) -> None:
        super().__init__(db)
        self.release = release

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        await self.release.wait()  # a database that never answers
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_writes_submitted_together_share_one_commit_and_keep_their_order(db: Database) -> None:
    writes = group(db)
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))

    async def main() -> list[str]:
        return await asyncio.gather(*(writes.run(add(f"v{i:02d}")) for i in range(40)))

    results = asyncio.run(main())
    assert len(commits) == 1
    assert (writes.transactions, writes.writes) == (1, 40)
    assert results == [f"stored v{i:02d}" for i in range(40)]
    assert stored(db) == [f"v{i:02d}" for i in range(40)]


def test_writes_with_an_order_key_run_sorted_by_it_within_their_transaction(db: Database) -> None:
    """Heartbeats carry their node's name: every transaction locks node rows in name order
    (as the health monitor does), so two of them cannot deadlock on PostgreSQL."""
    writes = group(db)
    names = ["n07", "n02", "n11", "n01", "n05"]

    async def main() -> list[str]:
        return await asyncio.gather(*(writes.run(add(n), order=n) for n in names))

    results = asyncio.run(main())
    assert writes.transactions == 1
    assert results == [f"stored {n}" for n in names]  # each submitter gets its own result
    assert stored(db) == sorted(names)


def test_batches_are_bounded_and_later_writes_follow(db: Database) -> None:
    writes = group(db, max_batch=8)

    async def main() -> None:
        first = await asyncio.gather(*(writes.run(add(f"a{i:02d}")) for i in range(20)))
        assert len(first) == 20
        await writes.run(add("after"))

    asyncio.run(main())
    assert stored(db) == [f"a{i:02d}" for i in range(20)] + ["after"]
    assert writes.transactions == 3 + 1  # 8 + 8 + 4, then the lone one


def test_a_failing_write_is_rolled_back_alone(db: Database) -> None:
    writes = group(db)

    async def main() -> list[Any]:
        return await asyncio.gather(
            writes.run(add("before")),
            writes.run(failing),
            writes.run(add("dup")),
            writes.run(add("dup")),  # violates the unique constraint
            writes.run(add("after")),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert results[0] == "stored before" and results[2] == "stored dup"
    assert results[4] == "stored after"
    assert isinstance(results[1], ValueError)
    assert "unique" in str(results[3]).lower() or "duplicate" in str(results[3]).lower()
    assert stored(db) == ["before", "dup", "after"]  # no "half-done", one "dup"
    assert writes.transactions == 1


def test_a_lone_failing_write_stores_nothing(db: Database) -> None:
    writes = group(db)

    async def main() -> None:
        with pytest.raises(ValueError, match="fails after a statement"):
            await writes.run(failing)
        assert await writes.run(add("next")) == "stored next"

    asyncio.run(main())
    assert stored(db) == ["next"]


def test_when_the_shared_commit_fails_every_submitter_is_told(db: Database) -> None:
    writes = group(db)

    async def main() -> list[Any]:
        return await asyncio.gather(
            writes.run(add("fine")),
            writes.run(add("orphan", parent=999)),  # no such parent: COMMIT fails
            writes.run(add("also fine")),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert all(isinstance(r, Exception) for r in results), results
    assert len({id(r) for r in results}) == 1  # the commit's one failure, to each of them
    assert "foreign key" in str(results[0]).lower()
    assert stored(db) == []

    async def later() -> str:
        return await writes.run(add("later"))

    assert asyncio.run(later()) == "stored later"  # the group goes on afterwards
    assert stored(db) == ["later"]


def test_a_cancelled_drainer_leaves_nobody_waiting(db: Database) -> None:
    release = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writes = GroupCommit(_StalledWork(db, release))
        waiting = [loop.create_task(writes.run(add(f"w{i}"))) for i in range(3)]
        await asyncio.sleep(0)  # the submitters queue their writes
        await asyncio.sleep(0)  # the drainer takes them and waits for the database
        assert writes._drainer is not None
        writes._drainer.cancel()
        done, pending = await asyncio.wait(waiting, timeout=5)
        assert not pending
        assert all(t.cancelled() for t in done)

    asyncio.run(main())
    assert stored(db) == []


def test_its_own_thread_is_not_held_up_by_a_busy_shared_pool(db: Database) -> None:
    """With own_thread, the writes run even while every thread of the loop's shared pool is
    busy (as under a burst of API requests); they would wait for the pool otherwise."""
    held = threading.Event()

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        busy = [loop.run_in_executor(None, held.wait, 30) for _ in range(2)]
        writes = GroupCommit(DatabaseWork(db), own_thread=True)
        try:
            return await asyncio.wait_for(writes.run(add("beat")), timeout=10)
        finally:
            held.set()
            await asyncio.gather(*busy)
            await writes.close()

    assert asyncio.run(main()) == "stored beat"
    assert stored(db) == ["beat"]
