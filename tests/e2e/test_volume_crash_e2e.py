"""Crashes in the middle of volume copies and volume migrations, on a real cluster of
processes (a server and two sim agents whose copies are slow: a few seconds each).

Each case makes a fresh volume on node1, writes data into it behind Bollard's back (the sim
fabric), starts a copy or a migration to node2 (or, for the disk of a stopped VM, a migration
to a shared pool, which re-points the VM at the new file), and kills a process at one point
of it:

- the server, SIGKILLed by itself at a step's crash point (BOLLARD_CRASH_POINTS: every step
  of ``volume_migrate`` and of ``volume_copy``, before and after it runs; and as it undoes a
  copy that failed, with a fault injected), or by the test while the hosts copy (``during``);
- the agent of node1 (the host running the copy job), SIGKILLed while it copies.

The killed process is restarted; once the task has ended and no volume is in a transitional
state, every volume of the cluster (those of the earlier cases too) must be at rest in exactly
one place, its record's pool and node, with its file there holding the data written before
(an attached one also at its device in its VM's definition, on one host); no other file may
be left in any pool (no partial target, no source after a migration that switched, no target
after one that rolled back); no command may be left open; and the hosts' execution logs must
show no operation run twice (per command id, and per thing acted on within the case). The
whole module takes about three minutes.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest

from bollard.cli.cluster import ProcessRecord, is_running
from bollard.durable import TMP_PREFIX
from bollard.sim.fabric import Fabric
from bollard.sim.models import JobState
from bollard.sim.storage import PoolKey, SimStorage, volume_path
from tests.chaos.invariants import NON_TERMINAL, Snapshot, check_executed_once
from tests.e2e.conftest import Cli, local_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]  # per case; some 15 s each

COPY_RATE = 32.0  # MiB/s, every agent's --sim-copy-rate
SMALL_MB = 32  # a copy of one second: for the crash points
BIG_MB = 640  # a copy of 20 s: time to kill a process and restart it while it runs
TASK_DEADLINE = 90.0  # a copy step retries a lost host for a while
SETTLE_DEADLINE = 30.0
AT_REST = ("ready", "attached")
SHARED = "nfs"  # a shared pool, where the disks of VMs move

Kind = Literal["migrate", "copy"]


@dataclass(frozen=True)
class Case:
    kind: Kind
    kill: Literal["server", "agent"]
    # "<step>:before|after|undo" (a crash point of the server; "undo": the copy fails, and
    # the server dies as it undoes it), or "during" the copy.
    point: str
    # The volume is the disk of a stopped VM on node1, migrated to the shared pool (its VM's
    # definition is re-pointed at the new file); else a volume of its own, moved to node2.
    disk: bool = False

    @property
    def id(self) -> str:
        return (
            ("disk-" if self.disk else "")
            + f"{self.kind}-{self.kill}-"
            + (self.point.replace(":", "-"))
        )

    @property
    def crash_point(self) -> str | None:
        return None if self.point == "during" else f"volume_{self.kind}:{self.point}"


# Every step of each flow, before and after it runs; "undo": the copy fails (an injected
# fault) and the server dies as its rollback undoes it. In an order where the server
# restarted after one crash can already be armed for the next case's crash point (see
# _chained): that saves a restart per case.
CASES = [
    Case("migrate", "server", "remove-source:after"),
    Case("migrate", "server", "repoint:after", disk=True),
    Case("migrate", "server", "switch:after"),
    Case("migrate", "server", "copy:after"),
    Case("copy", "server", "copy:before"),
    Case("migrate", "server", "copy:undo"),
    Case("migrate", "server", "remove-source:before"),
    Case("migrate", "server", "repoint:before", disk=True),
    Case("migrate", "server", "switch:before"),
    Case("migrate", "server", "copy:before"),
    Case("copy", "server", "copy:after"),
    Case("copy", "server", "copy:undo"),
    # A process SIGKILLed while the hosts copy.
    Case("migrate", "server", "during"),
    Case("copy", "server", "during"),
    Case("migrate", "agent", "during"),
    Case("copy", "agent", "during"),
]
_STEP_ORDER = {"copy": 0, "switch": 1, "repoint": 2, "remove-source": 3}


def _resumed_passes(crashed: Case, point: str) -> bool:
    """Whether the task of `crashed`, resumed by the restarted server, may pass the crash
    point `point` (``<task type>:<step>:<when>``): a resumed task runs its step again from
    the start, and the steps after it (or, rolling back, the undo again)."""
    kind, step, when = point.split(":")
    if kind != f"volume_{crashed.kind}":
        return False
    own_step, own_when = crashed.point.split(":")
    if own_when == "undo" or when == "undo":
        return own_when == when == "undo"
    return _STEP_ORDER[step] >= _STEP_ORDER[own_step]


def _chained(case: Case) -> str | None:
    """The crash point to arm when the server restarts after `case`'s crash: the next case's,
    if the resumed task cannot reach it; else none (the next case restarts it armed)."""
    at = CASES.index(case)
    following = CASES[at + 1].crash_point if at + 1 < len(CASES) else None
    if following is None or _resumed_passes(case, following):
        return None
    return following


Place = tuple[str | None, str, str]  # (host of a local pool, else None; pool; file)


@dataclass
class Ledger:
    """What the test knows must hold: each volume's content (its checksum, by volume id)
    and name; the cases that failed (their volumes, named for them, are no longer checked,
    nor the files that were stray then); each case's outcome (printed at the end)."""

    checksums: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    quarantined: set[str] = field(default_factory=set)
    ignored_files: set[Place] = field(default_factory=set)
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, volume: dict[str, Any], checksum: str) -> None:
        self.checksums[volume["id"]] = checksum
        self.names[volume["id"]] = volume["name"]


