"""The cells benchmark's world (bench/cells.py): databases, seeding, and the processes (cell
servers, their fleets, the API server)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    BenchError,
    FleetProcess,
    ServerProcess,
    child_env,
    free_port,
    make_log,
    wait_for,
)

from bollard.domain.states import DesiredPower, VmState
from bollard.server.auth import hash_token, new_token
from bollard.store import cells, migrate, nodes, vms
from bollard.store.db import Database

VMS_PER_NODE, HEARTBEAT = 40, 5.0
VM_VCPUS, VM_MEMORY_MB, HOST_VCPUS, HOST_MEMORY_MB = 1, 512, 64, 262144

log = make_log("cells")


# --- databases -------------------------------------------------------------------------------


class Databases:
    """A database per server: on PostgreSQL one created here (dropped by ``drop``), else the
    server's SQLite file in its data dir."""

    def __init__(self, kind: str, admin_url: str) -> None:
        self.kind, self.admin_url = kind, admin_url
        self.run = f"bollard_bench_cells_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def url(self, name: str, sqlite_url: str) -> str:
        if self.kind == "sqlite":
            return sqlite_url
        import psycopg
        from psycopg import sql

        database = f"{self.run}_{name}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        self.created.append(database)
        return f"{self.admin_url.split('?', 1)[0].rsplit('/', 1)[0]}/{database}"

    def drop(self) -> None:
        if not self.created:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for database in self.created:
                query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(query.format(sql.Identifier(database)))
        log(f"dropped the PostgreSQL databases {self.run}_*")


def pg_unreachable(url: str) -> str | None:
    """None if PostgreSQL answers at ``url``; else why not, in one line."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (ImportError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - psycopg.Error and friends: not reachable, say why
        return (f"{type(exc).__name__}: {exc}".strip().splitlines() or ["unknown"])[0]
    return None


def seed(url: str, prefix: str, count: int, tokens_file: Path) -> dict[str, str]:
    """``count`` nodes named ``<prefix>-nNNNN`` with 40 running VMs each (store functions,
    as scale.py); their tokens go to ``tokens_file`` (0600). Returns VM name -> uuid."""
    db = Database(url)
    try:
        migrate.upgrade(db)
        now = datetime.now(UTC)
        tokens: dict[str, str] = {}
        made: dict[str, str] = {}
        for n in range(1, count + 1):
            node, token = f"{prefix}-n{n:04d}", new_token()
            tokens[node] = token
            with db.write() as conn:
                nodes.create(conn, node, hash_token(token), now)
                for i in range(1, VMS_PER_NODE + 1):
                    vm_uuid, task, name = str(uuid.uuid4()), str(uuid.uuid4()), f"{node}-vm{i:03d}"
                    vms.create(
                        conn, uuid=vm_uuid, name=name, node=node, vcpus=VM_VCPUS,
                        memory_mb=VM_MEMORY_MB, desired_power=DesiredPower.RUNNING,
                        task_id=task, now=now,
                    )  # fmt: skip
                    vms.end_task(conn, vm_uuid, task, now, vm_state=VmState.ACTIVE)
                    made[name] = vm_uuid
                nodes.adjust_allocation(
                    conn, node, VMS_PER_NODE * VM_VCPUS, VMS_PER_NODE * VM_MEMORY_MB
                )
    finally:
        db.dispose()
    tokens_file.touch(mode=0o600)
    tokens_file.write_text(json.dumps(tokens))
    return made


def seed_mappings(url: str, made: dict[str, dict[str, str]]) -> None:
    """Every cell's VMs mapped in the API database (``--mappings seed``)."""
    db = Database(url)
    try:
        migrate.upgrade(db)
        now = datetime.now(UTC)
        for cell, names in made.items():
            with db.write() as conn:
                for name, vm_uuid in names.items():
                    cells.map_vm(conn, name, cell, now, uuid=vm_uuid)
    finally:
        db.dispose()


# --- processes -------------------------------------------------------------------------------


