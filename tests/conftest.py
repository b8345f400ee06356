"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, postgres_unavailable, sqlite_url
from tests.support.libvirt_env import (
    Guest,
    GuestBuildError,
    LibvirtHost,
    ensure_guest,
    libvirt_unavailable_reason,
    start_libvirt_hosts,
)


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


@pytest.fixture(scope="session")
def guest() -> Guest:
    """The tiny libvirt guest's kernel and initramfs (built once, then cached across runs);
    skipped with the reason where libvirt tests cannot run."""
    reason = libvirt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        return ensure_guest()
    except (GuestBuildError, OSError) as exc:
        pytest.skip(f"cannot build the tiny libvirt guest: {exc}")


@pytest.fixture(scope="session")
def libvirt_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LibvirtHost]]:
    """Two started libvirt hosts, "a" and "b", that can live-migrate to each other; skipped
    with the reason where libvirt tests cannot run."""
    reason = libvirt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with start_libvirt_hosts(tmp_path_factory.mktemp("libvirt"), count=2) as hosts:
        yield hosts
