"""Process bookkeeping of `bollard up` / `bollard down` with real (tiny) processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bollard.cli.client import CliError
from bollard.cli.cluster import (
    ClusterRecord,
    ProcessRecord,
    cluster_file,
    is_running,
    read_cluster,
    restart_process,
    spawn,
    stop_processes,
    write_cluster,
)
from bollard.cli.context import Context, context_path, load_context, save_context
from bollard.cli.main import app
from bollard.cli.up_cmd import bollard_command

SLEEPER = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(120)",
]


def wait_for_line(log: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}"
        time.sleep(0.02)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def start(
    started: list[subprocess.Popen[bytes]], tmp_path: Path, name: str, argv: list[str]
) -> ProcessRecord:
    log = tmp_path / "logs" / f"{name}.log"
    child = spawn(argv, log)
    started.append(child)
    wait_for_line(log, "ready")
    return ProcessRecord(name=name, pid=child.pid, argv=argv, log=str(log))


def test_is_running_checks_liveness_zombies_and_argv(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rec = start(started, tmp_path, "a", SLEEPER)
    assert is_running(rec.pid, rec.argv)
    assert not is_running(rec.pid, [*rec.argv, "other"])  # a recycled pid runs something else
    started[0].kill()
    # Exited but not reaped: a zombie counts as not running.
    os.waitid(os.P_PID, rec.pid, os.WEXITED | os.WNOWAIT)
    assert not is_running(rec.pid, rec.argv)
    started[0].wait()
    assert not is_running(rec.pid)


def test_stop_processes_uses_sigterm_first(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rec = start(started, tmp_path, "gentle", SLEEPER)
    ran, killed = stop_processes([rec], timeout=10, children={rec.pid: started[0]})
    assert (ran, killed) == (["gentle"], [])
    assert started[0].returncode == -15


def test_stop_processes_kills_what_ignores_sigterm(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rec = start(started, tmp_path, "stubborn", STUBBORN)
    ran, killed = stop_processes([rec], timeout=0.3, children={rec.pid: started[0]})
    assert (ran, killed) == (["stubborn"], ["stubborn"])
    assert started[0].returncode == -9


def test_restart_process_reuses_argv_and_log_and_records_the_pid(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rec = start(started, tmp_path, "node2", SLEEPER)
    write_cluster(tmp_path, ClusterRecord(url="http://x", data_dir=str(tmp_path), processes=[rec]))
    started[0].kill()
    started[0].wait()
    new = restart_process(tmp_path, "node2")
    try:
        assert new.pid != rec.pid
        assert (new.argv, new.log) == (rec.argv, rec.log)
        assert is_running(new.pid, new.argv)
        stored = read_cluster(tmp_path)
        assert stored is not None and stored.processes == [new]
        deadline = time.monotonic() + 10
        while Path(rec.log).read_text().count("ready") < 2:  # appended to the same log
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop_processes([new], timeout=10)
    with pytest.raises(CliError, match="no process 'node9'"):
        restart_process(tmp_path, "node9")


def test_damaged_cluster_file_is_a_clear_error(tmp_path: Path) -> None:
    cluster_file(tmp_path).write_text("{not json")
    with pytest.raises(CliError, match="damaged"):
        read_cluster(tmp_path)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(autouse=True)
def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("BOLLARD_DEBUG", raising=False)


def test_down_is_idempotent_and_clear(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    result = run("down", "--data-dir", str(tmp_path))
    assert result.exit_code == 0 and "no cluster is running" in result.stdout
    rec = start(started, tmp_path, "server", SLEEPER)
    write_cluster(tmp_path, ClusterRecord(url="http://x", data_dir=str(tmp_path), processes=[rec]))
    result = run("down", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "stopped server" in result.stdout
    assert not cluster_file(tmp_path).exists()
    started[0].wait(timeout=10)
    # A stale cluster.json (its processes long gone) is cleaned up too.
    write_cluster(tmp_path, ClusterRecord(url="http://x", data_dir=str(tmp_path), processes=[rec]))
    result = run("down", "--data-dir", str(tmp_path))
    assert result.exit_code == 0 and "nothing was running" in result.stdout
    assert not cluster_file(tmp_path).exists()


def test_up_refuses_when_a_cluster_already_runs(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    rec = start(started, tmp_path, "server", SLEEPER)
    write_cluster(tmp_path, ClusterRecord(url="http://x", data_dir=str(tmp_path), processes=[rec]))
    result = run("up", "--data-dir", str(tmp_path), "--detach")
    assert result.exit_code == 1
    assert "already running" in result.stderr and "bollard down" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert is_running(rec.pid, rec.argv)  # left alone


def test_up_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("up", "--data-dir", str(tmp_path), "--port", str(port), "--detach")
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert not cluster_file(tmp_path).exists()


def test_down_removes_the_context_of_the_cluster_it_stopped(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    data = tmp_path / "data"
    rec = start(started, data, "server", SLEEPER)
    write_cluster(data, ClusterRecord(url="https://x:1", data_dir=str(data), processes=[rec]))
    save_context(Context(url="https://x:1", data_dir=str(data), token_file="t", ca_file="ca"))
    result = run("down")  # the context says where the cluster is
    assert result.exit_code == 0, result.output
    assert "stopped server" in result.stdout and "removed the CLI context" in result.stdout
    assert load_context() is None and not context_path().exists()
    # A context that points at another cluster is left alone, even when nothing runs here.
    save_context(Context(url="https://y:2", data_dir=str(tmp_path / "other"), token_file="t"))
    result = run("down", "--data-dir", str(data))
    assert result.exit_code == 0 and "removed the CLI context" not in result.stdout
    assert load_context() is not None
    # ...and one that points at a stopped cluster is removed by `down` too.
    save_context(Context(url="https://x:1", data_dir=str(data), token_file="t"))
    result = run("down", "--data-dir", str(data))
    assert "no cluster is running" in result.stdout and load_context() is None


def test_hint_names_a_bollard_that_works_without_the_venv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "bollard").is_file():
        pytest.skip("no bollard script next to this python (not a venv install)")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert bollard_command() == str(venv_bin / "bollard")
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")  # an activated venv
    assert bollard_command() == "bollard"
