"""Helpers shared by the benchmark scripts in ``bench/``.

The scripts are run as ``python bench/<name>.py``, which puts ``bench/`` on ``sys.path``, so
they ``import benchlib``. What is here: the error a step raises (``BenchError``), SIGTERM
handling (``Interrupted``, ``raise_on_sigterm``), progress on stderr (``make_log``), a free
loopback port, polling with a deadline (``wait_for``), summary statistics (``stats``), the
report's ``machine`` and ``versions`` sections, and writing the report (``write_report``);
a PostgreSQL database of a run's own (``pg_unreachable``, ``PgDatabase``), the machine's busy
CPU ticks (``busy_ticks``) and the lines a process adds to its log (``LogWatch``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import bollard

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root."""
RESULTS_DIR = ROOT / "bench" / "results"
"""Where each benchmark writes ``<name>.json`` by default."""

T = TypeVar("T")


class BenchError(Exception):
    """A benchmark step could not be completed (the message says which)."""


class Interrupted(BaseException):
    """SIGTERM: unwind (so that what was started is stopped) and exit."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def raise_on_sigterm() -> None:
    """Make SIGTERM raise ``Interrupted`` in the main thread."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def make_log(benchmark: str) -> Callable[[str], None]:
    """A ``log(message)`` that prints ``[<benchmark> HH:MM:SS] message`` to stderr."""

    def log(message: str) -> None:
        print(f"[{benchmark} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """This process's environment without the ``BOLLARD_*`` variables, for subprocesses."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float) -> T:
    """Poll ``probe`` every ``interval`` seconds until it returns something truthy, and
    return that; ``BenchError`` ("timed out ... waiting until <what>") at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(interval)  # polling interval, with a deadline


def stats(values: list[float], scale: float = 1.0, digits: int = 4) -> dict[str, float]:
    """``min``, ``median``, ``p90`` (nearest rank) and ``max`` of ``values`` (not empty),
    each multiplied by ``scale`` and rounded to ``digits``."""
    ordered = sorted(v * scale for v in values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "min": round(ordered[0], digits),
        "median": round(statistics.median(ordered), digits),
        "p90": round(p90, digits),
        "max": round(ordered[-1], digits),
    }


def percentile(values: list[float], q: float, scale: float = 1.0, digits: int = 2) -> float:
    """The ``q`` quantile (nearest rank, rounded down) of ``values`` (not empty), multiplied
    by ``scale`` and rounded to ``digits``."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * scale, digits)


def machine() -> dict[str, Any]:
    """The report's ``machine`` section: ``cpus``, ``memory_mb`` (None if /proc/meminfo
    cannot be read), ``platform`` and ``machine``."""
    memory_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_mb": memory_mb,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def git_commit() -> str | None:
    """``git describe --always --dirty`` of the repository, or None."""
    try:
        argv = ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def versions(**extra: str) -> dict[str, str | None]:
    """The report's ``versions`` section: ``bollard``, ``git``, ``python``, then ``extra``."""
    found: dict[str, str | None] = {
        "bollard": bollard.__version__,
        "git": git_commit(),
        "python": platform.python_version(),
    }
    found.update(extra)
    return found


def write_report(report: dict[str, Any], output: Path, log: Callable[[str], None]) -> None:
    """Print ``report`` as JSON to stdout and write it to ``output``."""
    text = json.dumps(report, indent=2)
    print(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    log(f"written to {output}")


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of process ``pid`` (from /proc); with ``children``, also those of its
    children, living (recursively) and ended (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if not children:
        return ticks / os.sysconf("SC_CLK_TCK")
    ticks += int(fields[13]) + int(fields[14])
    seconds = ticks / os.sysconf("SC_CLK_TCK")
    for child in child_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            seconds += process_cpu_seconds(child, children=True)
    return seconds


def child_pids(pid: int) -> list[int]:
    """The living children of process ``pid`` (from /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def process_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no VmRSS for process {pid}")


class ServerProcess:
    """``python -m bollard server`` in a subprocess, on a free loopback port, with its data
    dir (and SQLite database, unless ``db_url``) in ``data_dir``; its log in server.log.
    ``extra_args`` go on its command line after the others."""

    START_TIMEOUT, STOP_TIMEOUT, HTTP_TIMEOUT = 60.0, 20.0, 60.0

    def __init__(
        self,
        data_dir: Path,
        *,
        heartbeat: float,
        log: Callable[[str], None],
        db_url: str | None = None,
        fabric_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir, self.log = data_dir, log
        self.port, self.log_file = free_port(), data_dir / "server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "bollard", "server", "--data-dir", str(data_dir),
                "--listen", f"127.0.0.1:{self.port}", "--heartbeat-interval", f"{heartbeat:g}",
                "--log-level", "warning"]  # fmt: skip
        if fabric_dir is not None:
            argv += ["--sim-fabric-dir", str(fabric_dir)]
        argv += extra_args  # more `bollard server` options (e.g. --name, --lease-ttl)
        env = child_env()
        if db_url is not None:
            env["BOLLARD_DB"] = db_url  # not in argv: a URL may hold a password
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.client: Any = None
        self.token = ""

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        tail = self.log_file.read_text(errors="replace")[-2000:]
        raise BenchError(f"the server exited with status {self.proc.returncode}:\n{tail}")

    def healthy(self) -> bool:
        import httpx

        try:
            return self.alive() and httpx.get(self.url + "/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def connect(self) -> Any:
        """Wait until it answers; an ``httpx.Client`` on ``/api/v1`` with the admin token."""
        import httpx

        wait_for("the server answers /healthz", self.healthy, self.START_TIMEOUT, 0.1)
        self.token = (self.data_dir / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {self.token}"}
        self.client = httpx.Client(
            base_url=f"{self.url}/api/v1", timeout=self.HTTP_TIMEOUT, headers=auth
        )
        return self.client

    def cpu_seconds(self) -> float:
        """The server's CPU time with its children's (the state reconciler's scan worker)."""
        return process_cpu_seconds(self.proc.pid, children=True)

    def own_cpu_seconds(self) -> float:
        """The server process's own CPU time (its interpreter: heartbeats, the API)."""
        return process_cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        return process_rss_mb(self.proc.pid)

    def children_rss_mb(self) -> float:
        total = 0.0
        for child in child_pids(self.proc.pid):
            with contextlib.suppress(FileNotFoundError, BenchError):
                total += process_rss_mb(child)
        return round(total, 1)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        stop_process(self.proc, self.STOP_TIMEOUT, self.log, "the server")


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float, log: Callable[[str], None], what: str
) -> None:
    """SIGTERM, then SIGKILL once ``timeout`` seconds have passed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"killing {what} (pid {proc.pid})")
            proc.kill()
            proc.wait(timeout)


class FleetProcess:
    """``python -m bollard fleet ...`` in a subprocess against ``server``; its status file is
    read to follow it (``status()``, ``wait_phase``). The admin token goes by environment."""

    STOP_TIMEOUT = 60.0

    def __init__(self, server: ServerProcess, args: list[str], workdir: Path) -> None:
        self.server, self.log = server, server.log
        self.status_file, self.log_file = workdir / "fleet-status.json", workdir / "fleet.log"
        env = child_env()
        env["BOLLARD_TOKEN"] = server.token
        argv = [sys.executable, "-m", "bollard", "fleet", "--server", server.url,
                "--status-file", str(self.status_file), "-o", "json", *args]  # fmt: skip
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def status(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            found = {}
        if self.proc.poll() is not None and found.get("phase") != "stopped":
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise BenchError(f"the fleet exited with status {self.proc.returncode}:\n{tail}")
        return found

    def wait_phase(self, phase: str, timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            self.server.alive()
            status = self.status()
            return status if status.get("phase") == phase else None

        return wait_for(f"the fleet is {phase}", reached, timeout, 0.5)

    def stop(self) -> dict[str, Any]:
        """Stop it (SIGTERM); its final status."""
        stop_process(self.proc, self.STOP_TIMEOUT, self.log, "the fleet")
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}


def scrape(server: ServerProcess) -> str:
    """The server's /metrics text."""
    import httpx

    answer = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )
    answer.raise_for_status()
    return answer.text


def histogram(text: str, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` in a /metrics text, summed over its
    labels (only the samples with these ``labels``): ``{upper bound: count}``."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def histogram_top(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound of the highest bucket that received anything between two scrapes
    (the longest observation was at most this); None if nothing was observed."""
    top = None
    previous = 0.0
    for bound in sorted(after):
        count = after[bound] - before.get(bound, 0.0)
        if count > previous:
            top = bound
        previous = count
    return top


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The ``q`` quantile of what was observed between two scrapes, interpolated linearly
    within its bucket (as Prometheus' histogram_quantile does); None if nothing was."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def histogram_count(before: dict[float, float], after: dict[float, float]) -> float:
    return after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)


def base_parser(doc: str | None, output: Path) -> Any:
    """An ``argparse`` parser with the options every benchmark takes: ``--output FILE``
    (default ``output``) and ``--keep`` (keep the temporary directory)."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


@contextmanager
def scratch_dir(prefix: str, keep: bool, log: Callable[[str], None]) -> Iterator[Path]:
    """A temporary directory, removed at the end unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report_head(benchmark: str, measures: str, started: float) -> dict[str, Any]:
    """The keys every report starts with: what it is, when, and on what machine."""
    import sqlite3
    from datetime import UTC, datetime

    return {
        "benchmark": benchmark,
        "measures": measures,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "versions": versions(sqlite=sqlite3.sqlite_version),
    }


def run_main(main: Callable[[], int], log: Callable[[str], None]) -> None:
    """Exit with ``main()``'s status; 130 on Ctrl-C or SIGTERM (after unwinding, so that
    what the benchmark started is stopped)."""
    raise_on_sigterm()
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; what the benchmark started was stopped")
        sys.exit(130)


def pg_unreachable(url: str) -> str | None:
    """None if PostgreSQL answers at ``url``; else why not, in one line."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (OSError, psycopg.Error) as exc:
        return (f"{type(exc).__name__}: {exc}".strip().splitlines() or ["unknown"])[0]
    return None


class PgDatabase:
    """A database ``<prefix>_<random>`` made on the PostgreSQL server of ``admin_url``
    (``url`` reaches it); ``drop`` removes it, whoever is still connected."""

    def __init__(self, admin_url: str, prefix: str, log: Callable[[str], None]) -> None:
        import uuid

        import psycopg
        from psycopg import sql

        self.admin_url, self.log = admin_url, log
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.url = f"{admin_url.split('?', 1)[0].rsplit('/', 1)[0]}/{self.name}"
        log(f"created the database {self.name}")

    def backend_cpu_seconds(self) -> dict[int, float] | None:
        """CPU seconds of each PostgreSQL backend connected to it, by pid (from /proc);
        None when they cannot be read (PostgreSQL runs on another machine)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            pids = [int(row[0]) for row in conn.execute(query, (self.name,)).fetchall()]
        found: dict[int, float] = {}
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
                found[pid] = process_cpu_seconds(pid)
        return found if found or not pids else None

    def drop(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(query.format(sql.Identifier(self.name)))
        self.log(f"dropped the database {self.name}")


def busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot (/proc/stat); two readings give the
    busy cores between them: busy share x CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class LogWatch:
    """The lines a process appends to its log file from now on (``new_lines``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = f.read()
        text = text[: text.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(text)
        return text.decode(errors="replace").splitlines()
