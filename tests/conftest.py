"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import (
    SchemaTemplates,
    postgres_database,
    postgres_unavailable,
    sqlite_url,
)
from tests.support.libvirt_env import (
    Guest,
    GuestBuildError,
    LibvirtHost,
    ensure_guest,
    libvirt_unavailable_reason,
    start_libvirt_hosts,
)

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def schema_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaTemplates]:
    templates = SchemaTemplates(tmp_path_factory.mktemp("schema-template"))
    yield templates
    templates.close()


@pytest.fixture(params=DATABASES)
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, schema_templates: SchemaTemplates
) -> Iterator[str]:
    """A real database of the test's own, already at the newest schema (a copy of one the
    migrations built once; the server's start-up upgrade finds nothing to do): SQLite
    always, PostgreSQL when one is reachable. Tests of the migrations take ``empty_db_url``."""
    if request.param == "sqlite":
        yield schema_templates.sqlite(tmp_path)
        return
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with schema_templates.postgres() as url:
        yield url


@pytest.fixture(params=DATABASES)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real, empty database (no schema): SQLite always, PostgreSQL when one is reachable."""
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
