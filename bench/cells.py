"""Cells benchmark: one API server in front of 4 cells x 1,000 hosts x 40 VMs (160,000 VMs).

Each cell is a real ``bollard server`` process with a database of its own: a PostgreSQL
database created for the run (and dropped after it) when 127.0.0.1:5432 answers, else a
SQLite file in its data dir (``--db`` chooses). Each cell's database is seeded as in
``scale.py`` (store functions; node names unique across cells: ``c1-n0001``, VMs
``c1-n0001-vm001``), and one ``bollard fleet --adopt`` per cell plays its hosts, heartbeating
every 5 s. One ``bollard api`` process (its API database on the same kind of database) gets the
cells registered (``POST /api/v1/cells`` with each cell's admin token from its data dir), and
the benchmark waits until ``GET /api/v1/cells`` shows every node and VM mapped.

VM mappings (``--mappings``): by default (``discover``) the API server learns them itself:
its discovery pass lists every VM of every cell every 6th pass (every 60 s at the default
``--discover-interval`` of 10 s), and the benchmark waits for that first full sweep and
reports how long it took (``mapped_vms_seconds``). That is the path a real deployment takes,
and the sweep keeps running every minute during the measurement anyway, so waiting for it
costs a minute or two and checks that the sweep copes with 40,000 VMs a cell. ``seed``
writes them into the API database with ``bollard.store.cells.map_vm`` before the API server
starts, for when the discovery sweep is what is being changed or is broken.

Measured through the API server while the fleets heartbeat:

- ``steady``: CPU (fraction of one core, from /proc, sampled every second: the window's mean
  and the highest one-second figure) and RSS (highest sample) of each cell server (with its
  scan worker process) and of the API server, over ``--window`` seconds with no API request
  (the API server's own work: checking the cells and its discovery passes); each cell's
  heartbeat processing p50/p99 (its ``bollard_heartbeat_seconds`` histogram);
- ``api``: ``GET /api/v1/vms?limit=100`` walking pages, ``GET /api/v1/vms/NAME`` of random
  names and ``GET /api/v1/nodes?limit=100`` walking pages, sequential requests from this
  process: p50/p99 of the round trip, with the CPU of every server meanwhile; and, for
  comparison, the same list and show requests sent to one cell server directly.

Targets (issue 20): list and show p99 < 200 ms through the API server; each cell server
< 1 core and < 1 GiB (the server with its scan worker); the API server < 1 core and < 512 MiB.
JSON to stdout and ``bench/results/cells.json``; progress on stderr.

    python bench/cells.py [--quick] [--cells 4] [--hosts 1000] [--db auto|sqlite|postgresql]
        [--mappings discover|seed] [--window S] [--requests N] [--output FILE] [--keep]

``--quick``: 2 cells x 100 hosts, shorter windows. ``BOLLARD_BENCH_PROFILE_API=FILE`` runs
the API server under a stack sampler (a thread of its own, every 5 ms) that writes the hot
functions to FILE (and FILE.folded) when it stops: a diagnosis aid, it costs CPU itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    RESULTS_DIR,
    BenchError,
    ServerProcess,
    base_parser,
    report_head,
    run_main,
    scratch_dir,
    wait_for,
    write_report,
)
from cells_measure import api_load, steady, watch
from cells_world import (
    HEARTBEAT,
    VMS_PER_NODE,
    ApiProcess,
    Cell,
    Databases,
    log,
    mapped,
    pg_unreachable,
    register,
    seed,
    seed_mappings,
    settled,
    start_cell,
)

from bollard.store.db import default_url

DEFAULT_OUTPUT = RESULTS_DIR / "cells.json"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
FULL, QUICK = (4, 1000), (2, 100)  # cells, hosts per cell
DISCOVER_INTERVAL = 10.0  # the API server's default
TARGETS = {
    "api_list_p99_ms": 200.0,
    "api_show_p99_ms": 200.0,
    "cell_cpu_cores": 1.0,
    "cell_rss_mb": 1024.0,
    "api_cpu_cores": 1.0,
    "api_rss_mb": 512.0,
}
PROFILE_ENV = "BOLLARD_BENCH_PROFILE_API"


# --- the run ---------------------------------------------------------------------------------


def start_all(cells_: list[Cell], dbs: Databases, args: argparse.Namespace) -> dict[str, Any]:
    timings: dict[str, Any] = {}
    for cell in cells_:
        cell.db_url = dbs.url(cell.name, default_url((cell.dir / "data").resolve()))
        (cell.dir / "data").mkdir(mode=0o700)
    began = time.monotonic()
    made: dict[str, dict[str, str]] = {}
    with ProcessPoolExecutor(max_workers=min(2, len(cells_))) as pool:
        futures = {c.name: pool.submit(seed, c.db_url, c.prefix, c.hosts, c.tokens) for c in cells_}
        for name, future in futures.items():
            made[name] = future.result()
            log(f"{name}: seeded {len(made[name])} VMs")
    timings["seed_seconds"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    for cell in cells_:
        start_cell(cell)
    timings["cells_started_seconds"] = round(time.monotonic() - began, 1)
    for cell in cells_:
        wait_for(f"{cell.name}'s reconciler finds nothing", partial(settled, cell), 300, 2.0)
    args.made = made
    return timings


def run(args: argparse.Namespace, root: Path, dbs: Databases) -> dict[str, Any]:
    cells_ = [Cell(i, args.hosts, root) for i in range(1, args.cells + 1)]
    api: ApiProcess | None = None
    try:
        timings = start_all(cells_, dbs, args)
        api_dir = root / "api"
        api_dir.mkdir(mode=0o700)
        api_url = dbs.url("api", f"sqlite:///{(api_dir / 'bollard-api.db').resolve()}")
        if args.mappings == "seed":
            seed_mappings(api_url, args.made)
        api = ApiProcess(
            api_dir, db_url=api_url, discover_interval=args.discover_interval,
            profile=os.environ.get(PROFILE_ENV),
        )  # fmt: skip
        api.connect()
        registered = time.monotonic()
        for cell in cells_:
            wait_for(f"{cell.name} is registered", partial(register, api, cell), 300, 5.0)
        want = {c.name: (c.hosts, c.hosts * VMS_PER_NODE) for c in cells_}
        wait_for("the API server mapped every node", lambda: mapped(api, want, 0), 300, 1.0)
        timings["mapped_nodes_seconds"] = round(time.monotonic() - registered, 1)
        wait_for("the API server mapped every VM", lambda: mapped(api, want, 1), 900, 2.0)
        timings["mapped_vms_seconds"] = round(time.monotonic() - registered, 1)
        log(f"mapped: {timings}")
        procs: dict[str, ServerProcess] = {c.name: c.server for c in cells_ if c.server}
        procs["api"] = api
        watch(procs, args.warmup)  # let the mapping's aftermath settle (a measurement protocol)
        profile_mark(api, "start-up")
        quiet = steady(cells_, procs, args.window)
        log(f"steady: {quiet}")
        profile_mark(api, "steady window")
        load = api_load(api, cells_, procs, args.requests)
        log(f"api: {load}")
        profile_mark(api, "API requests")
        fleets = {c.name: c.fleet.status()["process"]["rss_mb"] for c in cells_ if c.fleet}
        return {"timings": timings, "steady": quiet, "api": load, "fleet_rss_mb": fleets}
    finally:
        if api is not None:
            api.stop()
        for cell in cells_:
            cell.stop()


def profile_mark(api: ApiProcess, phase: str) -> None:
    """With BOLLARD_BENCH_PROFILE_API: the API server writes what it sampled since the last
    mark (the ``phase``) to FILE.N."""
    output = os.environ.get(PROFILE_ENV)
    if output:
        api.marks += 1
        api.proc.send_signal(signal.SIGUSR1)
        log(f"API server profile of the {phase}: {output}.{api.marks}")


def verdict(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    if "steady" not in result:
        return {"note": "not measured (the run failed)"}
    procs, api = result["steady"]["processes"], result["api"]
    got = {
        "api_list_p99_ms": api["list_page_ms"]["p99"],
        "api_show_p99_ms": api["show_ms"]["p99"],
        "cell_cpu_cores": max(procs[n]["cpu_cores"] for n in names),
        "cell_rss_mb": max(procs[n]["rss_mb_max"] for n in names),
        "api_cpu_cores": procs["api"]["cpu_cores"],
        "api_rss_mb": procs["api"]["rss_mb_max"],
    }
    return {
        k: {"measured": v, "target": TARGETS[k], "met": v is not None and v < TARGETS[k]}
        for k, v in got.items()
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="2 cells x 100 hosts")
    parser.add_argument("--cells", type=int, help="cells (default 4)")
    parser.add_argument("--hosts", type=int, help="hosts per cell (default 1000)")
    parser.add_argument("--db", choices=("auto", "sqlite", "postgresql"), default="auto")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server (admin URL)")
    parser.add_argument("--mappings", choices=("discover", "seed"), default="discover")
    parser.add_argument("--window", type=float, help="steady window, seconds")
    parser.add_argument("--requests", type=int, help="requests of each kind")
    args: argparse.Namespace = parser.parse_args(argv)
    count, hosts = QUICK if args.quick else FULL
    args.cells, args.hosts = args.cells or count, args.hosts or hosts
    args.window = args.window or (30.0 if args.quick else 90.0)
    args.requests = args.requests or (100 if args.quick else 300)
    args.warmup = 2 * HEARTBEAT
    args.discover_interval = DISCOVER_INTERVAL
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    why = None if args.db == "sqlite" else pg_unreachable(args.pg)
    if why is not None and args.db == "postgresql":
        raise BenchError(f"--db postgresql: {why}")
    kind = "postgresql" if why is None and args.db != "sqlite" else "sqlite"
    log(f"{args.cells} cells x {args.hosts} hosts x {VMS_PER_NODE} VMs on {kind}")
    dbs = Databases(kind, args.pg)
    failed = False
    with scratch_dir("bollard-bench-cells-", args.keep, log) as root:
        try:
            result = run(args, root, dbs)
        except (BenchError, OSError, httpx.HTTPError) as exc:
            log(f"failed: {exc}")
            result, failed = {"error": f"{type(exc).__name__}: {exc}"}, True
        finally:
            if args.keep and dbs.created:
                log(f"kept the PostgreSQL databases {dbs.created}")
            else:
                dbs.drop()
    names = [f"cell{i}" for i in range(1, args.cells + 1)]
    report = {
        **report_head(
            "cells",
            "through an API server in front of cells: list and show p50/p99, and CPU and RSS "
            "of every cell server and of the API server, cells x hosts x 40 VMs",
            started,
        ),
        "setup": {
            "cells": f"{args.cells} `python -m bollard server` subprocesses, each with its own "
            f"{kind} database, heartbeat {HEARTBEAT:g}s, default settings",
            "api": f"one `python -m bollard api` subprocess, {kind} API database, discovery "
            f"every {args.discover_interval:g}s (every VM listed every 6th pass)",
            "vms": "seeded with bollard.store in each cell (ACTIVE, desired running); one "
            "`bollard fleet --adopt` process per cell plays its hosts",
            "mappings": "learnt by the API server's discovery pass"
            if args.mappings == "discover"
            else "seeded with bollard.store.cells.map_vm",
            "database": kind if why is None or args.db == "sqlite" else f"sqlite ({why})",
        },
        "parameters": {
            "quick": args.quick,
            "cells": args.cells,
            "hosts_per_cell": args.hosts,
            "vms_per_node": VMS_PER_NODE,
            "vms": args.cells * args.hosts * VMS_PER_NODE,
            "window_seconds": args.window,
            "api_requests": args.requests,
            "mappings": args.mappings,
        },
        "results": result,
        "targets": verdict(result, names),
    }
    write_report(report, args.output, log)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, log)
