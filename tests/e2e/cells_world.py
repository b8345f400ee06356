"""The cluster of the cells crash test (test_cells_crash_e2e.py): its processes, the tasks that
bring a VM to where a case starts, and what must hold once a case has ended.

`bollard up --cells 2 --nodes 1`: an API server (process ``api``) in front of two cells
(processes ``cell1`` and ``cell2``, each a server with its own database, image spool and sim
fabric) of one sim host each (``cell1-node1``, ``cell2-node1``). One VM, ``mv`` (one 16 MiB
disk, vda), moves back and forth between them: a cross-cell resize to the other flavor (their
root disk size is 0: the disk keeps its size), a cross-cell migration by shutdown, or a resize
whose flavor's root disk is larger (the move's ``grow`` step).

What must hold (``problems``) is checked through the API server, against each cell server
directly and against both cells' sim fabrics (the ground truth of what the hosts have):

- the VM is listed exactly once through the API server, idle, ACTIVE or waiting in
  VERIFY_RESIZE, and its mapping (its ``cell``) names the cell whose copy is shown;
- it runs on exactly one host of the two fabrics, its record's node in its mapped cell, with
  its record's size; in VERIFY_RESIZE the source cell keeps a hidden, stopped copy on the
  move's source node and nothing else; otherwise the other cell has no copy at all (a hidden
  one answers ``?hidden=true``: it must be 404) and its fabric no definition;
- each cell's volumes at rest, whole in its fabric, at their device in the definition of the
  VM copy that uses them; no other file in any pool;
- each node's allocation the sum of the VM copies on it (hidden ones hold theirs too);
- no image in any spool (``<cell data dir>/images``) nor in the API server's store
  (``<api data dir>/images``), but those of a move that waits in VERIFY_RESIZE;
- the API server's move records at an end, or ``finished`` exactly while their VM waits;
- no task running, no command open in either cell, a clean reconcile scan in each cell, no
  command executed twice on any host.
"""

from __future__ import annotations

import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bollard.cli.cluster import (
    ProcessRecord,
    read_cluster,
    stop_processes,
    write_cluster,
)
from bollard.cli.up_cells import cell_dir_of
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode, SimVm
from bollard.sim.storage import PoolKey, volume_path
from tests.chaos.invariants import NON_TERMINAL
from tests.e2e.conftest import QUICK_RECONNECT, Cli, _clean_env, _kill_leftovers, _logs
from tests.e2e.test_cells_up_e2e import free_ports
from tests.e2e.test_volume_crash_e2e import (
    _executed_twice,
    _fabric_files,
    _place,
    _pool_types,
    _volumes,
)

CELLS = ("cell1", "cell2")
NODE_OF = {"cell1": "cell1-node1", "cell2": "cell2-node1"}
VM = "mv"
DISK_MB = 16
FLAVORS = (
    {"name": "cc-a", "vcpus": 1, "memory_mb": 256, "disk_mb": 0},
    {"name": "cc-b", "vcpus": 2, "memory_mb": 512, "disk_mb": 0},
)
GROW_STEP_MB = 8  # a growing resize's root disk: this much larger than the VM's
TASK_DEADLINE = 90.0  # a move's step retries a cell that does not answer for a while
SETTLE_DEADLINE = 8.0  # the reconcilers' passes after a task ended
UP_TIMEOUT = 180.0  # `bollard up --cells 2` on a loaded 2-core machine
# The reconcile scan's classes that must be empty once a case has ended.
EXAMINED = ("orphan", "stale", "pending", "resize", "volume-missing", "volume-orphan")
# The cells' state reconciler only reports these classes here (it fixes them by default): a
# fix (starting a stopped VM, clearing a task_state...) would hide what a move left.
REPORT_ONLY = ("power", "pending", "resize", "volume-stuck", "volume-size")
AT_REST = ("ready", "attached")
ENDED_RECORDS = ("confirmed", "reverted", "failed")
END_TYPES = ("cross_cell_confirm", "cross_cell_revert")


def cell_of(node: str) -> str:
    return node.partition("-")[0]


def other(cell: str) -> str:
    return CELLS[1] if cell == CELLS[0] else CELLS[0]


