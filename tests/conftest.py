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

# `make test` runs pytest twice: `-m "not serial"` on pytest-xdist workers, then `-m serial`
# one test at a time. Serial: every test outside these directories (e2e, libvirt, ui, chaos,
# and any new one), and every test in them that uses the machine-wide real daemons (libvirt
# hosts and guests, a browser). Tests here must own each resource (tmp_path, free ports, their
# own databases), so that two of them can run at once.
TESTS = Path(__file__).parent
PARALLEL_DIRS = [TESTS / "unit", TESTS / "api", TESTS / "contract"]
SERIAL_MARKERS = ("e2e", "libvirt", "ui")
SERIAL_FIXTURES = {"libvirt_hosts", "guest"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "serial: runs alone in make test's second pytest pass (set by tests/conftest.py)",
    )


def _runs_serially(item: pytest.Item) -> bool:
    if not any(item.path.is_relative_to(d) for d in PARALLEL_DIRS):
        return True
    if any(item.get_closest_marker(m) is not None for m in SERIAL_MARKERS):
        return True
    return not SERIAL_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `serial` what must not run beside another test (before -m selects by marker)."""
    for item in items:
        if _runs_serially(item):
            item.add_marker(pytest.mark.serial)


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
