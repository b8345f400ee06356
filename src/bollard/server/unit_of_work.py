"""The database as server components use it: a read or write transaction, and blocking
database work run off the event loop (a `ports.UnitOfWork`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection

from bollard.store.db import Database

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseWork:
    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self) -> AbstractContextManager[Connection]:
        return self.db.read()

    def write(self) -> AbstractContextManager[Connection]:
        return self.db.write()

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking database work in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)
