"""Storage benchmark (issue 18): volume copies and migrations through Bollard on real libvirt
hosts, beside the same copies made by hand (``qemu-img convert``, ``cp``) in the same run.

Two libvirt daemons (hosts a and b of tests/support/libvirt_env.py, each with its own
/var/lib/libvirt in a mount namespace of its own), a ``bollard server`` and one ``bollard
agent --driver libvirt`` per host, run in its daemon's mount namespace (``nsenter``) as an
agent on a real host sees its daemon's files. Pool ``local`` is then a directory per host at
the same path; the shared pool ``bench-shared`` is one directory that both hosts see.

A volume of ``--size`` MiB (default 4096; ``--quick`` 256) in pool ``local`` on a is filled
with non-zero data, then each run (``--runs``, default 5) times, from the request to the end
of the task (long poll of ``GET /tasks/{id}/wait``): a copy into the shared pool, a migration
there, a migration to pool ``local`` on b, one back to the shared pool, one to ``local`` on a.
The task's ``result.progress`` is read every 200 ms meanwhile (largest gap between changes;
target at most 1 s). Just before each, the same copy is made by hand from the same file into
the same directory (``qemu-img convert``, the faster of two tries, and ``cp``): ratio =
Bollard's MiB/s over qemu-img's, from the medians (target at least 0.8). Every timed copy, by
hand or through Bollard, starts on a settled machine: the pools' trash empty (a delete frees
its blocks in the background) and the page cache flushed (``sync``). bench/README.md
says more. A missed target is reported, not an error; where libvirt cannot run (not root, no
namespaces, scripts/libvirt/install.sh failed) the report says ``skipped`` with the reason.

    python bench/storage.py [--quick] [--size MIB] [--runs N] [--output FILE] [--keep]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    ServerProcess,
    base_parser,
    child_env,
    make_log,
    report_head,
    run_main,
    scratch_dir,
    stats,
    stop_process,
    wait_for,
    write_report,
)

from bollard.agent.drivers.libvirt.host_tools import HostTools

DEFAULT_OUTPUT = RESULTS_DIR / "storage.json"
# 4 GiB: a copy long enough (3-4 s here) that its rate, not the fixed cost of a task (reported
# apart: overhead_seconds), is what the ratio measures; 1 GiB out of a page cache took 0.4 s.
SIZE_MIB, QUICK_SIZE_MIB = 4096, 256
TARGET_RATIO, TARGET_GAP_SECONDS = 0.8, 1.0
PROGRESS_POLL = 0.2  # seconds between two reads of the task's progress
HEARTBEAT = 2.0
RUNS = 5
PATTERN = 0x5A
CHUNK_MIB = 64  # qemu-io writes and reads this much per request
SHARED_POOL = "bench-shared"
VOLUME = "bench-vol"
TRASH = ".bollard-trash"  # a pool's trash directory (libvirt/trash.py)
SETTLE_TIMEOUT = 120.0
IMAGES = Path("images/bollard")  # the default pool's directory, under /var/lib/libvirt
START_TIMEOUT, TOOL_TIMEOUT, AGENT_STOP_TIMEOUT = 120.0, 900.0, 20.0

log = make_log("storage")


def libvirt_env() -> Any:
    """tests/support/libvirt_env.py (the test suite's libvirt daemons), imported from the
    repository's root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.support.libvirt_env")


# -- tools run by hand --------------------------------------------------------------------


def run_tool(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
        raise BenchError(f"{what} failed (exit status {done.returncode}): {said[0]}")


def chunks(size_mib: int) -> list[str]:
    """``<offset>M <length>M`` pieces of at most CHUNK_MIB covering ``size_mib``."""
    return [f"{o}M {min(CHUNK_MIB, size_mib - o)}M" for o in range(0, size_mib, CHUNK_MIB)]


def fill(image: Path, size_mib: int) -> None:
    """Write the pattern over the whole of a qcow2 image (no VM has it open)."""
    argv = ["qemu-io", "-f", "qcow2"]
    for piece in chunks(size_mib):
        argv += ["-c", f"write -P {PATTERN:#x} {piece}"]
    run_tool([*argv, str(image)], f"filling {image.name}")


def check_data(image: Path, size_mib: int) -> None:
    """BenchError unless the image holds the pattern over its whole size."""
    argv = ["qemu-io", "-r", "-U", "-f", "qcow2"]
    for piece in chunks(size_mib):
        argv += ["-c", f"read -P {PATTERN:#x} {piece}"]
    done = subprocess.run([*argv, str(image)], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode != 0 or "Pattern verification failed" in done.stdout + done.stderr:
        raise BenchError(f"the copy {image} does not hold the data written into the volume")


def timed_copy(argv: list[str], target: Path, size_mib: int) -> dict[str, Any]:
    """Run one copy by hand (``target`` is removed afterwards); seconds and MiB/s."""
    os.sync()
    started = time.perf_counter()
    try:
        run_tool(argv, " ".join(argv[:2]))
        seconds = time.perf_counter() - started
    finally:
        target.unlink(missing_ok=True)
    return {"seconds": round(seconds, 3), "mib_per_s": round(size_mib / seconds, 1)}


def raw_copies(source: Path, target_dir: Path, size_mib: int) -> dict[str, Any]:
    """The same copy made by hand into a file of the target directory: qemu-img convert (as
    the agent runs it, less ``-p``: ``-t none`` where O_DIRECT works there) twice, the
    faster counting (the first of two can be slowed for a second or so by what the last
    operation left behind), then cp once."""
    target = target_dir / f".bench-raw-{source.name}"
    cache = HostTools().copy_cache_mode(str(target_dir))  # the agent's choice there
    convert = ["qemu-img", "convert", "-t", cache, "-f", "qcow2", "-O", "qcow2",
               "-o", "compat=1.1", str(source), str(target)]  # fmt: skip
    tries = [timed_copy(convert, target, size_mib) for _ in range(2)]
    best = min(tries, key=lambda t: float(t["seconds"]))
    return {
        "qemu_img": {**best, "tries_seconds": [t["seconds"] for t in tries]},
        "cp": timed_copy(["cp", str(source), str(target)], target, size_mib),
    }


# -- the cluster ---------------------------------------------------------------------------


class Agents:
    """One ``bollard agent --driver libvirt`` per libvirt host, each started in its daemon's
    mount namespace; logs in ``<root>/logs/<host>.log``."""

    def __init__(self, root: Path, server: ServerProcess, hosts: list[Any]) -> None:
        self.root, self.server, self.hosts = root, server, hosts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        client = self.server.client
        for host in self.hosts:
            answer = client.post("/nodes", json={"name": host.name})
            if answer.status_code != 201:
                raise BenchError(f"enrolling node {host.name}: {answer.text}")
            home = self.root / "agents" / host.name
            home.mkdir(parents=True)
            token = home / "token"
            token.write_text(answer.json()["token"])
            token.chmod(0o600)
            self.procs[host.name] = self._spawn(host, home)
        for name in self.procs:
            wait_for(
                f"agent {name} is connected", partial(self._connected, name), START_TIMEOUT, 0.2
            )

    def _spawn(self, host: Any, home: Path) -> subprocess.Popen[bytes]:
        daemon = [pid for pid, name in host.processes() if name == "libvirtd"]
        if not daemon:
            raise BenchError(f"libvirtd of host {host.name} does not run")
        argv = ["nsenter", f"--mount=/proc/{daemon[0]}/ns/mnt", "--",
                sys.executable, "-m", "bollard", "agent", "--server", self.server.url,
                "--node", host.name, "--token-file", str(home / "token"),
                "--state-dir", str(home / "state"), "--driver", "libvirt",
                "--libvirt-uri", host.uri, "--libvirt-domain-type", "qemu",
                "--libvirt-migration-uri", host.uri,
                "--libvirt-migration-address", "127.0.0.1"]  # fmt: skip
        with (self.root / "logs" / f"{host.name}.log").open("ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env())

    def _connected(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise BenchError(
                f"agent {name} exited with status {proc.returncode}:\n{self.log_tail(name)}"
            )
        return bool(self.server.client.get(f"/nodes/{name}").json().get("connected"))

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = (self.root / "logs" / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for name, proc in self.procs.items():
            stop_process(proc, AGENT_STOP_TIMEOUT, log, f"agent {name}")


@contextmanager
def cluster(root: Path) -> Iterator[tuple[ServerProcess, list[Any]]]:
    """Two libvirt hosts, a server and their agents, stopped at the end whatever happens."""
    env = libvirt_env()
    with env.start_libvirt_hosts(root / "lv", count=2) as hosts:
        server = ServerProcess(root / "server", heartbeat=HEARTBEAT, log=log)
        agents: Agents | None = None
        try:
            server.connect()
            agents = Agents(root, server, hosts)
            agents.start()
            yield server, hosts
        except BaseException:
            if agents is not None:
                for host in hosts:
                    log(f"agent {host.name}'s log ends:\n{agents.log_tail(host.name)}")
            raise
        finally:
            if agents is not None:
                agents.stop()
            server.stop()


# -- operations through Bollard ------------------------------------------------------------


class ProgressWatch:
    """Reads ``GET /tasks/{id}`` every PROGRESS_POLL seconds in a thread of its own and keeps
    each change of ``result.progress`` with its time (seconds since ``started``)."""

    def __init__(self, server: ServerProcess, task_id: str, started: float) -> None:
        self.started = started
        self.changes: list[dict[str, Any]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=10,
        )
        self._task_id = task_id
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last: Any = None
        while not self._stop.is_set():
            try:
                task = self._client.get(f"/tasks/{self._task_id}").json()
            except (httpx.HTTPError, ValueError):
                self.errors += 1
            else:
                progress = task.get("result", {}).get("progress")
                if progress is not None and progress != last:
                    at = round(time.perf_counter() - self.started, 3)
                    seen = {k: progress.get(k) for k in ("fraction", "message")}
                    self.changes.append({"at": at, **seen})
                    last = progress
                if task.get("finished_at") is not None:
                    return
            self._stop.wait(PROGRESS_POLL)  # the polling interval

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()


def gaps(times: list[float]) -> float | None:
    """The largest difference between two consecutive times (None: fewer than two)."""
    return max((b - a for a, b in pairwise(times)), default=None)


def progress_report(changes: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The progress seen: ``max_gap_seconds`` between two changes (the target's figure);
    ``max_silence_seconds`` also counts the request and the task's end as changes (what an
    operator waits at most for news, the whole operation long)."""
    times = [c["at"] for c in changes]
    between = gaps(times)
    silence = gaps([0.0, *times, seconds])
    judged = between if between is not None else silence
    return {
        "changes": len(changes),
        "max_gap_seconds": None if between is None else round(between, 3),
        "max_silence_seconds": None if silence is None else round(silence, 3),
        "first_after_seconds": times[0] if times else None,
        "target_gap_seconds": TARGET_GAP_SECONDS,
        "met": judged is not None and judged <= TARGET_GAP_SECONDS,
        "seen": changes,
    }


def _stamp(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def step_times(task: dict[str, Any]) -> dict[str, float]:
    """Each step's duration (seconds) as the server recorded it."""
    found: dict[str, float] = {}
    for step in task.get("steps") or []:
        began, ended = _stamp(step.get("started_at")), _stamp(step.get("finished_at"))
        if began is not None and ended is not None:
            found[step["name"]] = round(ended - began, 3)
    return found


def wait_task(server: ServerProcess, task_id: str, timeout: float) -> dict[str, Any]:
    """Long-poll ``GET /tasks/{id}/wait`` until the task has ended (BenchError at the
    deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = server.client.get(
            f"/tasks/{task_id}/wait", params={"timeout": 30}
        ).json()
        if task.get("finished_at") is not None:
            return task
        server.alive()
        if time.monotonic() >= deadline:
            raise BenchError(f"task {task_id} ({task.get('type')}) did not end in {timeout:g}s")


def request(server: ServerProcess, path: str, body: dict[str, Any], timeout: float) -> None:
    """An untimed change (create, delete): BenchError unless its task succeeds."""
    method = "DELETE" if not body else "POST"
    answer = server.client.request(method, path, json=body or None)
    if answer.status_code != 202:
        raise BenchError(f"{method} {path}: {answer.status_code} {answer.text}")
    task = wait_task(server, answer.json()["task"]["id"], timeout)
    if task["state"] != "succeeded":
        raise BenchError(f"{method} {path}: task {task['state']}: {task.get('error')}")


def job_seconds(jobs_dir: Path, command_id: str | None) -> float | None:
    """How long the agent's copy job ran (its record in the agent's libvirt jobs directory:
    started to ended, wall clock); None when the record is not there (any more)."""
    if command_id is None:
        return None
    try:
        record = json.loads((jobs_dir / f"{command_id}.json").read_text())
    except (OSError, ValueError):
        return None
    began, ended = record.get("started_at"), record.get("ended_at")
    if not isinstance(began, float | int) or not isinstance(ended, float | int):
        return None
    return round(ended - began, 3)


def through_bollard(
    server: ServerProcess,
    path: str,
    body: dict[str, Any],
    size_mib: int,
    timeout: float,
    jobs_dir: Callable[[str], Path],
) -> dict[str, Any]:
    """One copy or migration: from the request to the end of its task, with its progress
    and the duration of the agent's copy job (``jobs_dir(node)``: that agent's records)."""
    os.sync()
    started = time.perf_counter()
    answer = server.client.post(path, json=body)
    if answer.status_code != 202:
        raise BenchError(f"POST {path}: {answer.status_code} {answer.text}")
    task_id = answer.json()["task"]["id"]
    watch = ProgressWatch(server, task_id, started)
    try:
        task = wait_task(server, task_id, timeout)
        seconds = time.perf_counter() - started
    finally:
        watch.stop()
    if task["state"] != "succeeded":
        raise BenchError(f"POST {path}: task {task['state']}: {task.get('error')}")
    final = server.client.get(f"/tasks/{task_id}").json()
    server_seconds = (_stamp(final["finished_at"]) or 0.0) - (_stamp(final["created_at"]) or 0.0)
    steps: list[dict[str, Any]] = final.get("steps") or []
    copy_step: dict[str, Any] = next((s for s in steps if s["name"] == "copy"), {})
    copy_result: dict[str, Any] = copy_step.get("result") or {}
    copied_by = copy_result.get("source_host")
    job = None
    if isinstance(copied_by, str):
        job = job_seconds(jobs_dir(copied_by), (copy_step.get("commands") or {}).get("copy"))
    return {
        "seconds": round(seconds, 3),
        "mib_per_s": round(size_mib / seconds, 1),
        "server_seconds": round(server_seconds, 3),
        "steps_seconds": step_times(final),
        "copy_job_seconds": job,
        "copied_by": copied_by,
        "copied_to": copy_result.get("target_host"),
        "progress": progress_report(watch.changes, seconds),
        "progress_read_errors": watch.errors,
    }


class Bench:
    """The running cluster and what the runs share: the shared pool's directory (as this
    process sees it), the volume's size and each operation's deadline."""

    def __init__(self, root: Path, server: ServerProcess, hosts: list[Any], size: int) -> None:
        self.root, self.server, self.hosts, self.size = root, server, hosts, size
        self.shared = root / "shared"
        self.timeout = max(300.0, size / 5.0)  # (5 MiB/s would be very slow indeed)

    def jobs_dir(self, node: str) -> Path:
        """The job records of ``node``'s agent."""
        return self.root / "agents" / node / "state" / "libvirt-jobs"

    def local_dir(self, node: str) -> Path:
        """Where this process sees the directory of pool ``local`` on ``node``."""
        host = next(h for h in self.hosts if h.name == node)
        return Path(host.dir) / "lib" / IMAGES

    def trash_dirs(self) -> list[Path]:
        """The trash of every pool (agent/drivers/libvirt/trash.py), as this process sees it."""
        return [self.shared / TRASH, *(self.local_dir(h.name) / TRASH for h in self.hosts)]

    def settle(self) -> None:
        """Wait until no deleted volume's blocks are still being freed (the pools' trash is
        empty: a delete's ``rm`` runs in the background, after its task ended), then flush
        what the last copy left in the page cache (``sync``), so that no copy is timed while
        the work of the one before it goes on; at most SETTLE_TIMEOUT."""

        def emptied() -> bool:
            return not any(
                entry.name.endswith(".trash")
                for d in self.trash_dirs()
                if d.is_dir()
                for entry in d.iterdir()
            )

        wait_for("the pools' trash is empty", emptied, SETTLE_TIMEOUT, 0.05)
        os.sync()

    def path(self, name: str) -> Path:
        """Where this process sees volume ``name``'s file."""
        v = self.server.client.get(f"/volumes/{name}").json()
        file = str(v["file"])
        if v["pool"] == SHARED_POOL:
            return self.shared / file
        return self.local_dir(str(v["node"])) / file

    def measured(
        self,
        name: str,
        source: Path,
        target_dir: Path,
        call: tuple[str, dict[str, Any]],
        result: str,
    ) -> dict[str, Any]:
        """The copy by hand from ``source`` into ``target_dir``, then the same through
        Bollard; the data of the Bollard copy (volume ``result``) is checked. Each starts
        on a settled machine (see ``settle``)."""
        self.settle()
        raw = raw_copies(source, target_dir, self.size)
        self.settle()
        bollard = through_bollard(
            self.server, call[0], call[1], self.size, self.timeout, self.jobs_dir
        )
        check_data(self.path(result), self.size)
        ratio = bollard["mib_per_s"] / raw["qemu_img"]["mib_per_s"]
        log(
            f"{name}: Bollard {bollard['seconds']}s, qemu-img {raw['qemu_img']['seconds']}s, "
            f"cp {raw['cp']['seconds']}s: ratio {ratio:.2f}; largest progress gap "
            f"{bollard['progress']['max_gap_seconds']}s"
        )
        return {"bollard": bollard, "raw": raw}

    def cycle(self, home: str, away: str) -> list[tuple[str, dict[str, Any]]]:
        """One run; the volume starts and ends in pool ``local`` on ``home``. It is copied
        into the shared pool (the copy is then deleted), migrated there, to pool ``local``
        on ``away`` (the host that did not have it), back to the shared pool, and home."""
        copy_name = f"{VOLUME}-copy"
        copy = (f"/volumes/{VOLUME}/copy", {"name": copy_name, "pool": SHARED_POOL, "node": None})
        to_shared = (f"/volumes/{VOLUME}/migrate", {"pool": SHARED_POOL, "node": None})
        op = "copy_local_to_shared"
        found = [(op, self.measured(op, self.path(VOLUME), self.shared, copy, copy_name))]
        request(self.server, f"/volumes/{copy_name}", {}, self.timeout)
        back = [
            ("migrate_shared_to_local_other_host", away),
            ("migrate_shared_to_local_back", home),
        ]
        for op, node in back:
            there = self.measured(
                "migrate_local_to_shared", self.path(VOLUME), self.shared, to_shared, VOLUME
            )
            found.append(("migrate_local_to_shared", there))
            to_local = (f"/volumes/{VOLUME}/migrate", {"pool": "local", "node": node})
            here = self.measured(op, self.path(VOLUME), self.local_dir(node), to_local, VOLUME)
            found.append((op, here))
        return found


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One operation over every run: medians, the ratio of the medians, the worst gap."""
    bollard = [r["bollard"]["seconds"] for r in runs]
    qemu_img = [r["raw"]["qemu_img"]["seconds"] for r in runs]
    cp = [r["raw"]["cp"]["seconds"] for r in runs]
    ratio = statistics.median(qemu_img) / statistics.median(bollard)
    jobs = [r["bollard"]["copy_job_seconds"] for r in runs]
    overheads = [b - j for b, j in zip(bollard, jobs, strict=True) if j is not None]
    worst = [r["bollard"]["progress"]["max_gap_seconds"] for r in runs]
    known = [g for g in worst if g is not None]
    return {
        "bollard_seconds": stats(bollard, digits=3),
        "qemu_img_seconds": stats(qemu_img, digits=3),
        "cp_seconds": stats(cp, digits=3),
        # the agent's copy job alone, and the rest (request to the end of the task, less it)
        "copy_job_seconds": stats([j for j in jobs if j is not None], digits=3)
        if overheads
        else None,
        "overhead_seconds": stats(overheads, digits=3) if overheads else None,
        "ratio": round(ratio, 3),
        "ratio_to_cp": round(statistics.median(cp) / statistics.median(bollard), 3),
        # fastest against fastest: other work on the machine only ever adds time
        "ratio_best": round(min(qemu_img) / min(bollard), 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
        "copied": sorted(
            {f"by {r['bollard']['copied_by']} to {r['bollard']['copied_to']}" for r in runs}
        ),
        "max_progress_gap_seconds": max(known) if known else None,
        "target_gap_seconds": TARGET_GAP_SECONDS,
        "progress_met": all(r["bollard"]["progress"]["met"] for r in runs),
        "runs": runs,
    }


def run(root: Path, size_mib: int, runs: int) -> dict[str, Any]:
    shared = root / "shared"
    shared.mkdir(parents=True)
    with cluster(root) as (server, hosts):
        bench = Bench(root, server, hosts, size_mib)
        answer = server.client.post(
            "/pools", json={"name": SHARED_POOL, "type": "shared", "path": str(shared)}
        )
        if answer.status_code != 201:
            raise BenchError(f"POST /pools: {answer.status_code} {answer.text}")
        home, away = hosts[0].name, hosts[1].name
        body = {"name": VOLUME, "size_mb": size_mib, "pool": "local", "node": home}
        request(server, "/volumes", body | {"format": "qcow2"}, START_TIMEOUT)
        log(f"filling {VOLUME} ({size_mib} MiB) with {PATTERN:#x}")
        fill(bench.path(VOLUME), size_mib)
        per_op: dict[str, list[dict[str, Any]]] = {}
        for number in range(1, runs + 1):
            log(f"run {number} of {runs}")
            for op, found in bench.cycle(home, away):
                per_op.setdefault(op, []).append({"run": number, **found})
        return {op: summary(found) for op, found in per_op.items()}


def tool_versions() -> dict[str, str | None]:
    """The first line of ``qemu-img --version`` and ``libvirtd --version`` (None: absent)."""
    found: dict[str, str | None] = {}
    for tool in ("qemu-img", "libvirtd"):
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            found[tool.replace("-", "_")] = None
            continue
        found[tool.replace("-", "_")] = (done.stdout.strip().splitlines() or [""])[0] or None
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE_MIB} MiB volume")
    size_help = f"the volume's size in MiB (default {SIZE_MIB})"
    parser.add_argument("--size", type=int, default=None, metavar="MIB", help=size_help)
    parser.add_argument(
        "--runs", type=int, default=RUNS, help=f"runs of the three operations (default {RUNS})"
    )
    args: argparse.Namespace = parser.parse_args(argv)
    if args.size is None:
        args.size = QUICK_SIZE_MIB if args.quick else SIZE_MIB
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.size < 1:
        parser.error("--size must be at least 1 MiB")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    failed = False
    results: dict[str, Any]
    why = libvirt_env().libvirt_unavailable_reason()
    if why is not None:
        log(f"skipped: {why}")
        results = {"skipped": why}
    else:
        with scratch_dir("bollard-bench-storage-", args.keep, log) as root:
            try:
                results = run(root, args.size, args.runs)
            except (BenchError, OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
                log(f"failed: {exc}")
                results = {"error": f"{type(exc).__name__}: {exc}"}
                failed = True
    measures = (
        "volume copy and migrations (local -> shared, shared -> local on another host) "
        "through Bollard on real libvirt hosts, from the request to the task's end, beside "
        "qemu-img convert and cp of the same file into the same directory"
    )
    head = report_head("storage", measures, started)
    head["versions"].update(tool_versions())
    report = {
        **head,
        "parameters": {
            "quick": args.quick,
            "size_mib": args.size,
            "runs": args.runs,
            "progress_poll_seconds": PROGRESS_POLL,
            "heartbeat_seconds": HEARTBEAT,
            "target_ratio": TARGET_RATIO,
            "target_gap_seconds": TARGET_GAP_SECONDS,
        },
        # Other work on the machine makes the figures noisy: its load, before and after.
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }
    write_report(report, args.output, log)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, log)
