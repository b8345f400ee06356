"""The processes of a local cluster (`bollard up`): records, start, stop, restart.

``<data-dir>/cluster.json`` = ``{"url", "data_dir", "processes": [{"name", "pid", "argv",
"log"}]}`` is rewritten (atomically) after every process start, so ``bollard down`` can clean
up even after ``bollard up`` itself was killed. A process counts as running only if its pid
is alive, not a zombie, and (where /proc exists) still runs the recorded argv, so a recycled
pid is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bollard.cli.client import CliError

CLUSTER_FILE = "cluster.json"
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
# Environment variables a child never needs: the CLI's own credentials.
_SECRET_ENV = ("BOLLARD_TOKEN", "BOLLARD_TOKEN_FILE")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bollard" / "up"


@dataclass
class ProcessRecord:
    name: str
    pid: int
    argv: list[str]
    log: str


@dataclass
class ClusterRecord:
    url: str
    data_dir: str
    processes: list[ProcessRecord] = field(default_factory=list)

    def find(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def put(self, proc: ProcessRecord) -> None:
        """Add ``proc``, or replace the record of the same name where it stands."""
        if self.find(proc.name) is None:
            self.processes.append(proc)
        else:
            self.processes = [proc if p.name == proc.name else p for p in self.processes]


def cluster_file(data_dir: Path) -> Path:
    return data_dir / CLUSTER_FILE


def read_cluster(data_dir: Path) -> ClusterRecord | None:
    path = cluster_file(data_dir)
    try:
        data: Any = json.loads(path.read_text())
        return ClusterRecord(
            url=str(data["url"]),
            data_dir=str(data["data_dir"]),
            processes=[
                ProcessRecord(
                    name=str(p["name"]),
                    pid=int(p["pid"]),
                    argv=[str(a) for a in p["argv"]],
                    log=str(p["log"]),
                )
                for p in data["processes"]
            ],
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{path} is damaged ({exc}); remove it once nothing runs") from exc


def write_cluster(data_dir: Path, record: ClusterRecord) -> None:
    path = cluster_file(data_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)


def remove_cluster(data_dir: Path) -> None:
    cluster_file(data_dir).unlink(missing_ok=True)


def is_running(pid: int, argv: list[str] | None = None) -> bool:
    """True if ``pid`` is a live process (not a zombie) running ``argv`` (when checkable)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: the pid was recycled
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except FileNotFoundError:
        return False  # exited between the two checks
    except OSError:
        return True  # no /proc here: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    if argv is not None:
        running = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        return running == argv
    return True


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env(),
            close_fds=True,
        )


def _signal(proc: ProcessRecord, sig: signal.Signals) -> None:
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)  # its session: reaches anything it started too
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _alive(proc: ProcessRecord, children: dict[int, subprocess.Popen[bytes]]) -> bool:
    child = children.get(proc.pid)
    if child is not None:
        return child.poll() is None  # our own child: ask (and reap) it
    return is_running(proc.pid, proc.argv)


def _wait_gone(
    procs: list[ProcessRecord], children: dict[int, subprocess.Popen[bytes]], timeout: float
) -> list[ProcessRecord]:
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _alive(p, children)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a process table: there is no event to wait on
        left = [p for p in left if _alive(p, children)]
    return left


def stop_processes(
    procs: Iterable[ProcessRecord],
    *,
    timeout: float = STOP_TIMEOUT,
    children: dict[int, subprocess.Popen[bytes]] | None = None,
) -> tuple[list[str], list[str]]:
    """SIGTERM, wait up to ``timeout``, SIGKILL what is left.

    Returns (names that were running, names that needed SIGKILL).
    """
    kids = children or {}
    running = [p for p in procs if _alive(p, kids)]
    for proc in running:
        _signal(proc, signal.SIGTERM)
    stubborn = _wait_gone(running, kids, timeout)
    for proc in stubborn:
        _signal(proc, signal.SIGKILL)
    still = _wait_gone(stubborn, kids, KILL_TIMEOUT)
    if still:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in still)
        raise CliError(f"could not stop {names}, even with SIGKILL")
    return [p.name for p in running], [p.name for p in stubborn]


def running_processes(record: ClusterRecord) -> list[ProcessRecord]:
    return [p for p in record.processes if is_running(p.pid, p.argv)]


def restart_process(data_dir: Path, name: str, *, timeout: float = STOP_TIMEOUT) -> ProcessRecord:
    """Start process ``name`` again exactly as cluster.json records it (stopping it first if it
    still runs); same argv and log file; the new pid is written back to cluster.json."""
    record = read_cluster(data_dir)
    if record is None:
        raise CliError(f"no cluster.json in {data_dir}: no cluster was started there")
    proc = record.find(name)
    if proc is None:
        names = ", ".join(p.name for p in record.processes)
        raise CliError(f"no process {name!r} in {cluster_file(data_dir)} (it has: {names})")
    stop_processes([proc], timeout=timeout)
    child = spawn(proc.argv, Path(proc.log))
    new = ProcessRecord(name=proc.name, pid=child.pid, argv=proc.argv, log=proc.log)
    record.put(new)
    write_cluster(data_dir, record)
    return new


def log_tail(path: Path | str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"