class VolumeNotAtRest(AssertionError):
    """A volume was left in a transitional state or in ``error`` after its task ended."""


@dataclass
class World:
    cli: Cli
    ledger: Ledger
    armed: str | None = None  # the crash point the running server was started with

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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("volcrash")
    ledger = Ledger()
    with local_cluster(
        root, "--nodes", "2", "--sim-latency", "0.05", "--heartbeat", "1",
        "--sim-copy-rate", f"{COPY_RATE:g}",
    ) as cli:  # fmt: skip
        # Agents are SIGKILLed and restarted here: a node must not be declared dead (and
        # fenced) while its agent restarts on a loaded machine; fencing is not tested here.
        cli.ok("settings", "set", "health.dead_after", "60")
        w = World(cli, ledger)
        with w.api() as c:
            answer = c.post("/pools", json={"name": SHARED, "type": "shared", "path": "/srv/nfs"})
            assert answer.status_code == 201, answer.text
        yield w
    print("outcomes:", ledger.outcomes)


# -- processes ------------------------------------------------------------------------------


def _process(cli: Cli, name: str) -> ProcessRecord:
    return next(p for p in cli.cluster().processes if p.name == name)


def _connected(c: httpx.Client) -> bool:
    try:
        status = c.get("/status").json()
    except (httpx.TransportError, ValueError):
        return False
    return bool(status["nodes"]["connected"] == status["nodes"]["total"])


def _wait_dead(cli: Cli, name: str, why: str) -> None:
    proc = _process(cli, name)
    cli.wait_until(why, lambda: not is_running(proc.pid, proc.argv), timeout=30)


def _kill(cli: Cli, name: str) -> None:
    proc = _process(cli, name)
    if is_running(proc.pid, proc.argv):
        os.kill(proc.pid, signal.SIGKILL)
    _wait_dead(cli, name, f"{name} is gone after SIGKILL")


