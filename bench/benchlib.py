"""Helpers shared by the benchmark scripts in ``bench/``.

The scripts are run as ``python bench/<name>.py``, which puts ``bench/`` on ``sys.path``, so
they ``import benchlib``. What is here: the error a step raises (``BenchError``), SIGTERM
handling (``Interrupted``, ``raise_on_sigterm``), progress on stderr (``make_log``), a free
loopback port, polling with a deadline (``wait_for``), summary statistics (``stats``), the
report's ``machine`` and ``versions`` sections, and writing the report (``write_report``).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
