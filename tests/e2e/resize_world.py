"""The cluster of the resize crash test (test_resize_crash_e2e.py): its processes, the tasks
that bring a VM to where a case starts, and what must hold once a case has ended.

Two VMs live on it, each with one disk (vda) in the local pool: ``rs``, whose disk copies in
a fraction of a second (for the crash points), and ``rb``, whose disk takes seconds to copy
(time to kill a process while the hosts copy). Each resize gives the VM the other flavor
(their root disk size is 0: the disk keeps its size, so a VM may go back and forth) on the
other node.

What must hold (``problems``) is checked against the sim fabric, the ground truth of what
the hosts have: every VM idle (no task_state); a VM in VERIFY_RESIZE running on its
destination only, the source keeping its stopped copy at the old epoch, its originals
``reserved`` and its copies ``attached``; any other VM running on exactly one node, its
record's, at the epoch the fabric shows; every node's allocation the sum of the VMs it owns
and of the holds of the resizes whose source it is; the resize records at an end (or
``finished`` exactly while their VM waits in VERIFY_RESIZE); every volume at rest in one
place, whole, at its device in the definition that uses it, and no other file in any pool;
no difference of the classes below in a reconcile scan; no command open; no command
executed twice.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bollard.sim.fabric import Fabric
from bollard.sim.models import JobState, SimVm
from bollard.sim.storage import PoolKey, volume_path
from tests.chaos.invariants import NON_TERMINAL
from tests.e2e.conftest import Cli
from tests.e2e.test_volume_crash_e2e import (
    _connected,
    _executed_twice,
    _fabric_files,
    _place,
    _pool_types,
    _repeated_since,
    _volumes,
)

COPY_RATE = 64.0  # MiB/s, every agent's --sim-copy-rate
SMALL_MB = 16  # rs's disk: a copy of a quarter of a second
BIG_MB = 384  # rb's disk: a copy of six seconds, time to kill a process while it runs
VM_DISKS = {"rs": SMALL_MB, "rb": BIG_MB}
FLAVORS = (
    {"name": "rz-a", "vcpus": 1, "memory_mb": 256, "disk_mb": 0},
    {"name": "rz-b", "vcpus": 2, "memory_mb": 512, "disk_mb": 0},
)
NODES = ("node1", "node2")
TASK_DEADLINE = 90.0  # a step retries a lost host for a while
SETTLE_DEADLINE = 8.0  # the reconcilers' passes after a task ended
# The reconcile scan's classes that must be empty once a case has ended.
EXAMINED = ("orphan", "stale", "pending", "resize", "volume-missing", "volume-orphan")
AT_REST = ("ready", "attached", "reserved")
END_TYPES = ("resize_confirm", "resize_revert")
# The state reconciler only reports these classes here (it fixes them by default): a fix
# (starting a VM, clearing a task_state, confirming a resize whose old copy is gone...)
# would hide what the flows left. Partial copies left by copies no task drives are still
# removed by it (reconcile.auto.volume-orphan: partial), as in the volume crash test.
REPORT_ONLY = ("power", "pending", "resize", "volume-stuck", "volume-size")
ENDED_RECORDS = ("confirmed", "reverted", "failed", "error", "completed")


@dataclass
class World:
    cli: Cli
    armed: str | None = None  # the crash point the running server was started with
    outcomes: dict[str, str] = field(default_factory=dict)
    ends: int = 0  # resizes the test ended itself (confirm and revert in turn)
    # Problems left by a case that failed: not held against the later cases.
    known: set[str] = field(default_factory=set)
    waited: float = 0.0  # how long the last check waited for problems to go

    @property
    def fabric(self) -> Fabric:
        return Fabric(self.cli.data_dir / "fabric")

    def api(self) -> httpx.Client:
        token = (self.cli.data_dir / "admin.token").read_text().strip()
        return httpx.Client(
            base_url=self.cli.cluster().url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=ssl.create_default_context(cafile=str(self.cli.data_dir / "tls" / "ca.pem")),
        )


def settle_down(w: World, c: httpx.Client) -> None:
    """After a case failed: wait (best effort) until no task runs any more, so that the next
    case starts from a cluster at rest."""
    deadline = time.monotonic() + TASK_DEADLINE
    while time.monotonic() < deadline:
        if c.get("/tasks", params={"active": True, "limit": 1}).json()["total"] == 0:
            return
        time.sleep(0.5)  # polling interval, not synchronisation


def task_type_of(point: str | None) -> str | None:
    """The task type of a crash point (``<task type>:<step>:<when>``)."""
    return None if point is None else point.split(":")[0]


def _seqs(c: httpx.Client, *, reported: bool) -> dict[str, int] | None:
    """Each node's last report (sequence number) once every node is connected (and, if
    `reported`, has sent its first full report of the session); None before."""
    if not _connected(c):
        return None
    try:
        found = c.get("/nodes").json()["items"]
    except httpx.TransportError:  # the server died again (at a crash point of another task)
        return None
    if not all(n["connected"] and (n["inventory_known"] or not reported) for n in found):
        return None
    return {n["name"]: int(n["last_seq"]) for n in found}


def restart(w: World, name: str, crash_point: str | None = None) -> None:
    """Start the process `name` again (`bollard up --restart-process`; the server with a crash
    point armed, if given) and wait until every node is connected and has reported twice:
    its first full report of the session, on which the server checks which VMs the host no
    longer owns (health/rejoin.py; any stale copy destroyed at once), then the next one."""
    env = {"BOLLARD_CRASH_POINTS": crash_point} if crash_point else {}
    result = w.cli.run("up", "--restart-process", name, "--data-dir", str(w.cli.data_dir), env=env)
    assert result.returncode == 0, result.stderr
    if name == "server":
        w.armed = crash_point
    with w.api() as c:
        first = w.cli.wait_until(
            f"{name} is back, every node reported", lambda: _seqs(c, reported=True), 30
        )

        def again() -> bool:
            now = _seqs(c, reported=False)
            return now is not None and all(now[n] > seq for n, seq in first.items())

        w.cli.wait_until("every node reported again", again, 30)


# -- tasks ----------------------------------------------------------------------------------


def wait_task(w: World, c: httpx.Client, task_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        try:
            task: dict[str, Any] = c.get(f"/tasks/{task_id}/wait", params={"timeout": 2}).json()
        except httpx.TransportError:
            return None
        return task if task["finished_at"] else None

    return w.cli.wait_until(f"task {task_id} ends", ended, timeout=TASK_DEADLINE)


def vm_of(c: httpx.Client, name: str) -> dict[str, Any]:
    answer = c.get(f"/vms/{name}")
    assert answer.status_code == 200, answer.text
    vm: dict[str, Any] = answer.json()
    return vm


def resize_body(vm: dict[str, Any]) -> dict[str, str]:
    """The other flavor, on the other node."""
    names = [str(f["name"]) for f in FLAVORS]
    flavor = names[1] if vm["flavor"]["name"] == names[0] else names[0]
    to = NODES[1] if vm["node"] == NODES[0] else NODES[0]
    return {"flavor": flavor, "to": to}


def start_task(c: httpx.Client, name: str, task_type: str) -> httpx.Response:
    """Ask for a resize (the other flavor, on the other node), a confirm or a revert."""
    if task_type == "resize":
        return c.post(f"/vms/{name}/resize", json=resize_body(vm_of(c, name)))
    action = "confirm" if task_type == "resize_confirm" else "revert"
    return c.post(f"/vms/{name}/resize/{action}")


def run_task(w: World, c: httpx.Client, name: str, task_type: str) -> dict[str, Any]:
    """A task the test needs to succeed (no crash point armed for its type)."""
    answer = start_task(c, name, task_type)
    assert answer.status_code == 202, answer.text
    task = wait_task(w, c, answer.json()["task"]["id"])
    assert task["state"] == "succeeded", steps_of(task)
    return task


def idle(w: World, c: httpx.Client, name: str) -> dict[str, Any]:
    """The VM once no task holds it."""
    return w.cli.wait_until(
        f"VM {name} is idle", lambda: v if (v := vm_of(c, name))["task_id"] is None else None,
        timeout=TASK_DEADLINE,
    )  # fmt: skip


def bring_to(w: World, c: httpx.Client, name: str, *, resized: bool) -> None:
    """Bring VM `name` into VERIFY_RESIZE (a resize) or out of it (a confirm or a revert, in
    turn, but never of the type the running server is armed to crash in)."""
    vm = idle(w, c, name)
    if (vm["vm_state"] == "resized") == resized:
        return
    if resized:
        run_task(w, c, name, "resize")
        return
    end = END_TYPES[w.ends % 2]
    if end == task_type_of(w.armed):
        end = END_TYPES[(w.ends + 1) % 2]
    w.ends += 1
    run_task(w, c, name, end)


def new_task(c: httpx.Client, name: str, task_type: str, before: set[str]) -> str:
    """The id of the VM's task of `task_type` that is not among `before` (asked for by a
    request whose answer the server died before sending)."""
    items = c.get("/tasks", params={"vm": name, "order": "newest", "limit": 5}).json()["items"]
    found = [t["id"] for t in items if t["type"] == task_type and t["id"] not in before]
    assert len(found) == 1, f"the {task_type} task of {name} among its newest: {items}"
    return str(found[0])


def task_ids(c: httpx.Client, name: str) -> set[str]:
    items = c.get("/tasks", params={"vm": name, "order": "newest", "limit": 5}).json()["items"]
    return {str(t["id"]) for t in items}


def copy_running(w: World, c: httpx.Client, task_id: str, source: str) -> str | None:
    """The copy's command id once its job runs on `source` (None before)."""
    task = c.get(f"/tasks/{task_id}").json()
    cid = next((s["commands"].get("copy-vda") for s in task["steps"] if s["name"] == "copy"), None)
    if cid is None:
        return None
    job = w.fabric.host(source).jobs.get(cid)
    return str(cid) if job is not None and job.state(time.time()) == JobState.RUNNING else None