def _restart(w: World, name: str, crash_point: str | None = None) -> None:
    """Start the process `name` again as cluster.json records it (the server with a crash
    point armed, if given), and wait until every node is connected to the server."""
    env = {"BOLLARD_CRASH_POINTS": crash_point} if crash_point else {}
    result = w.cli.run("up", "--restart-process", name, "--data-dir", str(w.cli.data_dir), env=env)
    assert result.returncode == 0, result.stderr
    if name == "server":
        w.armed = crash_point
    with w.api() as c:
        w.cli.wait_until(f"{name} is back with every node connected", lambda: _connected(c), 30)


# -- the cluster as the API and the fabric show it ------------------------------------------


def _volumes(c: httpx.Client) -> list[dict[str, Any]]:
    page = c.get("/volumes", params={"limit": 1000}).json()
    assert page["next_cursor"] is None, "more volumes than one page holds"
    items: list[dict[str, Any]] = page["items"]
    return items


def _pool_types(c: httpx.Client) -> dict[str, str]:
    return {p["name"]: p["type"] for p in c.get("/pools").json()["items"]}


def _place(v: dict[str, Any], pool_type: str) -> Place:
    """Where a volume's file is in the fabric: (host for a local pool, else None; pool; file)."""
    return (v["node"] if pool_type == "local" else None, v["pool"], v["file"])


def _fabric_files(fabric: Fabric) -> dict[Place, str]:
    """Every volume record in every pool of the fabric, as stored (leftovers too): where it
    is -> what it is ("whole", "partial (copy <id> running)", "leftover of copy <id>")."""
    storage = SimStorage(fabric)
    now = time.time()
    found: dict[Place, str] = {}
    places: list[str | None] = [*fabric.nodes(), None]
    for node in places:
        for key in storage.pools(node):
            for path in sorted(storage.pool_dir(node or "", key).glob("*.json")):
                if path.name.startswith((".", TMP_PREFIX)):  # settings, a write under way
                    continue
                file = path.name.removesuffix(".json")
                raw = storage.raw(node or "", key, file)
                if raw is None:
                    continue
                resolved = storage.resolve(raw, now)
                if resolved is None:
                    what = f"leftover of copy {raw.partial.command_id if raw.partial else '?'}"
                elif resolved.partial is not None:
                    what = f"partial (copy {resolved.partial.command_id} running)"
                else:
                    what = "whole"
                found[(node, key.name, file)] = what
    return found


def _checksum(fabric: Fabric, place: Place, pool_type: str) -> str | None:
    """The checksum of the whole volume at ``place`` (None: absent or partial)."""
    node, pool, file = place
    key = PoolKey(pool, "shared" if pool_type == "shared" else "local")
    rec = SimStorage(fabric).get(node or "", key, file, time.time())
    return None if rec is None or rec.partial is not None else rec.checksum


@dataclass
class Problems:
    """What is wrong with the cluster's volumes: ``unsettled`` (a volume not at rest: held
    by a task, or left in ``error``; its missing file counts here too) and ``broken``
    (everything else: a file missing or holding other data, a stray file, a lost volume, an
    open command)."""

    unsettled: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(f"  - {p}" for p in [*self.broken, *self.unsettled])


def _quarantined(w: World, volume: str) -> bool:
    """Whether the volume is one of a case that failed (named for the case, see Case.id)."""
    return any(volume == q or volume.startswith(f"{q}-") for q in w.ledger.quarantined)


def _disk_problem(fabric: Fabric, v: dict[str, Any], pool_type: str) -> str | None:
    """What is wrong with the VM definition of an attached volume (None: its VM is defined
    on one host, with the volume's file at its device)."""
    defined = [(h.node, vm) for h in fabric.hosts() if (vm := h.get_vm(v["vm_uuid"]))]
    if len(defined) != 1:
        return f"its VM is defined on {[n for n, _ in defined]}"
    node, vm = defined[0]
    path = volume_path(PoolKey(v["pool"], "shared" if pool_type == "shared" else "local"),
                       v["file"])  # fmt: skip
    drives = {d.device: d.path for d in vm.drives}
    if drives.get(v["device"]) != path:
        return f"its VM on {node} has {drives.get(v['device'])} at {v['device']}, not {path}"
    return None


