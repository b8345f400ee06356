"""Reconcile benchmark: a full state-reconciliation pass over 1,000 VMs on 10 sim nodes, and
the server CPU a heartbeat costs when nothing changed.

The database is seeded with the store functions (10 nodes, 100 running VMs each) and the sim
fabric with the same VMs; then the real server runs (`python -m bollard server`, SQLite in a
temporary directory, heartbeat 0.5 s) and 10 real sim agents connect over WebSockets (in one
thread of this process: on a small machine they take at most one core from the server).
Measuring starts once every node's ``inventory_known`` is true and there is no difference.

- ``full_pass``: ``GET /api/v1/reconcile`` N times: the server-side pass (``seconds``: read
  the facts, classify) and the round trip. Target: p90 under 0.5 s.
- ``heartbeat_no_change``: the cluster stopped, the server's heartbeat path (parse, then
  ``Gateway._heartbeat``) is called here on the same database for sessions holding 10, 100
  and 1,000 VMs, with no-change deltas: thread CPU and SQL statements per heartbeat. Target
  (O(1)): CPU at 1,000 VMs under twice CPU at 100.
- ``steady_state``: the server process's CPU (/proc/<pid>/stat) over a window while the
  agents heartbeat, per heartbeat stored: an upper bound (every background loop included).

JSON goes to stdout and ``bench/results/reconcile.json``; progress to stderr. Exit status 1
if the run failed (not for a missed target: see ``met``). Every wait has a deadline; the
server and the agents are stopped whatever happens.

    python bench/reconcile.py [--quick] [--output FILE] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from benchlib import (
    RESULTS_DIR,
    BenchError,
    Interrupted,
    ServerProcess,
    machine,
    make_log,
    raise_on_sigterm,
    stats,
    versions,
    wait_for,
    write_report,
)
from sqlalchemy import event

from bollard.agent.config import AgentConfig
from bollard.agent.process import run_agent_async
from bollard.domain.inventory import Inventory
from bollard.domain.models import Node
from bollard.domain.protocol import Heartbeat, VmReport, agent_message
from bollard.domain.states import DesiredPower, PowerState, VmState
from bollard.server.assembly import Assembly, prepare
from bollard.server.auth import hash_token, new_token
from bollard.server.config import ServerConfig
from bollard.server.gateway import AgentConnection
from bollard.server.reports import ReportOutcome
from bollard.sim.fabric import Fabric
from bollard.sim.models import SimVm
from bollard.store import migrate, nodes, vms
from bollard.store.db import Database, default_url

DEFAULT_OUTPUT = RESULTS_DIR / "reconcile.json"
NODES, VMS_PER_NODE, HEARTBEAT = 10, 100, 0.5
VM_VCPUS, VM_MEMORY_MB, HOST_VCPUS, HOST_MEMORY_MB = 1, 256, 128, 65536
TARGET_PASS_SECONDS, TARGET_RATIO = 0.5, 2.0
INVENTORY_SIZES = (10, 100, 1000)
START_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT = 60.0, 120.0, 20.0
POLL = 0.1  # polling interval of the waits, unless they say otherwise


log = make_log("reconcile")


def seed(db: Database, fabric: Fabric, root: Path) -> dict[str, Path]:
    """Nodes and VMs in the database (store functions) and the same VMs running in the sim
    fabric; returns node -> token file."""
    now = datetime.now(UTC)
    tokens: dict[str, Path] = {}
    with db.write() as conn:
        for n in range(1, NODES + 1):
            node, token = f"node{n}", new_token()
            nodes.create(conn, node, hash_token(token), now)
            tokens[node] = root / f"{node}.token"
            tokens[node].write_text(token)
            host = fabric.host(node)
            host.ensure_host(HOST_VCPUS, HOST_MEMORY_MB)
            with fabric.lock():
                for i in range(1, VMS_PER_NODE + 1):
                    vm_uuid, name, task = str(uuid.uuid4()), f"vm-{node}-{i:03d}", str(uuid.uuid4())
                    vms.create(conn, uuid=vm_uuid, name=name, node=node, vcpus=VM_VCPUS,
                               memory_mb=VM_MEMORY_MB, desired_power=DesiredPower.RUNNING,
                               task_id=task, now=now)  # fmt: skip
                    vms.end_task(conn, vm_uuid, task, now, vm_state=VmState.ACTIVE)
                    vm = SimVm(uuid=vm_uuid, name=name, vcpus=VM_VCPUS, memory_mb=VM_MEMORY_MB,
                               epoch=1, power=PowerState.RUNNING)  # fmt: skip
                    host.put_vm(vm)
            used = (VMS_PER_NODE * VM_VCPUS, VMS_PER_NODE * VM_MEMORY_MB)
            nodes.adjust_allocation(conn, node, *used)
    return tokens


class Agents:
    """The real sim agents (bollard.agent.process.run_agent_async), all in one event loop
    in one thread of this process; each has its own WebSocket to the server."""

    def __init__(self, configs: list[AgentConfig]) -> None:
        self.configs = configs
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="agents", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await asyncio.gather(*(run_agent_async(c, self._stop) for c in self.configs))

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the waits and stop()
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise BenchError("the agents' event loop did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self.thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(STOP_TIMEOUT)
            if self.thread.is_alive():
                log("the agents did not stop in time (daemon thread left behind)")
        if self.error is not None:
            log(f"the agents failed: {self.error!r}")


def scan(client: httpx.Client) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    answer = client.get("/reconcile")
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return answer.json(), elapsed


def node_rows(db: Database) -> list[Node]:
    """The nodes table, read by this process (the server is not asked)."""
    with db.read() as conn:
        return nodes.list_all(conn)


def measure_live(args: argparse.Namespace, db: Database, server: ServerProcess) -> dict[str, Any]:
    client = server.client
    assert client is not None
    known = lambda: server.alive() and all(n.inventory_known for n in node_rows(db))  # noqa: E731
    wait_for(f"all {NODES} nodes' inventory_known is true", known, READY_TIMEOUT, POLL)

    def clean() -> dict[str, Any] | None:
        found, _ = scan(client)
        ok = found["checked_vms"] == NODES * VMS_PER_NODE and not found["differences"]
        return found if ok else None

    first = wait_for("the state reconciler finds no difference", clean, READY_TIMEOUT, 0.5)
    log(f"ready: {first['checked_vms']} VMs on {first['checked_nodes']} nodes, 0 differences")
    passes, trips, differences = [], [], 0
    for _ in range(args.passes):
        found, trip = scan(client)
        passes.append(found["seconds"])
        trips.append(trip)
        differences += len(found["differences"])
    log(f"full pass: median {statistics.median(passes) * 1000:.1f} ms over {args.passes}")

    def sample() -> tuple[float, int, float]:  # server CPU, heartbeats stored, wall clock
        return server.cpu_seconds(), sum(n.last_seq for n in node_rows(db)), time.monotonic()

    (cpu0, beats0, wall0), deadline = sample(), time.monotonic() + args.window
    while time.monotonic() < deadline:  # the measurement window; the server is watched
        server.alive()
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    cpu1, beats1, wall1 = sample()
    beats, cpu, wall = beats1 - beats0, cpu1 - cpu0, wall1 - wall0
    full_pass = {
        "passes": args.passes,
        "server_seconds": stats(passes),
        "round_trip_seconds": stats(trips),
        "checked_vms": first["checked_vms"],
        "checked_nodes": first["checked_nodes"],
        "differences_seen": differences,
        "target_seconds": TARGET_PASS_SECONDS,
        "met": stats(passes)["p90"] < TARGET_PASS_SECONDS,
    }
    steady = {
        "window_seconds": round(wall, 2),
        "heartbeats": beats,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_per_second": round(cpu / wall, 4),
        "server_cpu_us_per_heartbeat_upper_bound": round(cpu / beats * 1e6, 1) if beats else None,
        "includes": "every server loop: heartbeats, the health monitor (a pass every "
        f"{max(0.1, HEARTBEAT / 4):g}s), the periodic state reconciler pass "
        "(reconcile.state.interval, 5s by default), the command reconciler; /proc tick "
        "resolution 10 ms",
    }
    log(f"steady state: {cpu:.2f}s server CPU over {wall:.1f}s, {beats} heartbeats")
    return {"full_pass": full_pass, "steady_state": steady}


def session_holding(runtime: Assembly, reports: list[VmReport]) -> AgentConnection:
    """A gateway session of a new node whose full report (stored) holds ``reports``."""
    node = f"hb-{len(reports)}"
    with runtime.db.write() as conn:
        nodes.create(conn, node, hash_token(new_token()), runtime.clock.now())
    session = AgentConnection(cast(Any, None), node, str(uuid.uuid4()))
    session.reported = True  # the rejoin check of a first report is not measured
    full = Heartbeat(seq=1, sent_at=time.time(), vms=reports, digest=Inventory(reports).digest)
    asyncio.run(runtime.reports.store(session, full))
    assert session.inventory is not None and len(session.inventory) == len(reports)
    return session


def store_reports(
    runtime: Assembly, session: AgentConnection, raws: list[str]
) -> list[ReportOutcome]:
    """Store heartbeats one after the other, as the session's handler does."""

    async def feed() -> list[ReportOutcome]:
        outcomes = []
        for raw in raws:
            msg = cast(Heartbeat, agent_message.validate_json(raw))
            outcomes.append(await runtime.reports.store(session, msg))
        return outcomes

    return asyncio.run(feed())


