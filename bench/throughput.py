"""Throughput benchmark: VMs created and started per second through the whole stack, beside
the raw commit rate of the same database measured in the same run.

For SQLite (the embedded default) and PostgreSQL (``--pg URL``, default the local server;
skipped with the reason when it cannot be reached): the raw rate is single-row INSERT
transactions, one after another on one connection, with the server's own settings (SQLite:
WAL, synchronous=FULL). Then a fresh server runs on a fresh database, ``bollard fleet``
enrolls 20 in-memory hosts and creates VMs with 100 concurrent API clients, each ``POST
/api/v1/vms`` with ``start`` (API -> task -> define and start commands -> agent -> answers ->
database) followed by a long poll of the task until it ends; the rate is VMs ACTIVE per
second over the whole creation. Target: at least 25% of the raw commit rate.

With ``--batch N`` each client creates N VMs of a host at once (``POST /api/v1/vms/batch``:
the N VMs and their tasks in one transaction), then long-polls each task.

    python bench/throughput.py [--quick] [--batch N] [--pg URL | --no-pg] [--output FILE] [--keep]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import uuid
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
    report_head,
    run_main,
    scratch_dir,
    write_report,
)

DEFAULT_OUTPUT = RESULTS_DIR / "throughput.json"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
NODES, CLIENTS, HEARTBEAT, TARGET_RATIO = 20, 100, 5.0, 0.25
RAW_SECONDS = 3.0

log = make_log("throughput")


def raw_sqlite(root: Path, seconds: float) -> dict[str, Any]:
    conn = sqlite3.connect(root / "raw.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 64,))
            conn.execute("COMMIT")
            done += 1
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return {"commits": done, "seconds": round(elapsed, 2), "per_second": round(done / elapsed, 1)}


def raw_pg(url: str, seconds: float) -> dict[str, Any]:
    import psycopg

    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id SERIAL PRIMARY KEY, v TEXT)")
        try:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", ("x" * 64,))
                done += 1
            elapsed = time.perf_counter() - started
        finally:
            conn.execute(f"DROP TABLE {table}")
    return {"commits": done, "seconds": round(elapsed, 2), "per_second": round(done / elapsed, 1)}


class PgDatabase:
    """A database of its own on the PostgreSQL server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin_url = admin_url
        self.name = f"bollard_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        base = admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def through_stack(
    root: Path, vms_per_node: int, db_url: str | None, batch: int = 1
) -> dict[str, Any]:
    server = ServerProcess(root, heartbeat=HEARTBEAT, log=log, db_url=db_url)
    fleet: FleetProcess | None = None
    try:
        server.connect()
        args = ["--nodes", str(NODES), "--vms-per-node", str(vms_per_node),
                "--concurrency", str(CLIENTS), "--duration", "0",
                "--batch", str(batch)]  # fmt: skip
        fleet = FleetProcess(server, args, root)
        total = NODES * vms_per_node
        status = fleet.wait_phase("stopped", 120 + total)
        cpu = server.cpu_seconds()
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()
    if status["vms_failed"]:
        raise BenchError(f"{status['vms_failed']} VMs failed: {status.get('create_errors')}")
    created = status["vms_created"]
    return {"vms": created, "seconds": status["create_seconds"],
            "per_second": status["create_rate"], "server_cpu_seconds": round(cpu, 1),
            "server_cpu_ms_per_vm": round(cpu * 1000 / max(1, created), 1)}  # fmt: skip


def measure(kind: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = root / kind
    work.mkdir()
    pg: PgDatabase | None = None
    try:
        if kind == "sqlite":
            raw = raw_sqlite(work, RAW_SECONDS)
            stack = through_stack(work, args.vms_per_node, None, args.batch)
        else:
            raw = raw_pg(args.pg, RAW_SECONDS)
            pg = PgDatabase(args.pg)
            stack = through_stack(work, args.vms_per_node, pg.url, args.batch)
    finally:
        if pg is not None:
            pg.drop()
    ratio = stack["per_second"] / raw["per_second"]
    row = {"raw_commits": raw, "vm_create_start": stack, "ratio": round(ratio, 4),
           "target_ratio": TARGET_RATIO, "met": ratio >= TARGET_RATIO}  # fmt: skip
    log(f"{kind}: {stack['per_second']} VMs/s vs {raw['per_second']} commits/s: ratio {ratio:.3f}")
    return row


def pg_reachable(url: str) -> str | None:
    """None if PostgreSQL answers; else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip it, with the reason
        return f"{type(exc).__name__}: {exc}".strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser(__doc__, DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="10 VMs per host instead of 50")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server (admin URL)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument(
        "--batch", type=int, default=1, help="VMs a client creates at once (POST /vms/batch)"
    )
    args: argparse.Namespace = parser.parse_args(argv)
    args.vms_per_node = 10 if args.quick else 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    results: dict[str, Any] = {}
    failed = False
    kinds = ["sqlite"]
    if args.no_pg:
        results["postgresql"] = {"skipped": "--no-pg"}
    elif (why := pg_reachable(args.pg)) is not None:
        results["postgresql"] = {"skipped": f"PostgreSQL not reachable: {why}"}
        log(f"PostgreSQL skipped: {why}")
    else:
        kinds.append("postgresql")
    with scratch_dir("bollard-bench-throughput-", args.keep, log) as root:
        for kind in kinds:
            try:
                results[kind] = measure(kind, root, args)
            except (BenchError, OSError, httpx.HTTPError) as exc:
                log(f"{kind} failed: {exc}")
                results[kind] = {"error": f"{type(exc).__name__}: {exc}"}
                failed = True
    measures = (
        "VM create+start to ACTIVE through the whole stack, per second, with "
        f"{CLIENTS} concurrent API clients; beside the raw single-row commit rate"
    )
    report = {
        **report_head("throughput", measures, started),
        "parameters": {
            "quick": args.quick,
            "nodes": NODES,
            "vms_per_node": args.vms_per_node,
            "clients": CLIENTS,
            "batch": args.batch,
            "heartbeat_seconds": HEARTBEAT,
            "raw_seconds": RAW_SECONDS,
        },
        "results": results,
    }
    write_report(report, args.output, log)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, log)
