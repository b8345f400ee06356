"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, postgres_unavailable, sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real, empty database: SQLite always, PostgreSQL when one is reachable."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_database() as url:
        yield url