@contextmanager
def cells_cluster(root: Path, crash_point: str | None = None) -> Iterator[Cli]:
    """`bollard up --cells 2 --nodes 1` under `root`, always stopped afterwards; its
    processes started with BOLLARD_CRASH_POINTS=`crash_point`, if given."""
    cli = Cli(env=_clean_env(root / "config"), data_dir=root / "data")
    try:
        started = cli.run(
            "up", "--detach", "--cells", str(len(CELLS)), "--nodes", "1",
            "--sim-latency", "0.05", "--heartbeat", "1", "--data-dir", str(cli.data_dir),
            "--port", str(free_ports(len(CELLS) + 1)), *QUICK_RECONNECT, timeout=UP_TIMEOUT,
            env={"BOLLARD_CRASH_POINTS": crash_point} if crash_point else None,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr + _logs(cli.data_dir)
        yield cli
    finally:
        cli.run("down", "--data-dir", str(cli.data_dir), timeout=90)
        _kill_leftovers(cli.data_dir)


@dataclass
class World:
    cli: Cli
    armed: str | None = None  # the crash point the running API server was started with
    outcomes: dict[str, str] = field(default_factory=dict)
    ends: int = 0  # moves the test ended itself (confirm and revert in turn)
    # Problems left by a case that failed: not held against the later cases.
    known: set[str] = field(default_factory=set)
    waited: float = 0.0  # how long the last check waited for problems to go

    @property
    def root(self) -> Path:
        return self.cli.data_dir

    def cell_dir(self, cell: str) -> Path:
        return cell_dir_of(self.root, cell)

    def fabric(self, cell: str) -> Fabric:
        return Fabric(self.cell_dir(cell) / "fabric")

    def _client(self, url: str, token_dir: Path) -> httpx.Client:
        token = (token_dir / "admin.token").read_text().strip()
        return httpx.Client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=ssl.create_default_context(cafile=str(self.root / "tls" / "ca.pem")),
        )

    def api(self) -> httpx.Client:
        """A client of the API server."""
        return self._client(self.cli.cluster().url, self.root)

    def cell(self, cell: str) -> httpx.Client:
        """A client of a cell's server, directly (its own admin token)."""
        url = urlsplit(self.cli.cluster().url)
        port = int(url.port or 0) + CELLS.index(cell) + 1
        return self._client(f"{url.scheme}://{url.hostname}:{port}", self.cell_dir(cell))

    def process(self, name: str) -> ProcessRecord:
        return next(p for p in self.cli.cluster().processes if p.name == name)

    def arm_fault(self, node: str, command: str, mode: str, seconds: float = 0.0) -> None:
        """A sim fault on a host, once (as `bollard sim fault set` arms it)."""
        host = self.fabric(cell_of(node)).host(node)
        host.faults.set(command, FaultMode(mode), 1, seconds)

    def armed_faults(self) -> list[str]:
        return [
            f"{h.node}: {f.command} {f.mode.value}"
            for cell in CELLS
            for h in self.fabric(cell).hosts()
            for f in h.faults.all()
        ]


# -- processes ------------------------------------------------------------------------------


def _api_ready(w: World) -> bool:
    """The API server answers and reaches both cells."""
    try:
        with w.api() as c:
            page = c.get("/vms", params={"limit": 1})
    except httpx.TransportError:
        return False
    return page.status_code == 200 and page.json()["unreachable"] == []


def _reports(w: World, cell: str, *, full: bool) -> int | None:
    """The cell's node's last report (its sequence number) once it is connected (and, if
    `full`, has sent its first full report of the session); None before."""
    try:
        with w.cell(cell) as c:
            node = c.get(f"/nodes/{NODE_OF[cell]}").json()
    except (httpx.TransportError, ValueError):
        return None
    if not node.get("connected") or (full and not node.get("inventory_known")):
        return None
    return int(node["last_seq"])


def wait_cell_back(w: World, cell: str) -> None:
    """Until the cell's server answers and its node has reported twice since it came back:
    its first full report of the session (on which the cell checks which VMs the host no
    longer owns), then the next one."""
    first = w.cli.wait_until(
        f"{cell} is back, its node reported", lambda: _reports(w, cell, full=True), 40
    )
    w.cli.wait_until(
        f"{cell}'s node reported again",
        lambda: (seq := _reports(w, cell, full=False)) is not None and seq > first,
        30,
    )


def _respawn(w: World, name: str, env: dict[str, str]) -> None:
    """What `bollard up --restart-process NAME` does (stop it if it runs; start it again with
    the argv and log cluster.json records, and record its pid), without the CLI's start-up
    (a second and a half each time here), and with more environment (`env`)."""
    record = read_cluster(w.root)
    assert record is not None
    proc = record.find(name)
    assert proc is not None, f"no process {name} in cluster.json"
    stop_processes([proc])
    with open(proc.log, "ab") as log:
        child = subprocess.Popen(
            proc.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**w.cli.env, **env}, close_fds=True,
        )  # fmt: skip
    record.put(ProcessRecord(name=name, pid=child.pid, argv=proc.argv, log=proc.log))
    write_cluster(w.root, record)