def steps_of(task: dict[str, Any]) -> str:
    """A task, its steps and their commands, for a failure message."""
    lines = [f"task {task['id']} {task['type']} {task['state']}: {task['error']}"]
    for s in task.get("steps") or []:
        error = f" ({s['error']})" if s.get("error") else ""
        lines.append(f"    {s['name']}: {s['state']}{error} {s.get('commands') or ''}")
    return "\n".join(lines)


# -- what must hold -------------------------------------------------------------------------


def _page(c: httpx.Client, path: str) -> list[dict[str, Any]]:
    page = c.get(path, params={"limit": 1000}).json()
    assert page["next_cursor"] is None, f"more {path} than one page holds"
    items: list[dict[str, Any]] = page["items"]
    return items


def _resize_disks(c: httpx.Client, vm: dict[str, Any]) -> Resize:
    """The open resize of a VM in VERIFY_RESIZE: the epoch of the source's copy and the disks
    (device, original_id, copy_id), from its task's parameters."""
    record = c.get(f"/migrations/{vm['resize']['migration_id']}").json()
    params = c.get(f"/tasks/{record['task_id']}").json()["params"]
    return int(params["epoch"]), list(params["disks"])


def _definitions(fabric: dict[str, list[SimVm]], uuid: str) -> dict[str, SimVm]:
    return {n: v for n, vms in fabric.items() for v in vms if v.uuid == uuid}