class ApiProcess(ServerProcess):
    """``python -m bollard api`` in a subprocess (the rest as ``ServerProcess``); with
    ``profile``, under this script's stack sampler."""

    def __init__(
        self, data_dir: Path, *, db_url: str, discover_interval: float, profile: str | None
    ) -> None:
        self.data_dir, self.log = data_dir, log
        self.port, self.log_file = free_port(), data_dir / "api.log"
        self.url = f"http://127.0.0.1:{self.port}"
        head = [sys.executable, "-m", "bollard"]
        if profile:
            head = [
                sys.executable,
                str(Path(__file__).with_name("stack_sampler.py")),
                profile,
                "--",
            ]
        argv = [*head, "api", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{self.port}",
                "--discover-interval", f"{discover_interval:g}",
                "--log-level", "warning"]  # fmt: skip
        env = child_env()
        env["BOLLARD_API_DB"] = db_url  # not in argv: a URL may hold a password
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.client: Any = None
        self.token = ""
        self.marks = 0

    def cpu_seconds(self) -> float:
        return self.own_cpu_seconds()  # the API server has no worker process


class Cell:
    """One cell: its server, its fleet, its hosts."""

    def __init__(self, index: int, hosts: int, root: Path) -> None:
        self.name, self.prefix, self.hosts = f"cell{index}", f"c{index}", hosts
        self.dir = root / self.name
        self.dir.mkdir()
        self.tokens = self.dir / "tokens.json"
        self.db_url = ""
        self.server: ServerProcess | None = None
        self.fleet: FleetProcess | None = None

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.server is not None:
            self.server.stop()


def all_reported(client: httpx.Client, count: int) -> bool:
    known, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        try:
            page = client.get("/nodes", params=params).raise_for_status().json()
        except httpx.TimeoutException:
            return False  # a busy server: ask again, until the deadline
        known += sum(1 for n in page["items"] if n["inventory_known"] and n["connected"])
        cursor = page.get("next_cursor")
        if not cursor:
            return known == count


def start_cell(cell: Cell) -> None:
    cell.server = server = ServerProcess(
        cell.dir / "data", heartbeat=HEARTBEAT, log=log, db_url=cell.db_url
    )
    client = server.connect()
    argv = ["--adopt", str(cell.tokens), "--host-vcpus", str(HOST_VCPUS),
            "--host-memory", str(HOST_MEMORY_MB)]  # fmt: skip
    for attempt in (1, 2):
        cell.fleet = FleetProcess(server, argv, cell.dir)
        try:
            running = cell.fleet.wait_phase("running", 300 + cell.hosts * 0.2)
            break
        except BenchError as exc:
            # The fleet gives its agents 0.2 s each to be welcomed; on a busy machine the
            # last ones may miss that: connect it once more.
            if attempt == 2 or "were welcomed within" not in str(exc):
                raise
            said = next(line for line in str(exc).splitlines() if "were welcomed" in line)
            log(f"{cell.name}: {said}; starting the fleet once more")
            cell.fleet.stop()
    wait_for(
        f"every host of {cell.name} reported its VMs",
        lambda: all_reported(client, cell.hosts),
        300 + cell.hosts * 0.2,
        5.0,
    )
    log(f"{cell.name}: {cell.hosts} hosts connected in {running.get('connect_seconds')}s")


def settled(cell: Cell) -> bool:
    assert cell.server is not None
    found = cell.server.client.get("/reconcile", timeout=300).raise_for_status().json()
    return not found["differences"]


def register(api: ApiProcess, cell: Cell) -> bool:
    """POST /cells; False (ask again) when the API server found the cell silent (422)."""
    assert cell.server is not None
    body = {"name": cell.name, "url": cell.server.url, "token": cell.server.token}
    answer = api.client.post("/cells", json=body)
    if answer.status_code == 422:
        log(f"{cell.name} not registered yet: {answer.json()['error']['message']}")
        return False
    answer.raise_for_status()
    return True


def mapped(api: ApiProcess, want: dict[str, tuple[int, int]], what: int) -> bool:
    """Every cell has ``want[cell][what]`` nodes (0) or VMs (1) mapped."""
    api.alive()
    page = api.client.get("/cells").raise_for_status().json()
    have = {c["name"]: (c["nodes"], c["vms"]) for c in page["items"]}
    return all(have.get(n, (0, 0))[what] >= w[what] for n, w in want.items())
