"""The state reconciler's worker process (reconcile/scan_worker.py, ProcessScanner): started
at the first scan, started again after it dies, killed when it overruns its deadline, ended
when the server closes it or dies, never given the database URL in its arguments; and the
reconciler's `Scanners` choosing where to scan (auto, process, thread), never losing a scan
to the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bollard.domain.states import DesiredPower
from bollard.server.clock import SystemClock
from bollard.server.reconcile.facts import ScanRequest
from bollard.server.reconcile.scanners import ProcessScanner, Scanners, ScanWorkerError
from bollard.store import migrate, nodes, vms
from bollard.store.db import Database
from tests.support.cluster import wait_until

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
REQUEST = ScanRequest(now=NOW, task_grace=timedelta(seconds=30))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'scan.db'}")
    migrate.upgrade(database)
    with database.write() as conn:
        nodes.create(conn, "n1", "hash", NOW)
        for i in range(4):
            vms.create(
                conn, uuid=f"00000000-0000-4000-8000-{i:012d}", name=f"vm{i}", node="n1",
                vcpus=1, memory_mb=256, desired_power=DesiredPower.STOPPED, task_id=f"t{i}",
                now=NOW,
            )  # fmt: skip
    yield database
    database.dispose()


def _gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_killed_worker_is_started_again_at_the_next_scan(db: Database) -> None:
    async def go() -> None:
        scanner = ProcessScanner(db.url, clock=SystemClock(), deadline=60)
        try:
            first = await scanner.scan(REQUEST)
            pid = scanner.pid
            assert pid is not None and pid != os.getpid()
            proc = scanner._proc
            assert proc is not None
            os.kill(pid, signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
            again = await scanner.scan(REQUEST)
            assert scanner.pid not in (None, pid)
            assert scanner.started == 2
            assert (again.vms, again.differences) == (first.vms, first.differences)
            # Each VM is held by a task that does not exist.
            assert [(d.kind.value, d.vm_name) for d in again.differences] == [
                ("pending", f"vm{i}") for i in range(4)
            ]
        finally:
            await scanner.close()

    asyncio.run(go())


def test_a_worker_past_its_deadline_is_killed(db: Database) -> None:
    async def go() -> None:
        # A deadline shorter than a start takes.
        scanner = ProcessScanner(db.url, clock=SystemClock(), deadline=0.001)
        with pytest.raises(ScanWorkerError, match=r"no answer within 0\.001 s; killed"):
            await scanner.scan(REQUEST)
        assert scanner.pid is None and scanner.started == 1

    asyncio.run(go())


def test_the_worker_ends_when_closed_and_never_sees_the_url_in_its_arguments(
    db: Database,
) -> None:
    async def go() -> None:
        scanner = ProcessScanner(db.url, clock=SystemClock(), deadline=60)
        await scanner.scan(REQUEST)
        pid = scanner.pid
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-m" in argv and b"bollard.server.reconcile.scan_worker" in argv
        assert not any(b"scan.db" in arg for arg in argv)
        proc = scanner._proc
        await scanner.close()
        assert proc is not None and proc.returncode == 0  # ended by itself, not killed
        assert scanner.pid is None

    asyncio.run(go())


def test_the_worker_dies_with_the_server(db: Database, tmp_path: Path) -> None:
    # A stand-in for the server: starts a worker, scans once, prints the worker's pid, and
    # waits; then it is SIGKILLed (no chance to close anything).
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from datetime import UTC, datetime, timedelta
            from bollard.server.clock import SystemClock
            from bollard.server.reconcile.facts import ScanRequest
            from bollard.server.reconcile.scanners import ProcessScanner

            async def main():
                scanner = ProcessScanner({db.url!r}, clock=SystemClock(), deadline=60)
                await scanner.scan(ScanRequest(datetime.now(UTC), timedelta(seconds=30)))
                print(scanner.pid, flush=True)
                await asyncio.to_thread(sys.stdin.read)

            asyncio.run(main())
            """
        )
    )
    server = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.strip().isdigit(), f"no worker pid from the stand-in server: {line!r}"
        worker = int(line)
        assert not _gone(worker)
        server.kill()
        server.wait(timeout=10)
        wait_until(lambda: _gone(worker), "the worker to die with its server", timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_auto_scans_in_the_thread_until_the_cluster_is_large(db: Database) -> None:
    async def go() -> list[str | None]:
        scanners = Scanners(db, "auto", clock=SystemClock(), process_from_vms=4)
        where = []
        try:
            for _ in range(2):
                result = await scanners.scan(REQUEST)
                assert result.vms == 4
                where.append(scanners.last_where)
        finally:
            await scanners.close()
        return where

    # The first scan sees 4 VMs (in the thread); from then on the worker scans.
    assert asyncio.run(go()) == ["thread", "process"]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_fixed_mode_scans_where_it_says(db: Database, mode: str) -> None:
    async def go() -> str | None:
        scanners = Scanners(db, mode, clock=SystemClock())  # type: ignore[arg-type]
        try:
            await scanners.scan(REQUEST)
            return scanners.last_where
        finally:
            await scanners.close()

    assert asyncio.run(go()) == mode


def test_a_scan_the_worker_cannot_answer_is_made_in_the_thread(db: Database) -> None:
    async def go() -> None:
        scanners = Scanners(db, "process", clock=SystemClock())
        scanners.process.deadline = 0.001  # the worker never answers in time
        try:
            result = await scanners.scan(REQUEST)
            assert (result.vms, scanners.last_where) == (4, "thread")
        finally:
            await scanners.close()

    asyncio.run(go())


def test_an_unknown_mode_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown scan mode 'fork'"):
        Scanners(db, "fork", clock=SystemClock())  # type: ignore[arg-type]