Resize = tuple[int, list[dict[str, Any]]]  # (the source copy's epoch, the disks)


def _vm_problems(
    vm: dict[str, Any],
    resize: Resize | None,
    defined: dict[str, SimVm],
    vols: dict[str, dict[str, Any]],
) -> list[str]:
    name = vm["name"]
    found = []
    if vm["task_state"] is not None or vm["task_id"] is not None:
        found.append(f"VM {name} is held: task_state {vm['task_state']}, task {vm['task_id']}")
    where = {n: (str(v.power.value), v.epoch) for n, v in defined.items()}
    if vm["vm_state"] != "resized":
        want = {vm["node"]: ("running", vm["epoch"])}
        if vm["vm_state"] != "active" or where != want:
            found.append(f"VM {name} ({vm['vm_state']} on {vm['node']}, epoch {vm['epoch']}) "
                         f"is defined {where}, not {want}")  # fmt: skip
        return found
    r = vm["resize"]
    if r is None or r["status"] != "finished" or resize is None:
        return [*found, f"VM {name} waits in VERIFY_RESIZE with its resize {r}"]
    old_epoch, disks = resize
    want = {r["dest"]: ("running", vm["epoch"]), r["source"]: ("stopped", old_epoch)}
    if vm["node"] != r["dest"] or where != want:
        found.append(f"VM {name} (VERIFY_RESIZE on {vm['node']}, from {r['source']} to "
                     f"{r['dest']}) is defined {where}, not {want}")  # fmt: skip
    for d in disks:
        original, copy = vols.get(d["original_id"]), vols.get(d["copy_id"])
        if original is None or (original["state"], original["node"]) != ("reserved", r["source"]):
            found.append(f"VM {name}: the original of {d['device']} on {r['source']} is {original}")
        if copy is None or (copy["state"], copy["vm"], copy["device"]) != (
            "attached", name, d["device"]
        ):  # fmt: skip
            found.append(f"VM {name}: the copy of {d['device']} is {copy}")
    return found