def restart(w: World, name: str, crash_point: str | None = None) -> None:
    """Start process `name` again (the API server with a crash point armed, if given) and
    wait until it is ready: the API server answering with both cells reachable, a cell
    server with its node back."""
    _respawn(w, name, {"BOLLARD_CRASH_POINTS": crash_point} if crash_point else {})
    if name == "api":
        w.armed = crash_point
        w.cli.wait_until("the API server is back and reaches both cells", lambda: _api_ready(w), 40)
    else:
        wait_cell_back(w, name)


# -- the cluster's start --------------------------------------------------------------------


def prepare(w: World) -> None:
    """Moves allowed, the cells' reconcilers reporting only, the flavors, the VM in cell1."""
    with w.api() as c:
        for key in ("policy.vm_resize_cross_cell", "policy.vm_migrate_cross_cell"):
            answer = c.put(f"/settings/{key}", json={"value": "admin"})
            assert answer.status_code == 200, answer.text
        # A cell server is SIGKILLed and restarted here: its node must not be declared dead
        # (and fenced) meanwhile on a loaded machine; fencing is not tested here.
        changes: dict[str, Any] = {"health.dead_after": 60}
        changes.update({f"reconcile.auto.{cls}": "report" for cls in REPORT_ONLY})
        for key, value in changes.items():
            answer = c.put(f"/settings/{key}", json={"value": value})
            assert answer.status_code == 200, answer.text
        for flavor in FLAVORS:
            answer = c.post("/flavors", json=flavor)
            assert answer.status_code == 201, answer.text
        body = {"name": VM, "flavor": FLAVORS[0]["name"], "cell": CELLS[0], "start": True,
                "disks": [{"size_mb": DISK_MB}]}  # fmt: skip
        answer = c.post("/vms", json=body)
        assert answer.status_code == 202, answer.text
        task = wait_task(w, c, answer.json()["task"]["id"])
        assert task["state"] == "succeeded", steps_of(task)
    for cell in CELLS:
        with w.cell(cell) as cc:
            value = cc.get("/settings/reconcile.auto.power").json()["value"]
            assert value == "report", f"{cell}: reconcile.auto.power is {value}"


# -- tasks ----------------------------------------------------------------------------------