def _problems(w: World, c: httpx.Client) -> Problems:
    """What is wrong with the cluster's volumes now (nothing: all is as it must be). The
    volumes of cases that failed already (quarantined) are left out, and so are the files
    that were stray when they failed."""
    found = Problems()
    types = _pool_types(c)
    vols = _volumes(c)
    files = _fabric_files(w.fabric)
    owned: set[Place] = set()
    for v in vols:
        place = _place(v, types[v["pool"]])
        owned.add(place)
        if _quarantined(w, v["name"]):
            continue
        label = f"volume {v['name']} ({v['pool']}/{v['node']}/{v['file']})"
        at_rest = v["state"] in AT_REST and v["task_id"] is None
        if not at_rest:
            fault = f" ({v['fault']})" if v["fault"] else ""
            found.unsettled.append(f"{label} is {v['state']}{fault}, task {v['task_id']}")
        what = files.get(place)
        if what != "whole":
            where = found.broken if at_rest or what is not None else found.unsettled
            where.append(f"{label}: its file is {what or 'missing'} in the fabric")
            continue
        disk = _disk_problem(w.fabric, v, types[v["pool"]]) if v["vm_uuid"] else None
        if disk is not None:
            found.broken.append(f"{label}: {disk}")
        want = w.ledger.checksums.get(v["id"])
        have = _checksum(w.fabric, place, types[v["pool"]])
        if want is None:
            found.broken.append(f"{label} is not a volume this test made")
        elif have != want:
            found.broken.append(f"{label}: checksum {have} but {want} was written")
    recorded = {v["id"] for v in vols}
    for vid, name in sorted(w.ledger.names.items()):
        if vid not in recorded and not _quarantined(w, name):
            found.broken.append(f"volume {name} ({vid}) is lost: it has no record")
    for place, what in sorted(files.items(), key=str):
        if place not in owned and place not in w.ledger.ignored_files:
            found.broken.append(f"stray file {place}: {what}, owned by no volume record")
    open_commands = c.get("/commands", params={"state": ",".join(NON_TERMINAL)}).json()
    for x in open_commands["items"]:
        found.broken.append(f"command {x['id']} {x['type']} on {x['node']} is {x['state']}")
    return found


def _log_marks(fabric: Fabric) -> dict[str, int]:
    """How many operations each host has logged so far."""
    return {h.node: len(h.executed()) for h in fabric.hosts()}


def _repeated_since(fabric: Fabric, marks: dict[str, int]) -> list[str]:
    """The operations on one subject (a VM, a volume; a copy: its command) that ran more
    than once since ``marks``, under any command id: one case runs one task, each of whose
    host actions must happen once."""
    seen: Counter[tuple[str, str | None]] = Counter()
    for host in fabric.hosts():
        for op in host.executed()[marks.get(host.node, 0) :]:
            seen[(op.command, op.vm_uuid or op.command_id)] += 1
    return [f"{op} on {subject}: {n} times" for (op, subject), n in seen.items() if n > 1]


def _executed_twice(fabric: Fabric) -> list[str]:
    executed = {h.node: h.executed() for h in fabric.hosts()}
    snap = Snapshot(
        vms=[], nodes=[], open_commands=[], tasks=[], fabric={}, executed=executed, host_power={}
    )
    return check_executed_once(snap).offenders


# -- one case -------------------------------------------------------------------------------


