"""The cluster a chaos run works on: real processes started by `bollard up --detach`, found
through ``<data-dir>/cluster.json``, SIGKILLed and restarted exactly as recorded there, and
always stopped by `bollard down` (plus a SIGKILL of any leftover) at the end.

Every wait polls with a deadline; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bollard.cli.client import CliError
from bollard.cli.cluster import ProcessRecord, is_running, read_cluster

T = TypeVar("T")

CLI_TIMEOUT = 60.0
UP_TIMEOUT = 90.0
GONE_TIMEOUT = 10.0
POLL = 0.1  # polling interval of the waits below (never a synchronisation)
PAGE = 1000  # the API's largest page


class ChaosError(Exception):
    """Something the harness needs did not happen (a process would not start or stop, the
    API never answered): the run cannot go on."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll_until(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Call ``probe`` until it returns something truthy; ChaosError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise ChaosError(f"timed out after {timeout:g}s waiting until {what} (last: {last!r})")
        time.sleep(POLL)


def clean_env(config_dir: Path) -> dict[str, str]:
    """The environment of every `bollard` child: no BOLLARD_* of the caller, and a private
    config dir so the CLI context never touches ~/.config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOLLARD_")}
    env.update(BOLLARD_CONFIG_DIR=str(config_dir), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


class Api:
    """A small REST client (one per thread: httpx clients are not shared across threads)."""

    def __init__(self, url: str, token: str, timeout: float = 15.0) -> None:
        self.url = url
        self.http = httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def list_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = dict(params, limit=PAGE)
            if cursor:
                query["cursor"] = cursor
            page = self.get(path, **query)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


@dataclass
class LocalCluster:
    """Server + N sim agents in ``root/data``, driven through the `bollard` CLI."""

    root: Path
    env: dict[str, str] = field(init=False)
    data_dir: Path = field(init=False)
    url: str = ""
    token: str = ""

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.env = clean_env(self.root / "config")

    @property
    def fabric_dir(self) -> Path:
        return self.data_dir / "fabric"

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bollard", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, nodes: int, sim_latency: float, heartbeat: float, *extra: str) -> None:
        port = free_port()
        started = self.cli(
            "up", "--detach", "--nodes", str(nodes), "--sim-latency", f"{sim_latency:g}",
            "--heartbeat", f"{heartbeat:g}", "--data-dir", str(self.data_dir),
            "--port", str(port), "--insecure-http", *extra,
            timeout=UP_TIMEOUT,
        )  # fmt: skip
        if started.returncode != 0:
            raise ChaosError(
                f"bollard up failed ({started.returncode}):\n{started.stdout}\n{started.stderr}\n"
                + self.log_tails()
            )
        self.url = f"http://127.0.0.1:{port}"
        self.token = (self.data_dir / "admin.token").read_text().strip()

    def api(self, timeout: float = 15.0) -> Api:
        return Api(self.url, self.token, timeout)

    def api_at(self, url: str, timeout: float = 15.0) -> Api:
        return Api(url, self.token, timeout)

    def live_urls(self) -> list[str]:
        """The addresses of the servers whose process runs (the one server's, here: a client
        that finds it down gets a transport error, as it should)."""
        return [self.url]

    def cut_during(self, url: str, since: float) -> bool:
        """Whether the server at ``url`` was cut from its database at some moment since
        ``since`` (monotonic): never here (the three-server cluster's cuts do that)."""
        return False

    # processes

    def processes(self) -> list[ProcessRecord]:
        record = read_cluster(self.data_dir)
        return record.processes if record else []

    def names(self) -> list[str]:
        return [p.name for p in self.processes()]

    def find(self, name: str) -> ProcessRecord:
        for proc in self.processes():
            if proc.name == name:
                return proc
        raise ChaosError(f"no process {name!r} in {self.data_dir}/cluster.json")

    def running(self, name: str) -> bool:
        proc = self.find(name)
        return is_running(proc.pid, proc.argv)

    def not_running(self) -> list[str]:
        return [p.name for p in self.processes() if not is_running(p.pid, p.argv)]

    def kill(self, name: str) -> int | None:
        """SIGKILL process ``name`` (its whole session) and wait until it is gone; returns
        its pid, or None if it was not running."""
        proc = self.find(name)
        if not is_running(proc.pid, proc.argv):
            return None
        _sigkill(proc)
        poll_until(
            f"{name} (pid {proc.pid}) is gone after SIGKILL",
            lambda: not is_running(proc.pid, proc.argv),
            GONE_TIMEOUT,
        )
        return proc.pid

    def restart(self, name: str) -> int:
        """`bollard up --restart-process NAME`: start it again exactly as recorded."""
        result = self.cli("up", "--restart-process", name, "--data-dir", str(self.data_dir))
        if result.returncode != 0:
            raise ChaosError(
                f"bollard up --restart-process {name} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return self.find(name).pid

    def wait_healthy(self, timeout: float) -> None:
        def healthy() -> bool:
            try:
                return httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        poll_until("the server answers /healthz", healthy, timeout)

    def down(self) -> str:
        """`bollard down`, then SIGKILL whatever cluster.json still lists as running.
        Returns a note of what went wrong ("" if nothing)."""
        notes = []
        try:
            result = self.cli("down", "--data-dir", str(self.data_dir), timeout=90)
            if result.returncode != 0:
                notes.append(f"bollard down exited {result.returncode}: {result.stderr.strip()}")
        except subprocess.TimeoutExpired:
            notes.append("bollard down did not finish within 90s")
        try:
            record = read_cluster(self.data_dir)
        except CliError as exc:
            notes.append(str(exc))
            record = None
        for proc in record.processes if record else []:
            if is_running(proc.pid, proc.argv):
                notes.append(f"{proc.name} (pid {proc.pid}) survived `bollard down`: SIGKILL")
                _sigkill(proc)
        return "; ".join(notes)

    # logs

    def log_files(self) -> Iterator[Path]:
        yield from sorted((self.data_dir / "logs").glob("*.log"))

    def log_tails(self, lines: int = 25) -> str:
        parts = []
        for log in self.log_files():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} (last {lines} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def log_problems(self, limit: int = 10) -> list[str]:
        """Tracebacks and ERROR/CRITICAL lines in the logs (a killed process leaves none
        of its own; these come from code that caught something it did not expect)."""
        found: list[str] = []
        for log in self.log_files():
            lines = log.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines, 1):
                if _PROBLEM.search(line) and not _EXPECTED.search(line):
                    context = " | ".join(lines[number - 1 : number + 2])[:400]
                    found.append(f"{log.name}:{number}: {context}")
        if len(found) > limit:
            return [*found[:limit], f"... and {len(found) - limit} more"]
        return found


_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")
# Lines the nemesis causes on purpose.
_EXPECTED = re.compile(r"injected fault")


def _sigkill(proc: ProcessRecord) -> None:
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)  # its session: anything it started too
        else:
            os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