def measure_heartbeat(args: argparse.Namespace, data_dir: Path, fabric: Fabric) -> dict[str, Any]:
    """The server's heartbeat path, called in this process, with the cluster stopped."""
    runtime = prepare(ServerConfig(data_dir=data_dir, db_url=default_url(data_dir)))
    reports = [vm.report() for host in fabric.hosts() for vm in host.list_vms()]
    sessions = {size: session_holding(runtime, reports[:size]) for size in INVENTORY_SIZES}
    seq = 1
    sql: Counter[tuple[int, str]] = Counter()
    counting: list[int] = []  # the size being measured, if any

    def on_sql(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if counting:
            sql[(counting[0], " ".join(statement.split()[:3]))] += 1

    def on_connect(dbapi_conn: Any, record: Any) -> None:
        if counting:
            sql[(counting[0], "(new connection + 4 PRAGMAs)")] += 1

    event.listen(runtime.db.engine, "before_cursor_execute", on_sql)
    event.listen(runtime.db.engine, "connect", on_connect)
    cpu: dict[int, list[float]] = {size: [] for size in INVENTORY_SIZES}
    wall: dict[int, list[float]] = {size: [] for size in INVENTORY_SIZES}
    bad = 0
    try:
        for round_ in range(args.rounds + 1):  # round 0 warms up; sizes interleaved
            for size, session in sessions.items():
                assert session.inventory is not None
                digest, seqs = session.inventory.digest, range(seq + 1, seq + 1 + args.beats)
                beats = [Heartbeat(seq=n, sent_at=time.time(), vms=[], full=False, gone=[],
                                   digest=digest, load=0.1) for n in seqs]  # fmt: skip
                raws = [beat.model_dump_json() for beat in beats]
                seq += args.beats
                counting[:] = [size] if round_ else []
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                for out in store_reports(runtime, session, raws):
                    bad += out.changed or out.resync is not None or not out.accepted
                if round_:
                    cpu[size].append((time.thread_time() - cpu0) / args.beats)
                    wall[size].append((time.perf_counter() - wall0) / args.beats)
    finally:
        counting.clear()
        runtime.db.dispose()
    if bad:
        raise BenchError(f"{bad} no-change heartbeats were not stored as no-change")
    total = args.rounds * args.beats
    by_size = {
        str(size): {
            "cpu_us": stats(cpu[size], 1e6, 1),
            "wall_us": stats(wall[size], 1e6, 1),
            "sql_per_heartbeat": {k: round(n / total, 2) for (s, k), n in sql.items() if s == size},
        }
        for size in INVENTORY_SIZES
    }
    median = {size: statistics.median(cpu[size]) for size in INVENTORY_SIZES}
    ratio = median[1000] / median[100]
    log(f"no-change heartbeat CPU: {[f'{s} VMs {m * 1e6:.0f} us' for s, m in median.items()]}")
    return {
        "path": "agent_message.validate_json(raw) then Gateway._heartbeat(session, msg) "
        "(record_heartbeat, delta apply, digest check) in this process, on the benchmark's "
        "database, the cluster stopped; CPU: time.thread_time(); each session's node has "
        "its full report stored first",
        "rounds": args.rounds,
        "heartbeats_per_round": args.beats,
        "by_inventory_vms": by_size,
        "cpu_ratio_1000_vs_100": round(ratio, 3),
        "cpu_ratio_1000_vs_10": round(median[1000] / median[10], 3),
        "target": f"O(1): median CPU at 1,000 VMs < {TARGET_RATIO:g} x at 100 VMs",
        "met": ratio < TARGET_RATIO,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    quick = "fewer repetitions: 5 passes, a 5 s window, 3 x 100 heartbeats (still 1,000 VMs)"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (server log)")
    args = parser.parse_args(argv)
    args.passes, args.window = (5, 5.0) if args.quick else (20, 15.0)
    args.rounds, args.beats = (3, 100) if args.quick else (5, 400)
    return args


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data_dir, fabric_dir = root / "data", root / "fabric"
    data_dir.mkdir()
    db = Database(default_url(data_dir))
    migrate.upgrade(db)
    fabric = Fabric(fabric_dir)
    started = time.monotonic()
    tokens = seed(db, fabric, root)
    log(f"seeded {NODES * VMS_PER_NODE} VMs in {time.monotonic() - started:.1f}s")
    server = ServerProcess(data_dir, heartbeat=HEARTBEAT, log=log, fabric_dir=fabric_dir)
    agents: Agents | None = None
    try:
        server.connect()
        configs = [AgentConfig(server_url=server.url, node=node, token_file=token,
                               state_dir=root / f"{node}-state", fabric_dir=fabric_dir,
                               sim_latency=0.01, vcpus=HOST_VCPUS, memory_mb=HOST_MEMORY_MB)
                   for node, token in tokens.items()]  # fmt: skip
        agents = Agents(configs)
        agents.start()
        live = measure_live(args, db, server)
    finally:
        if agents is not None:
            agents.stop()
        server.stop()
        db.dispose()
    live["heartbeat_no_change"] = measure_heartbeat(args, data_dir, fabric)
    return live


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_format = "[%(threadName)s] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=log_format)

    raise_on_sigterm()
    started = time.time()
    root = Path(tempfile.mkdtemp(prefix="bollard-bench-reconcile-"))
    results: dict[str, Any] = {}
    try:
        results = run(args, root)
    except (BenchError, OSError, httpx.HTTPError) as exc:
        log(f"failed: {exc}")
        results = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    met = "error" not in results and all(r["met"] for r in results.values() if "met" in r)
    parameters = {"quick": args.quick, "nodes": NODES, "vms_per_node": VMS_PER_NODE,
                  "vm": {"vcpus": VM_VCPUS, "memory_mb": VM_MEMORY_MB},
                  "heartbeat_seconds": HEARTBEAT, "passes": args.passes,
                  "window_seconds": args.window, "rounds": args.rounds,
                  "heartbeats_per_round": args.beats}  # fmt: skip
    targets = {"full_pass_p90_seconds": TARGET_PASS_SECONDS,
               "heartbeat_cpu_ratio_1000_vs_100": TARGET_RATIO}  # fmt: skip
    report = {
        "benchmark": "reconcile",
        "measures": "seconds of a full state-reconciliation pass over 1,000 VMs on 10 sim "
        "nodes; server CPU per heartbeat that changes nothing",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "versions": versions(sqlite=sqlite3.sqlite_version),
        "setup": {
            "vms": "seeded: database rows written with bollard.store (nodes.create, vms.create "
            "then vms.end_task -> ACTIVE, desired running) and the same VMs running in the sim "
            "fabric (SimHost.put_vm); not created through the API",
            "server": "`python -m bollard server` subprocess, SQLite (WAL) in a temporary "
            "data dir, default settings",
            "agents": f"{NODES} real sim agents (run_agent_async) in one thread of the "
            "benchmark process, each with its own WebSocket; full reports received "
            "(inventory_known) and 0 differences before measuring",
        },
        "parameters": parameters,
        "results": results,
        "targets": targets,
        "met": met,
    }
    write_report(report, args.output, log)
    return 1 if "error" in results else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; the server and the agents were stopped")
        sys.exit(130)