def _volume_problems(
    c: httpx.Client,
    w: World,
    vms: list[dict[str, Any]],
    resizes: dict[str, Resize],
    fabric: dict[str, list[SimVm]],
) -> list[str]:
    """Every volume at rest, whole in its place, at its device where it is used; no other file
    in any pool."""
    found = []
    types = _pool_types(c)
    files = _fabric_files(w.fabric)
    vols = _volumes(c)
    users = _users(vols, vms, resizes)
    owned = set()
    for v in vols:
        place = _place(v, types[v["pool"]])
        owned.add(place)
        label = f"volume {v['name']} ({v['pool']}/{v['node']}/{v['file']})"
        if v["state"] not in AT_REST or v["task_id"] is not None:
            found.append(f"{label} is {v['state']} (task {v['task_id']}, fault {v['fault']})")
        if files.get(place) != "whole":
            found.append(f"{label}: its file is {files.get(place) or 'missing'} in the fabric")
        user = users.get(v["id"])
        if user is None:
            continue
        node, uuid = user
        sim = _definitions(fabric, uuid).get(node)
        path = volume_path(PoolKey(v["pool"], "shared" if types[v["pool"]] == "shared"
                                   else "local"), v["file"])  # fmt: skip
        drives = {d.device: d.path for d in sim.drives} if sim else {}
        if drives.get(v["device"]) != path:
            found.append(f"{label}: the VM's definition on {node} has "
                         f"{drives.get(v['device'])} at {v['device']}")  # fmt: skip
    for place, what in sorted(files.items(), key=str):
        if place not in owned:
            found.append(f"stray file {place}: {what}, owned by no volume record")
    return found


def _users(
    vols: list[dict[str, Any]], vms: list[dict[str, Any]], resizes: dict[str, Resize]
) -> dict[str, tuple[str, str]]:
    """Where each volume in use must be in a VM's definition: volume id -> (node, VM uuid); an
    attached one in its VM's on the VM's node, a resize's original in the stopped copy the
    resize's source keeps."""
    by_uuid = {vm["uuid"]: vm for vm in vms}
    found = {
        v["id"]: (by_uuid[v["vm_uuid"]]["node"], v["vm_uuid"])
        for v in vols
        if v["state"] == "attached" and v["vm_uuid"] in by_uuid
    }
    for uuid, (_, disks) in resizes.items():
        for d in disks:
            found[d["original_id"]] = (by_uuid[uuid]["resize"]["source"], uuid)
    return found


def _allocation_problems(
    nodes: list[dict[str, Any]], vms: list[dict[str, Any]], records: list[dict[str, Any]]
) -> list[str]:
    found = []
    for n in nodes:
        name = n["name"]
        owned = [v for v in vms if v["node"] == name]
        holds = [r["source_hold"] for r in records if r["source_hold"] and r["source"] == name]
        want = (
            sum(v["vcpus"] for v in owned) + sum(h["vcpus"] for h in holds),
            sum(v["memory_mb"] for v in owned) + sum(h["memory_mb"] for h in holds),
        )
        have = (n["allocated"]["vcpus"], n["allocated"]["memory_mb"])
        if have != want:
            found.append(f"node {name} has {have} (vCPUs, MiB) allocated, not {want}: VMs "
                         f"{[v['name'] for v in owned]}, holds {holds}")  # fmt: skip
    return found


