"""Where the state reconciler's scans run (facts.py does the work).

A scan reads every VM and host entry and classifies them: about a second of Python at
100,000 VMs. Run in a thread of the server, it holds the one interpreter that heartbeats and
the API need meanwhile, and they wait for it (at 2,500 hosts this was the whole of the
heartbeats' p99, see docs/performance.md). Run in a worker process, it has an interpreter
(and a core) of its own and the server only waits for its answer.

- `ThreadScanner`: in a worker thread of the server.
- `ProcessScanner`: in the worker process of scan_worker.py, started at the first scan and
  again after it died; raises `ScanWorkerError` when the worker gives no answer.
- `Scanners`: what the reconciler uses, by the server's ``reconcile_scan`` mode: ``thread``;
  ``process`` (the thread when the worker fails, so a pass is never lost to it); ``auto``
  (the default): the thread while the cluster is small, the process once a scan has seen
  `PROCESS_FROM_VMS` VMs or more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from typing import Literal, Protocol

from bollard.server.clock import Clock
from bollard.server.config import SCAN_MODES, ScanMode
from bollard.server.reconcile import facts
from bollard.server.reconcile.facts import ScanRequest, ScanResult
from bollard.server.reconcile.scan_worker import HEADER, encode_frame
from bollard.store.db import Database

log = logging.getLogger(__name__)


SCAN_DEADLINE = 300.0  # seconds a scan may take in the worker before the worker is killed
STOP_TIMEOUT = 5.0  # seconds the worker has to end once its input is closed
PROCESS_FROM_VMS = 5_000  # `auto`: scans of this many VMs or more run in the worker process
_UNPICKLE_INLINE = 256 * 1024  # answers larger than this are unpickled off the event loop


class ScanWorkerError(RuntimeError):
    """The worker process gave no answer (it could not start, died, or overran its
    deadline), or its scan failed."""


class Scanner(Protocol):
    async def scan(self, request: ScanRequest) -> ScanResult: ...

    async def close(self) -> None: ...


class ThreadScanner:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def scan(self, request: ScanRequest) -> ScanResult:
        return await asyncio.to_thread(facts.scan, self.db, request)

    async def close(self) -> None:
        return None


class ProcessScanner:
    def __init__(self, db_url: str, *, clock: Clock, deadline: float = SCAN_DEADLINE) -> None:
        self.db_url = db_url
        self.clock = clock
        self.deadline = deadline
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.started = 0  # workers started so far

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def scan(self, request: ScanRequest) -> ScanResult:
        async with self._lock:
            proc = await self._worker()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                data = await self.clock.wait_for(self._exchange(proc, request), self.deadline)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                code = await self._kill()
                raise ScanWorkerError(f"the scan worker ended (exit status {code})") from exc
            except TimeoutError as exc:
                await self._kill()
                raise ScanWorkerError(
                    f"the scan worker gave no answer within {self.deadline:g} s; killed"
                ) from exc
            except BaseException:  # cancelled mid-exchange: the next answer would be stale
                await self._kill()
                raise
        if len(data) > _UNPICKLE_INLINE:
            answer = await asyncio.to_thread(pickle.loads, data)
        else:
            answer = pickle.loads(data)  # our own worker's answer
        status, value = answer
        if status != "ok":
            raise ScanWorkerError(f"the scan failed in the worker: {value}")
        assert isinstance(value, ScanResult)
        return value

    @staticmethod
    async def _exchange(proc: asyncio.subprocess.Process, request: ScanRequest) -> bytes:
        """Send a request to the worker and read its answer's frame."""
        assert proc.stdin is not None and proc.stdout is not None
        _send(proc, request)
        await proc.stdin.drain()
        (size,) = HEADER.unpack(await proc.stdout.readexactly(HEADER.size))
        return await proc.stdout.readexactly(size)

    async def close(self) -> None:
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await self.clock.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("scan worker %d did not end in %g s; killed", proc.pid, STOP_TIMEOUT)
                await _kill(self.clock, proc)

    async def _worker(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bollard.server.reconcile.scan_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ScanWorkerError(f"cannot start the scan worker: {exc}") from exc
        _send(proc, {"db_url": self.db_url, "parent": os.getpid()})
        self._proc = proc
        self.started += 1
        log.info("scan worker started (pid %d)", proc.pid)
        return proc

    async def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        return await _kill(self.clock, proc)


def _send(proc: asyncio.subprocess.Process, value: object) -> None:
    assert proc.stdin is not None
    proc.stdin.write(encode_frame(value))


async def _kill(clock: Clock, proc: asyncio.subprocess.Process) -> int | None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    try:
        return await clock.wait_for(proc.wait(), STOP_TIMEOUT)
    except TimeoutError:
        log.error("scan worker %d still there %g s after SIGKILL", proc.pid, STOP_TIMEOUT)
        return None


class Scanners:
    """The reconciler's scanner, chosen per scan by the mode (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        mode: ScanMode = "auto",
        *,
        clock: Clock,
        process_from_vms: int = PROCESS_FROM_VMS,
    ) -> None:
        if mode not in SCAN_MODES:
            raise ValueError(f"unknown scan mode {mode!r}; one of {', '.join(SCAN_MODES)}")
        self.mode = mode
        self.process_from_vms = process_from_vms
        self.thread = ThreadScanner(db)
        self.process = ProcessScanner(db.url, clock=clock)
        self.last_vms = 0
        self.last_where: Literal["process", "thread"] | None = None

    def _wants_process(self) -> bool:
        if self.mode == "auto":
            return self.last_vms >= self.process_from_vms
        return self.mode == "process"

    async def scan(self, request: ScanRequest) -> ScanResult:
        result: ScanResult | None = None
        if self._wants_process():
            try:
                result = await self.process.scan(request)
                self.last_where = "process"
            except ScanWorkerError as exc:
                log.warning("state scan: %s; scanning in the server's thread instead", exc)
        if result is None:
            result = await self.thread.scan(request)
            self.last_where = "thread"
        self.last_vms = result.vms
        return result

    async def close(self) -> None:
        await self.process.close()