def _wait_task(w: World, c: httpx.Client, task_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        try:
            task: dict[str, Any] = c.get(f"/tasks/{task_id}/wait", params={"timeout": 2}).json()
        except httpx.TransportError:
            return None
        return task if task["finished_at"] else None

    return w.cli.wait_until(f"task {task_id} ends", ended, timeout=TASK_DEADLINE)


def _make_source(w: World, c: httpx.Client, case: Case) -> dict[str, Any]:
    """The case's volume, new, on node1 (a VM's disk, if the case is about one), holding
    data written behind Bollard's back; its checksum is in the ledger."""
    size_mb = BIG_MB if case.point == "during" else SMALL_MB
    if case.disk:
        body = {"name": case.id, "vcpus": 1, "memory_mb": 64, "node": "node1",
                "disks": [{"size_mb": size_mb}]}  # fmt: skip
        answer = c.post("/vms", json=body)
    else:
        body = {"name": case.id, "size_mb": size_mb, "pool": "local", "node": "node1"}
        answer = c.post("/volumes", json=body)
    assert answer.status_code == 202, answer.text
    task = _wait_task(w, c, answer.json()["task"]["id"])
    assert task["state"] == "succeeded", task
    if case.disk:
        [v] = c.get("/volumes", params={"vm": case.id}).json()["items"]
    else:
        v = c.get(f"/volumes/{case.id}").json()
    rec = SimStorage(w.fabric).write(
        "node1", PoolKey("local", "local"), v["file"], [f"data of {case.id}".encode()], time.time()
    )
    w.ledger.add(v, rec.checksum)
    return dict(v)


def _start(c: httpx.Client, case: Case, name: str) -> str | None:
    """Ask for the case's migration or copy of volume `name`; its task id (None: the server
    died before it answered, as it may at a crash point; _find_task finds the task then)."""
    target = {"pool": SHARED} if case.disk else {"pool": "local", "node": "node2"}
    try:
        if case.kind == "migrate":
            answer = c.post(f"/volumes/{name}/migrate", json=target)
        else:
            body = {"name": f"{case.id}-copy", **target}
            answer = c.post(f"/volumes/{name}/copy", json=body)
    except httpx.TransportError:
        if case.crash_point is None:
            raise
        return None
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task"]["id"])


def _find_task(c: httpx.Client, case: Case, name: str) -> str:
    """The id of the case's task, looked up among the newest tasks."""
    newest = c.get("/tasks", params={"order": "newest", "limit": 20}).json()["items"]
    found = [
        t["id"]
        for t in newest
        if t["type"] == f"volume_{case.kind}" and t["params"].get("volume") == name
    ]
    assert len(found) == 1, f"{case.id}: the case's task among the newest: {newest}"
    return str(found[0])


def _copy_job_running(w: World, c: httpx.Client, task_id: str) -> str | None:
    """The copy's command id once its job runs on node1 (None before)."""
    task = c.get(f"/tasks/{task_id}").json()
    cid = next((s["commands"].get("copy") for s in task["steps"] if s["name"] == "copy"), None)
    if cid is None:
        return None
    job = w.fabric.host("node1").jobs.get(cid)
    return cid if job is not None and job.state(time.time()) == JobState.RUNNING else None


def _busy(c: httpx.Client) -> list[str]:
    """What is still moving: volumes held by a task (or in a transitional state), open
    commands (empty: the cluster has settled)."""
    held = [
        f"{v['name']} {v['state']} (task {v['task_id']})"
        for v in _volumes(c)
        if v["task_id"] is not None or v["state"] not in (*AT_REST, "error")
    ]
    open_commands = c.get("/commands", params={"state": ",".join(NON_TERMINAL)}).json()
    return held + [f"command {x['id']} {x['state']}" for x in open_commands["items"]]


def _run_case(w: World, case: Case) -> None:
    cli = w.cli
    with w.api() as c:
        source = _make_source(w, c, case)
    name = source["name"]
    server = _process(cli, "server")
    if w.armed != case.crash_point or not is_running(server.pid, server.argv):
        _restart(w, "server", case.crash_point)
    if case.point.endswith(":undo"):
        cli.ok("sim", "fault", "set", "node1", "--command", "volume_copy", "--mode", "fail",
               "--data-dir", str(cli.data_dir))  # fmt: skip
    marks = _log_marks(w.fabric)
    with w.api() as c:
        task_id = _start(c, case, name)
        if case.crash_point is not None:
            _wait_dead(cli, "server", f"the server kills itself at {case.crash_point}")
        else:
            assert task_id is not None
            cid = cli.wait_until(
                "the copy job runs on node1", lambda: _copy_job_running(w, c, task_id)
            )
            _kill(cli, "server" if case.kill == "server" else "node1")
            job = w.fabric.host("node1").jobs.get(cid)
            assert job is not None and time.time() < job.ends_at, "the copy ended before the kill"
    if case.kill == "server":
        _restart(w, "server", _chained(case))
    else:
        _restart(w, "node1")
    with w.api() as c:
        task = _wait_task(w, c, task_id or _find_task(c, case, name))
        copy = c.get(f"/volumes/{case.id}-copy")
        if case.kind == "copy" and copy.status_code == 200:  # made: it holds the source's data
            w.ledger.add(copy.json(), w.ledger.checksums[source["id"]])
        cli.wait_until("no volume is held by a task and no command is open",
                       lambda: not _busy(c), timeout=SETTLE_DEADLINE)  # fmt: skip
        # A leftover file may still go (the storage reconciler removes partial leftovers).
        problems = _problems(w, c)
        deadline = time.monotonic() + SETTLE_DEADLINE
        while problems.broken and time.monotonic() < deadline:
            time.sleep(0.5)  # polling interval, not synchronisation
            problems = _problems(w, c)
        ended = f"{case.id}: task {task['state']} ({task['error']})"
        assert not problems.broken, f"{ended}:\n{problems}"
        twice = _executed_twice(w.fabric)
        assert twice == [], f"{ended}: commands executed more than once: {twice}"
        repeated = _repeated_since(w.fabric, marks)
        assert repeated == [], f"{ended}: operations run more than once: {repeated}"
        if problems.unsettled:
            raise VolumeNotAtRest(f"{ended}:\n{problems}")
        v = c.get(f"/volumes/{name}").json()
        _check_outcome(w, c, case, task, source, v)


def _check_outcome(
    w: World,
    c: httpx.Client,
    case: Case,
    task: dict[str, Any],
    source: dict[str, Any],
    v: dict[str, Any],
) -> None:
    """The task ended as one of its ends allows, with the volume where that end puts it."""
    state = task["state"]
    assert state in ("succeeded", "rolled_back"), (case.id, task)
    if case.kind == "migrate":
        moved = (SHARED, None) if case.disk else ("local", "node2")
        want = moved if state == "succeeded" else ("local", "node1")
        assert (v["pool"], v["node"]) == want, (case.id, task, v)
        w.ledger.outcomes[case.id] = f"{state}: volume in {v['pool']} on {v['node']}"
        return
    assert v["node"] == "node1" and v["id"] == source["id"], (case.id, v)
    copy = c.get(f"/volumes/{case.id}-copy")
    if state == "succeeded":
        assert copy.status_code == 200, copy.text
        made = copy.json()
        assert made["node"] == "node2", made
        data = _checksum(w.fabric, ("node2", "local", made["file"]), "local")
        assert data == w.ledger.checksums[source["id"]], (case.id, made)
    else:
        assert copy.status_code == 404, copy.text
    w.ledger.outcomes[case.id] = f"{state}" + (" (copy on node2)" if state == "succeeded" else "")


def _quarantine(w: World, case: Case) -> None:
    """A case failed: its volumes, and the files stray now, are not checked again (so that
    the later cases test what they are about). Best effort: the cluster may be down."""
    w.ledger.quarantined.add(case.id)
    try:
        with w.api() as c:
            types = _pool_types(c)
            owned = {_place(v, types[v["pool"]]) for v in _volumes(c)}
    except (httpx.HTTPError, KeyError, ValueError):
        return
    w.ledger.ignored_files |= set(_fabric_files(w.fabric)) - owned


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_volume_task_survives_a_kill(world: World, case: Case) -> None:
    try:
        _run_case(world, case)
    except BaseException:
        _quarantine(world, case)
        raise