def _record_problems(vms: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    """Each resize record at an end, or `finished` (with the source's hold) exactly while its
    VM waits in VERIFY_RESIZE on it."""
    waiting = {v["resize"]["migration_id"] for v in vms if v["vm_state"] == "resized"}
    found = []
    for r in records:
        label = f"resize record {r['id']} of {r['vm']} ({r['source']} -> {r['dest']})"
        if r["id"] in waiting:
            hold = r["source_hold"]
            if r["status"] != "finished" or hold is None or hold["node"] != r["source"]:
                found.append(f"{label} is {r['status']}, hold {hold}, while its VM waits")
        elif r["status"] not in ENDED_RECORDS or r["source_hold"] is not None:
            found.append(f"{label} is {r['status']} with hold {r['source_hold']}")
    return found


def problems(w: World, c: httpx.Client) -> list[str]:
    """What is wrong with the cluster now (nothing: all is as it must be); the problems a
    failed case left (w.known) are not counted."""
    vms = _page(c, "/vms")
    records = [r for r in _page(c, "/migrations") if r["type"] == "resize"]
    fabric = w.fabric.snapshot()
    vols = {v["id"]: v for v in _volumes(c)}
    resizes = {
        vm["uuid"]: _resize_disks(c, vm)
        for vm in vms
        if vm["vm_state"] == "resized" and vm["resize"]
    }
    found: list[str] = []
    for vm in vms:
        defined = _definitions(fabric, vm["uuid"])
        found += _vm_problems(vm, resizes.get(vm["uuid"]), defined, vols)
    known = {v["uuid"] for v in vms}
    for node, on_host in fabric.items():
        found += [f"{s.name} ({s.uuid}) on {node} has no record" for s in on_host
                  if s.uuid not in known]  # fmt: skip
    found += _allocation_problems(c.get("/nodes").json()["items"], vms, records)
    found += _record_problems(vms, records)
    found += _volume_problems(c, w, vms, resizes, fabric)
    scan = c.get("/reconcile").json()
    found += [
        f"reconcile: {d['class']} {d.get('vm') or d.get('volume') or ''} on {d['node']}: "
        f"{d['detail']}"
        for d in scan["differences"]
        if d["class"] in EXAMINED
    ]
    open_commands = c.get("/commands", params={"state": ",".join(NON_TERMINAL)}).json()
    found += [
        f"command {x['id']} {x['type']} on {x['node']} is {x['state']}"
        for x in open_commands["items"]
    ]
    found += _executed_twice(w.fabric)
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


def untasked(c: httpx.Client, since: datetime) -> list[str]:
    """The commands created since `since` that no task sent (the server acting by itself: a
    rejoin destroying a stale copy, a reconciler's fix): none may concern a case's VM."""
    newest = c.get("/commands", params={"order": "newest", "limit": 200}).json()["items"]
    return [
        f"command {x['id']} {x['type']} on {x['node']} (VM {x['vm_uuid']}, epoch {x['epoch']}) "
        f"sent by no task at {x['created_at']}"
        for x in newest
        if x["task_id"] is None and datetime.fromisoformat(x["created_at"]) > since
    ]


def repeated(w: World, c: httpx.Client, marks: dict[str, int]) -> list[str]:
    """The operations on one subject that ran more than once on the hosts since `marks` (one
    case runs one task, each of whose host actions must happen once), each with the commands
    that did them: their node, the task that sent them (none: the server by itself)."""
    found = _repeated_since(w.fabric, marks)
    if not found:
        return []
    for host in w.fabric.hosts():
        for op in host.executed()[marks.get(host.node, 0) :]:
            if not any(
                f.startswith(f"{op.command} on {op.vm_uuid or op.command_id}:") for f in found
            ):
                continue
            cmd = c.get(f"/commands/{op.command_id}").json() if op.command_id else {}
            by = f"task {cmd.get('task_id')}, epoch {cmd.get('epoch')}"
            found.append(
                f"    {op.command} on {host.node} at {op.at:.3f}: command {op.command_id} of {by}"
            )
    return found