def wait_task(w: World, c: httpx.Client, task_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        try:
            answer = c.get(f"/tasks/{task_id}/wait", params={"timeout": 2})
        except httpx.TransportError:  # the API server is down (at a crash point)
            return None
        task: dict[str, Any] = answer.json()
        return task if task.get("finished_at") else None

    return w.cli.wait_until(f"task {task_id} ends", ended, timeout=TASK_DEADLINE)


def vm_of(c: httpx.Client, name: str = VM) -> dict[str, Any]:
    answer = c.get(f"/vms/{name}")
    assert answer.status_code == 200, answer.text
    vm: dict[str, Any] = answer.json()
    return vm


def _grow_flavor(c: httpx.Client, vm: dict[str, Any], size: dict[str, Any]) -> str:
    """A flavor of `size`'s vCPUs and memory whose root disk is larger than the VM's."""
    root = next(int(d["size_mb"]) for d in vm["disks"] if d["device"] == "vda")
    name = f"cc-grow-{root + GROW_STEP_MB}"
    body = {**size, "name": name, "disk_mb": root + GROW_STEP_MB}
    answer = c.post("/flavors", json=body)
    assert answer.status_code in (201, 409), answer.text
    return name


def move_request(c: httpx.Client, how: str, name: str = VM) -> tuple[str, dict[str, Any]]:
    """The request that moves the VM to the other cell's node: a resize to the other flavor
    (`how` resize; grow: one whose root disk is larger), or a migration by shutdown."""
    vm = vm_of(c, name)
    to = NODE_OF[other(vm["cell"])]
    if how == "migrate":
        return f"/vms/{name}/migrate", {"to": to, "method": "shutdown"}
    size = next(f for f in FLAVORS if f["vcpus"] != vm["vcpus"])
    flavor = _grow_flavor(c, vm, size) if how == "grow" else str(size["name"])
    return f"/vms/{name}/resize", {"flavor": flavor, "to": to}


def start_task(c: httpx.Client, task_type: str, how: str = "resize") -> httpx.Response:
    """Ask for a move (`how`: resize, grow or migrate), a confirm or a revert of VM mv."""
    if task_type == "cross_cell_move":
        path, body = move_request(c, how)
        return c.post(path, json=body)
    action = "confirm" if task_type == "cross_cell_confirm" else "revert"
    return c.post(f"/vms/{VM}/resize/{action}")


def run_task(w: World, c: httpx.Client, task_type: str) -> dict[str, Any]:
    """A task the test needs to succeed (no crash point armed for its type)."""
    answer = start_task(c, task_type)
    assert answer.status_code == 202, answer.text
    task = wait_task(w, c, answer.json()["task"]["id"])
    assert task["state"] == "succeeded", steps_of(task)
    return task


def idle(w: World, c: httpx.Client) -> dict[str, Any]:
    """The VM once no move of it runs (ACTIVE, or waiting in VERIFY_RESIZE)."""
    return w.cli.wait_until(
        f"VM {VM} is idle",
        lambda: v if (v := vm_of(c))["status"] in ("ACTIVE", "VERIFY_RESIZE") else None,
        timeout=TASK_DEADLINE,
    )


def bring_to(w: World, c: httpx.Client, *, waiting: bool, armed_type: str | None) -> None:
    """Bring the VM into VERIFY_RESIZE (a move) or out of it (a confirm or a revert, in turn,
    but never of the type the running API server is armed to crash in)."""
    vm = idle(w, c)
    if (vm["status"] == "VERIFY_RESIZE") == waiting:
        return
    if waiting:
        run_task(w, c, "cross_cell_move")
        return
    end = END_TYPES[w.ends % 2]
    if end == armed_type:
        end = END_TYPES[(w.ends + 1) % 2]
    w.ends += 1
    run_task(w, c, end)


def steps_of(task: dict[str, Any]) -> str:
    """A task and its steps, for a failure message."""
    lines = [f"task {task['id']} {task['type']} {task['state']}: {task['error']}"]
    for s in task.get("steps") or []:
        error = f" ({s['error']})" if s.get("error") else ""
        undo = f" (undo: {s['undo_error']})" if s.get("undo_error") else ""
        lines.append(f"    {s['name']}: {s['state']}{error}{undo}")
    return "\n".join(lines)


# -- what must hold -------------------------------------------------------------------------


def _copies(w: World, names: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each cell's copy of each VM, hidden or not, as the cell server has it (none: 404)."""
    found: dict[str, dict[str, dict[str, Any]]] = {cell: {} for cell in CELLS}
    for cell in CELLS:
        with w.cell(cell) as cc:
            for name in names:
                answer = cc.get(f"/vms/{name}", params={"hidden": "true"})
                assert answer.status_code in (200, 404), f"{cell}: {answer.text}"
                if answer.status_code == 200:
                    found[cell][name] = answer.json()
    return found


Where = dict[tuple[str, str], tuple[str, int, int]]  # (cell, node) -> (power, vCPUs, MiB)


def _defined(fabrics: dict[str, dict[str, list[SimVm]]], uuid: str) -> Where:
    return {
        (cell, node): (str(v.power.value), v.vcpus, v.memory_mb)
        for cell, hosts in fabrics.items()
        for node, vms in hosts.items()
        for v in vms
        if v.uuid == uuid
    }


def _vm_problems(
    vm: dict[str, Any],
    listed: int,
    copies: dict[str, dict[str, dict[str, Any]]],
    fabrics: dict[str, dict[str, list[SimVm]]],
) -> list[str]:
    name, cell, node = vm["name"], vm["cell"], vm["node"]
    found = []
    if listed != 1:
        found.append(f"VM {name} is listed {listed} times through the API server")
    if vm["status"] not in ("ACTIVE", "VERIFY_RESIZE") or vm["task_state"] is not None:
        found.append(f"VM {name} is {vm['status']} ({vm['task_state']}) in {cell}")
    if cell_of(node) != cell:
        found.append(f"VM {name} is mapped to {cell} but its record names node {node}")
    shown = copies[cell].get(name)
    if shown is None or shown["hidden"] or shown["node"] != node or shown["uuid"] != vm["uuid"]:
        found.append(f"VM {name}: its mapped cell {cell} has {_brief(shown)}, not its record")
    where = _defined(fabrics, vm["uuid"])
    want: Where = {(cell, node): ("running", vm["vcpus"], vm["memory_mb"])}
    away = other(cell)
    kept = copies[away].get(name)
    if vm["status"] == "VERIFY_RESIZE":
        source = str((vm.get("resize") or {}).get("source"))
        if kept is None or not kept["hidden"] or kept["status"] != "SHUTOFF":
            found.append(f"VM {name} waits in VERIFY_RESIZE; its source copy is {_brief(kept)}")
        else:
            want[(away, source)] = ("stopped", kept["vcpus"], kept["memory_mb"])
    elif kept is not None:
        found.append(f"VM {name} runs in {cell}; cell {away} still has a copy: {_brief(kept)}")
    if where != want:
        found.append(f"VM {name} ({vm['status']} in {cell} on {node}) is defined {where}, "
                     f"not {want}")  # fmt: skip
    return found


def _brief(vm: dict[str, Any] | None) -> str:
    if vm is None:
        return "no copy"
    return f"{vm['status']} on {vm['node']} (hidden {vm['hidden']}, task {vm['task_state']})"


def _cell_problems(
    w: World, cell: str, copies: dict[str, dict[str, Any]], fabric: dict[str, list[SimVm]]
) -> list[str]:
    """One cell: volumes at rest and in place, no stray file, allocations, no open command,
    a clean reconcile scan, nothing executed twice."""
    found = []
    by_uuid = {v["uuid"]: v for v in copies.values()}
    with w.cell(cell) as cc:
        types = _pool_types(cc)
        files = _fabric_files(w.fabric(cell))
        owned = set()
        for v in _volumes(cc):
            place = _place(v, types[v["pool"]])
            owned.add(place)
            label = f"{cell}: volume {v['name']} ({v['pool']}/{v['node']}/{v['file']})"
            if v["state"] not in AT_REST or v["task_id"] is not None:
                found.append(f"{label} is {v['state']} (task {v['task_id']}, fault {v['fault']})")
            if files.get(place) != "whole":
                found.append(f"{label}: its file is {files.get(place) or 'missing'}")
            if v["vm_uuid"] is None:
                continue
            user = by_uuid.get(v["vm_uuid"])
            if user is None:
                found.append(f"{label} belongs to VM {v['vm']}, of which the cell has no copy")
                continue
            sim = next((s for s in fabric.get(user["node"], []) if s.uuid == user["uuid"]), None)
            key = PoolKey(v["pool"], "shared" if types[v["pool"]] == "shared" else "local")
            drives = {d.device: d.path for d in sim.drives} if sim else {}
            if drives.get(v["device"]) != volume_path(key, v["file"]):
                found.append(f"{label}: the definition of {v['vm']} on {user['node']} has "
                             f"{drives.get(v['device'])} at {v['device']}")  # fmt: skip
        found += [f"{cell}: stray file {p}: {what}" for p, what in files.items() if p not in owned]
        for n in cc.get("/nodes").json()["items"]:
            mine = [v for v in copies.values() if v["node"] == n["name"]]
            want = (sum(v["vcpus"] for v in mine), sum(v["memory_mb"] for v in mine))
            have = (n["allocated"]["vcpus"], n["allocated"]["memory_mb"])
            if have != want:
                found.append(f"{cell}: node {n['name']} has {have} (vCPUs, MiB) allocated, not "
                             f"{want} ({[v['name'] for v in mine]})")  # fmt: skip
        commands = cc.get("/commands", params={"state": ",".join(NON_TERMINAL)}).json()
        found += [
            f"{cell}: command {x['id']} {x['type']} on {x['node']} is {x['state']}"
            for x in commands["items"]
        ]
        scan = cc.get("/reconcile").json()
        found += [
            f"{cell}: reconcile: {d['class']} {d.get('vm') or d.get('volume') or ''} on "
            f"{d['node']}: {d['detail']}"
            for d in scan["differences"]
            if d["class"] in EXAMINED
        ]
    found += [f"{cell}: {p}" for p in _executed_twice(w.fabric(cell))]
    return found


def _images(w: World) -> dict[str, list[str]]:
    """The files of every image store, by image: the API server's and each cell's spool."""
    found: dict[str, list[str]] = {}
    for store in (w.root / "images", *(w.cell_dir(c) / "images" for c in CELLS)):
        for path in sorted(store.rglob("*")) if store.is_dir() else []:
            if path.is_file():
                image = path.relative_to(store).parts[0]
                found.setdefault(image, []).append(str(path.relative_to(w.root)))
    return found


def _record_problems(vms: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    """The API server's move records (cell null): at an end, or `finished` exactly while
    their VM waits in VERIFY_RESIZE."""
    waiting = {v["resize"]["migration_id"] for v in vms if v["status"] == "VERIFY_RESIZE"}
    found = []
    for r in records:
        label = f"move record {r['id']} of {r['vm']} ({r['source']} -> {r['dest']})"
        if r["id"] in waiting:
            if r["status"] != "finished":
                found.append(f"{label} is {r['status']} while its VM waits")
        elif r["status"] not in ENDED_RECORDS:
            found.append(f"{label} is {r['status']}")
    return found


def problems(w: World, c: httpx.Client) -> list[str]:
    """What is wrong with the cluster now (nothing: all is as it must be); the problems a
    failed case left (w.known) are not counted."""
    page = c.get("/vms", params={"limit": 1000}).json()
    assert page["next_cursor"] is None, "more VMs than one page holds"
    found = [f"cell {u['cell']} did not answer: {u['error']}" for u in page["unreachable"]]
    names = sorted({v["name"] for v in page["items"]})
    vms = [vm_of(c, name) for name in names]
    copies = _copies(w, names)
    fabrics = {cell: w.fabric(cell).snapshot() for cell in CELLS}
    for vm in vms:
        listed = sum(1 for v in page["items"] if v["name"] == vm["name"])
        found += _vm_problems(vm, listed, copies, fabrics)
    for cell in CELLS:
        known = {v["uuid"] for v in copies[cell].values()}
        found += [
            f"{cell}: {s.name} ({s.uuid}) on {node} has no record in the cell"
            for node, on_host in fabrics[cell].items()
            for s in on_host
            if s.uuid not in known
        ]
        found += _cell_problems(w, cell, copies[cell], fabrics[cell])
    records = c.get("/migrations", params={"limit": 1000}).json()["items"]
    records = [r for r in records if r["cell"] is None]
    found += _record_problems(vms, records)
    kept = {f"move-{v['resize']['migration_id']}" for v in vms if v["status"] == "VERIFY_RESIZE"}
    found += [f"image {image} left: {files}" for image, files in _images(w).items()
              if image not in kept]  # fmt: skip
    active = c.get("/tasks", params={"active": "true", "limit": 100}).json()["items"]
    found += [f"task {t['id']} {t['type']} of {t['vm']} is {t['state']}" for t in active]
    return [p for p in found if p not in w.known]


def settled_problems(w: World, c: httpx.Client) -> list[str]:
    """The problems once the reconcilers had their chance (a leftover may still go)."""
    found = problems(w, c)
    started, w.waited = time.monotonic(), 0.0
    while found and w.waited < SETTLE_DEADLINE:
        time.sleep(0.5)  # polling interval, not synchronisation
        found = problems(w, c)
        w.waited = time.monotonic() - started
    return found


def log_marks(w: World) -> dict[str, dict[str, int]]:
    """How many operations each host of each cell has logged so far."""
    return {cell: {h.node: len(h.executed()) for h in w.fabric(cell).hosts()} for cell in CELLS}


def repeated(w: World, marks: dict[str, dict[str, int]]) -> list[str]:
    """The operations on one subject (a VM, a volume) that ran more than once on a cell's
    hosts since `marks`: one case runs one move, or one confirm or revert, each of whose host
    actions must happen once in each cell; but for the stop with which a cell's delete of a
    copy begins (each undefine of a VM comes with one), even if the move had stopped it."""
    found = []
    for cell in CELLS:
        seen: Counter[tuple[str, str | None]] = Counter()
        for host in w.fabric(cell).hosts():
            for op in host.executed()[marks[cell].get(host.node, 0) :]:
                seen[(op.command, op.vm_uuid or op.command_id)] += 1
        for (op, subject), n in seen.items():
            deletes = seen[("undefine", subject)] if op == "stop" else 0
            if n - deletes > 1:
                found.append(f"{cell}: {op} on {subject}: {n} times ({deletes} in deletes)")
    return found


def settle_down(w: World, c: httpx.Client) -> None:
    """After a case failed: wait (best effort) until no task runs any more, so that the next
    case starts from a cluster at rest."""
    deadline = time.monotonic() + TASK_DEADLINE
    while time.monotonic() < deadline:
        if c.get("/tasks", params={"active": "true", "limit": 1}).json()["total"] == 0:
            return
        time.sleep(0.5)  # polling interval, not synchronisation
