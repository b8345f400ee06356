"""Scale benchmark: one server carrying N hosts x 40 VMs, heartbeats every 5 s.

For each N (100, 500, 1,000, 2,500; ``--quick``: 100, 500): the database is seeded with N
nodes and N x 40 VMs (store functions: creating 100,000 VMs through the API would take far
longer than the measurement; ``throughput`` measures that path), the server starts on it, and
``bollard fleet --adopt`` plays the N hosts: N agent sessions over real WebSockets in one
other process, each host with its 40 VMs running in the in-memory hypervisor. Once every
host has sent its full report and the reconciler finds nothing to fix, with the fleet
heartbeating:

- ``steady``: the server's CPU (fraction of one core, from /proc over ``--window`` seconds)
  and RSS, and heartbeat processing latency p50/p99 (the server's
  ``bollard_heartbeat_seconds`` histogram over the same window: from a heartbeat's arrival
  to its report stored; quantiles interpolated within buckets);
- ``api``: ``GET /api/v1/vms?limit=100`` (walking pages) and ``GET /api/v1/vms/NAME``
  (random names), sequential requests from this process while the fleet heartbeats: p50/p99
  of the round trip;
- ``reconcile``: ``GET /api/v1/reconcile`` (a full state-reconciliation pass over every VM
  and host): the server-side pass seconds.

Targets at 2,500 x 40: CPU < 1 core, heartbeat p99 < 100 ms, API p99 < 200 ms, full pass
< 2 s. JSON to stdout and ``bench/results/scale.json``; progress on stderr.

    python bench/scale.py [--quick] [--nodes 100,500] [--window S] [--output FILE] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    RESULTS_DIR,
    BenchError,
    FleetProcess,
    ServerProcess,
    base_parser,
    histogram,
    histogram_count,
    histogram_quantile,
    histogram_top,
    make_log,
    percentile,
    report_head,
    run_main,
    scrape,
    scratch_dir,
    stats,
    wait_for,
    write_report,
)

from bollard.domain.states import DesiredPower, VmState
from bollard.server.auth import hash_token, new_token
from bollard.store import migrate, nodes, vms
from bollard.store.db import Database, default_url

DEFAULT_OUTPUT = RESULTS_DIR / "scale.json"
FULL_NODES, QUICK_NODES = (100, 500, 1000, 2500), (100, 500)
VMS_PER_NODE, HEARTBEAT = 40, 5.0
VM_VCPUS, VM_MEMORY_MB, HOST_VCPUS, HOST_MEMORY_MB = 1, 512, 64, 262144
TARGETS = {
    "server_cpu_cores": 1.0,
    "heartbeat_p99_ms": 100.0,
    "api_p99_ms": 200.0,
    "full_pass_seconds": 2.0,
}
TARGET_AT = 2500

log = make_log("scale")


def seed(db: Database, count: int, root: Path) -> Path:
    """N nodes with 40 running VMs each, written with the store functions; the nodes'
    tokens go to a 0600 JSON file for ``bollard fleet --adopt``."""
    now = datetime.now(UTC)
    tokens: dict[str, str] = {}
    for n in range(1, count + 1):
        node, token = f"host-{n:04d}", new_token()
        tokens[node] = token
        with db.write() as conn:
            nodes.create(conn, node, hash_token(token), now)
            for i in range(1, VMS_PER_NODE + 1):
                vm_uuid, task = str(uuid.uuid4()), str(uuid.uuid4())
                vms.create(
                    conn,
                    uuid=vm_uuid,
                    name=f"{node}-vm{i:03d}",
                    node=node,
                    vcpus=VM_VCPUS,
                    memory_mb=VM_MEMORY_MB,
                    desired_power=DesiredPower.RUNNING,
                    task_id=task,
                    now=now,
                )
                vms.end_task(conn, vm_uuid, task, now, vm_state=VmState.ACTIVE)
            nodes.adjust_allocation(
                conn, node, VMS_PER_NODE * VM_VCPUS, VMS_PER_NODE * VM_MEMORY_MB
            )
    path = root / "tokens.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(tokens))
    return path


def all_reported(client: httpx.Client, count: int) -> bool:
    known, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/nodes", params=params).raise_for_status().json()
        known += sum(1 for n in page["items"] if n["inventory_known"] and n["connected"])
        cursor = page.get("next_cursor")
        if not cursor:
            return known == count


def timed(call: Any) -> float:
    started = time.perf_counter()
    call().raise_for_status()
    return time.perf_counter() - started


def measure(
    client: httpx.Client, server: ServerProcess, count: int, args: argparse.Namespace
) -> dict[str, Any]:
    # steady state: server CPU, RSS and heartbeat latency over the window
    text = scrape(server)
    gc0 = histogram(text, "bollard_gc_pause_seconds", generation="2")
    before, cpu0, own0, wall0 = (
        histogram(text, "bollard_heartbeat_seconds"),
        server.cpu_seconds(),
        server.own_cpu_seconds(),
        time.monotonic(),
    )
    deadline = wall0 + args.window
    while time.monotonic() < deadline:  # the measurement window; the server is watched
        server.alive()
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    text = scrape(server)
    gc1 = histogram(text, "bollard_gc_pause_seconds", generation="2")
    after, cpu1, own1, wall1 = (
        histogram(text, "bollard_heartbeat_seconds"),
        server.cpu_seconds(),
        server.own_cpu_seconds(),
        time.monotonic(),
    )
    wall = wall1 - wall0
    beats = histogram_count(before, after)

    def ms(q: float) -> float | None:
        value = histogram_quantile(before, after, q)
        return None if value is None else round(value * 1000, 2)

    steady = {
        "window_seconds": round(wall, 1),
        # The server with its scan worker process; then the server's own process alone.
        "server_cpu_cores": round((cpu1 - cpu0) / wall, 3),
        "server_process_cpu_cores": round((own1 - own0) / wall, 3),
        "server_rss_mb": server.rss_mb(),
        "scan_worker_rss_mb": server.children_rss_mb(),
        "heartbeats": int(beats),
        "heartbeats_per_second": round(beats / wall, 1),
        "heartbeat_p50_ms": ms(0.5),
        "heartbeat_p99_ms": ms(0.99),
        # The server's full garbage collections in the window (nothing else runs meanwhile):
        # how many, and the bucket bound of the longest (docs/performance.md, fix #11).
        "gc_full_collections": int(histogram_count(gc0, gc1)),
        "gc_full_longest_s_at_most": histogram_top(gc0, gc1),
    }
    log(f"N={count}: steady {steady}")
    # the API under the heartbeat load
    rng = random.Random(count)
    names = [
        f"host-{rng.randint(1, count):04d}-vm{rng.randint(1, VMS_PER_NODE):03d}"
        for _ in range(args.requests)
    ]
    pages, cursor = [], None
    for _ in range(args.requests):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        page = client.get("/vms", params=params).raise_for_status().json()
        pages.append(time.perf_counter() - started)
        cursor = page.get("next_cursor")
    shows = [timed(lambda n=n: client.get(f"/vms/{n}")) for n in names]
    api = {
        "list_page_ms": stats(pages, 1000, 2) | {"p99": percentile(pages, 0.99, 1000)},
        "show_ms": stats(shows, 1000, 2) | {"p99": percentile(shows, 0.99, 1000)},
        "requests": args.requests,
    }
    log(f"N={count}: api {api}")
    passes = []
    for _ in range(args.passes):
        found = client.get("/reconcile", timeout=300).raise_for_status().json()
        passes.append(found["seconds"])
    reconcile = {
        "passes": args.passes,
        "seconds": stats(passes, 1, 3),
        "checked_vms": found["checked_vms"],
        "scanned_in": found.get("scanned_in"),
        "differences": len(found["differences"]),
    }
    log(f"N={count}: reconcile {reconcile}")
    return {"steady": steady, "api": api, "reconcile": reconcile}


def run_one(count: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data_dir = root / f"n{count}"
    data_dir.mkdir()
    db = Database(default_url(data_dir))
    migrate.upgrade(db)
    began = time.monotonic()
    tokens = seed(db, count, root)
    db.dispose()
    seeded = time.monotonic() - began
    log(f"N={count}: seeded {count} nodes, {count * VMS_PER_NODE} VMs in {seeded:.0f}s")
    server = ServerProcess(data_dir, heartbeat=HEARTBEAT, log=log)
    fleet: FleetProcess | None = None
    try:
        client = server.connect()
        fleet = FleetProcess(
            server,
            [
                "--adopt",
                str(tokens),
                "--host-vcpus",
                str(HOST_VCPUS),
                "--host-memory",
                str(HOST_MEMORY_MB),
            ],
            root,
        )
        running = fleet.wait_phase("running", 120 + count * 0.1)
        wait_for(
            "every host reported its VMs",
            lambda: all_reported(client, count),
            120 + count * 0.05,
            1.0,
        )
        wait_for(
            "the reconciler finds nothing",
            lambda: (
                not client.get("/reconcile", timeout=300).raise_for_status().json()["differences"]
            ),
            60 + count * 0.05,
            1.0,
        )
        time.sleep(
            args.warmup
        )  # let the first full reports' aftermath settle (a measurement protocol)
        result = measure(client, server, count, args)
        fleet_status = fleet.status()
        result["fleet"] = {
            "connect_seconds": running.get("connect_seconds"),
            "rss_mb": fleet_status["process"]["rss_mb"],
            "rss_kb_per_agent": round(fleet_status["process"]["rss_mb"] * 1024 / count, 1),
        }
        result["seed_seconds"] = round(seeded, 1)
        return {"nodes": count, "vms": count * VMS_PER_NODE, **result}
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = next((r for r in rows if r.get("nodes") == TARGET_AT and "steady" in r), None)
    if row is None:
        return {"measured_at": None, "note": f"targets apply at {TARGET_AT} nodes (not run)"}
    got = {
        "server_cpu_cores": row["steady"]["server_cpu_cores"],
        "heartbeat_p99_ms": row["steady"]["heartbeat_p99_ms"],
        "api_p99_ms": max(row["api"]["list_page_ms"]["p99"], row["api"]["show_ms"]["p99"]),
        "full_pass_seconds": row["reconcile"]["seconds"]["max"],
    }
    return {
        k: {"measured": v, "target": TARGETS[k], "met": v is not None and v < TARGETS[k]}
        for k, v in got.items()
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="N in 100, 500; shorter windows")
    parser.add_argument("--nodes", help="comma-separated N (default 100,500,1000,2500)")
    parser.add_argument("--window", type=float, help="steady-state window, seconds")
    args: argparse.Namespace = parser.parse_args(argv)
    counts = args.nodes.split(",") if args.nodes else (QUICK_NODES if args.quick else FULL_NODES)
    args.counts = [int(c) for c in counts]
    args.window = args.window or (20.0 if args.quick else 60.0)
    args.warmup = 2 * HEARTBEAT
    args.requests = 100 if args.quick else 300
    args.passes = 3 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    rows: list[dict[str, Any]] = []
    failed = False
    with scratch_dir("bollard-bench-scale-", args.keep, log) as root:
        for count in args.counts:
            try:
                rows.append(run_one(count, args, root))
            except (BenchError, OSError, httpx.HTTPError) as exc:
                log(f"N={count} failed: {exc}")
                rows.append({"nodes": count, "error": f"{type(exc).__name__}: {exc}"})
                failed = True
    measures = (
        "server CPU and RSS at steady state, heartbeat processing p50/p99, API "
        "p50/p99 under load, full reconciliation pass, for N hosts x 40 VMs"
    )
    report = {
        **report_head("scale", measures, started),
        "setup": {
            "server": "`python -m bollard server` subprocess, SQLite (WAL, synchronous=FULL) in "
            f"a temporary data dir, heartbeat {HEARTBEAT:g}s, default settings",
            "vms": "seeded with bollard.store (ACTIVE, desired running); the fleet defines "
            "and starts them on its in-memory hosts (`bollard fleet --adopt`)",
            "fleet": "one `bollard fleet` process on the same machine: N agent sessions, one "
            "WebSocket each",
        },
        "parameters": {
            "quick": args.quick,
            "nodes": args.counts,
            "vms_per_node": VMS_PER_NODE,
            "heartbeat_seconds": HEARTBEAT,
            "window_seconds": args.window,
            "api_requests": args.requests,
            "reconcile_passes": args.passes,
        },
        "results": rows,
        "targets": verdict(rows),
    }
    write_report(report, args.output, log)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, log)
