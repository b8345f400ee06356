"""The API server's own tasks (moves of VMs between cells, their confirms and reverts) and
migration records, answered beside the cells' in `/tasks` and `/migrations` (each with
`cell` null), and by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bollard.domain.errors import NotFound
from bollard.domain.states import TaskStatus
from bollard.server.api.record_schemas import MigrationOut
from bollard.server.api.schemas import TaskOut
from bollard.server.ports import TaskWaiter, UnitOfWork
from bollard.store import migrations_log, tasks

WAIT_MAX = 300.0


class ApiRecords:
    def __init__(self, *, work: UnitOfWork, waiter: TaskWaiter) -> None:
        self._work = work
        self._waiter = waiter

    def tasks_page(
        self, params: Sequence[tuple[str, str]], cursor: str | None, limit: int
    ) -> dict[str, Any]:
        given = dict(params)
        known = {s.value for s in TaskStatus}
        states = [TaskStatus(v) for k, v in params if k == "state" and v in known]
        if given.get("active") == "true":
            states = [s for s in (states or list(TaskStatus)) if not s.ended]
        with self._work.read() as conn:
            page = tasks.list_page(
                conn, limit=limit, cursor=cursor, newest_first=given.get("order") == "newest",
                states=states or None,
            )  # fmt: skip
        return {
            "items": [TaskOut.of(t).model_dump(mode="json") for t in page.items],
            "next_cursor": page.next_cursor,
            "total": page.total,
        }

    def migrations_page(
        self, params: Sequence[tuple[str, str]], cursor: str | None, limit: int
    ) -> dict[str, Any]:
        with self._work.read() as conn:
            page = migrations_log.list_page(conn, limit=limit, cursor=cursor)
        return {
            "items": [MigrationOut.of(m).model_dump(mode="json") for m in page.items],
            "next_cursor": page.next_cursor,
            "total": page.total,
        }

    async def task(self, task_id: str, *, wait: float | None = None) -> dict[str, Any] | None:
        """One of the API server's tasks (None: not one of its own); with `wait`, once it has
        ended or `wait` seconds have passed."""

        def read() -> Any:
            with self._work.read() as conn:
                try:
                    return tasks.get(conn, task_id, with_steps=True)
                except NotFound:
                    return None

        found = await self._work.run(read)
        if found is None:
            return None
        if wait is not None:
            found = await self._waiter.wait(task_id, min(max(wait, 0.0), WAIT_MAX))
        return {**TaskOut.of(found, with_steps=True).model_dump(mode="json"), "cell": None}

    async def of_vm(self, kind: str, vm: str, limit: int) -> list[dict[str, Any]]:
        """The API server's own tasks (kind "tasks") or migration records ("migrations") of
        VM `vm`, newest first, at most `limit`."""

        def read() -> list[dict[str, Any]]:
            with self._work.read() as conn:
                if kind == "tasks":
                    page = tasks.list_page(
                        conn, limit=limit, cursor=None, vm_name=vm, newest_first=True
                    )
                    return [TaskOut.of(t).model_dump(mode="json") for t in page.items]
                found = [m for m in migrations_log.of_name(conn, vm, limit)]
                return [MigrationOut.of(m).model_dump(mode="json") for m in found]

        return [{**item, "cell": None} for item in await self._work.run(read)]

    async def migration(self, migration_id: str) -> dict[str, Any] | None:
        def read() -> Any:
            with self._work.read() as conn:
                return migrations_log.find(conn, migration_id)

        found = await self._work.run(read)
        if found is None:
            return None
        return {**MigrationOut.of(found).model_dump(mode="json"), "cell": None}
