"""Latency benchmark: command round trip (server -> agent -> answer stored) with 1,000 agents
connected.

A server runs on SQLite; ``bollard fleet`` connects 1,000 in-memory hosts (``--quick``: 1,000
too, fewer operations). This process then creates VMs through the API on some of them and
stops and starts each VM a few times, ``--clients`` operations at once; every operation is a
task with one command per step. A command's round trip is read from the server's own record
of it (``command_history``): from the moment it was SENT on the agent's WebSocket to the
moment its answer was stored (COMPLETED or FAILED). Reported: p50/p99 over every command,
and by type. While this runs, the 1,000 agents heartbeat every 5 s.

    python bench/latency.py [--quick] [--agents N] [--output FILE] [--keep]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    RESULTS_DIR,
    BenchError,
    FleetProcess,
    ServerProcess,
    base_parser,
    make_log,
    percentile,
    report_head,
    run_main,
    scratch_dir,
    stats,
    write_report,
)

DEFAULT_OUTPUT = RESULTS_DIR / "latency.json"
HEARTBEAT, TASK_TIMEOUT = 5.0, 120.0

log = make_log("latency")


def run_task(client: httpx.Client, method: str, path: str, body: dict[str, Any]) -> None:
    answer = client.request(method, path, json=body).raise_for_status().json()
    task_id = answer["task"]["id"]
    deadline = time.monotonic() + TASK_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"task {task_id} ({method} {path}) did not end in {TASK_TIMEOUT}s")
        task = client.get(f"/tasks/{task_id}/wait", params={"timeout": min(30.0, remaining)})
        state = task.raise_for_status().json()["state"]
        if state == "succeeded":
            return
        if state in ("failed", "rolled_back", "needs_attention"):
            raise BenchError(f"task {task_id} ({method} {path}) ended {state}")


def operate(server: ServerProcess, args: argparse.Namespace) -> float:
    """Create the VMs and cycle them; the seconds it took."""
    client = server.client
    assert client is not None
    hosts = [f"fleet-{i:04d}" for i in range(1, args.agents + 1)]
    step = max(1, len(hosts) // args.vms)
    targets = [(f"lat-{i:03d}", hosts[(i * step) % len(hosts)]) for i in range(args.vms)]
    started = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        body = {"vcpus": 1, "memory_mb": 256, "start": True}
        creates = [pool.submit(run_task, client, "POST", "/vms", {**body, "name": n, "node": h})
                   for n, h in targets]  # fmt: skip
        for future in creates:
            future.result()
        for cycle in range(args.cycles):
            for op in ("stop", "start"):
                done = [pool.submit(run_task, client, "POST", f"/vms/{n}/{op}", {})
                        for n, _ in targets]  # fmt: skip
                for future in done:
                    future.result()
            log(f"cycle {cycle + 1}/{args.cycles} done")
    return time.monotonic() - started


def round_trips(db_file: Path) -> dict[str, list[float]]:
    """Seconds from SENT to the answer stored, per command type (the server's record)."""
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT c.id, c.type, h.to_state, h.at FROM commands c "
            "JOIN command_history h ON h.command_id = c.id ORDER BY h.id"
        ).fetchall()
    finally:
        conn.close()
    sent: dict[str, datetime] = {}
    by_type: dict[str, list[float]] = defaultdict(list)
    for command_id, kind, state, at in rows:
        stamp = datetime.fromisoformat(at)
        if state == "SENT":
            sent[command_id] = stamp
        elif state in ("COMPLETED", "FAILED") and command_id in sent:
            by_type[kind].append((stamp - sent.pop(command_id)).total_seconds())
    return by_type


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="fewer VMs and cycles")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10, help="operations at once")
    args: argparse.Namespace = parser.parse_args(argv)
    args.vms, args.cycles = (50, 2) if args.quick else (200, 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    with scratch_dir("bollard-bench-latency-", args.keep, log) as root:
        results = measure(args, root)
    measures = (
        "command round trip, SENT to answer stored, from the server's command "
        f"history, with {args.agents} agents connected"
    )
    report = {
        **report_head("latency", measures, started),
        "parameters": {
            "quick": args.quick,
            "agents": args.agents,
            "vms": args.vms,
            "cycles": args.cycles,
            "clients": args.clients,
            "heartbeat_seconds": HEARTBEAT,
        },
        "results": results,
    }
    write_report(report, args.output, log)
    return 1 if "error" in results else 0


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = ServerProcess(root, heartbeat=HEARTBEAT, log=log)
    fleet: FleetProcess | None = None
    try:
        server.connect()
        fleet = FleetProcess(server, ["--nodes", str(args.agents), "--vms-per-node", "0"], root)
        running = fleet.wait_phase("running", 120 + args.agents * 0.1)
        log(f"{args.agents} agents connected in {running.get('connect_seconds')}s")
        seconds = operate(server, args)
        connected = server.client.get("/status").raise_for_status().json()["nodes"]["connected"]
        fleet.stop()
        fleet = None
        server.stop()
        by_type = round_trips(root / "bollard.db")
        every = [s for values in by_type.values() for s in values]
        if not every:
            raise BenchError("no command round trip found in the server's records")

        def summary(values: list[float]) -> dict[str, Any]:
            p99 = percentile(values, 0.99, 1000)
            return {"count": len(values), **stats(values, 1000, 2), "p99": p99}

        results = {"agents_connected": connected, "operations_seconds": round(seconds, 1),
                   "round_trip_ms": summary(every),
                   "by_type_ms": {k: summary(v) for k, v in sorted(by_type.items())}}  # fmt: skip
        log(f"round trip: {results['round_trip_ms']}")
    except (BenchError, OSError, httpx.HTTPError) as exc:
        log(f"failed: {exc}")
        results = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()
    return results


if __name__ == "__main__":
    run_main(main, log)
