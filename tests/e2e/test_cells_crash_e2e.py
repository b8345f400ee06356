"""Crashes at the steps of a move of a VM between cells, of its confirm and of its revert, on
a real cluster of processes: an API server in front of two cells, one sim host each
(`bollard up --cells 2 --nodes 1`; cells_world.py).

Each case runs one task of the API server on VM mv, brought to where the case starts (ACTIVE,
or waiting in VERIFY_RESIZE after a move), and hurts it at one point:

- ``api``: the API server SIGKILLs itself at a crash point of the task (BOLLARD_CRASH_POINTS):
  every step of ``cross_cell_move``, ``cross_cell_confirm`` and ``cross_cell_revert`` once,
  mostly after the step acted and before its result was written (where a step run again must
  not act twice), and the undo of a step in a move or a revert that rolls back because a host
  fails an operation once (a sim fault: the target host's start or import, the source host's
  start);
- ``cell``: a cell server is SIGKILLed by the test while its host exports (the source cell)
  or imports (the target cell) the VM's disk, made slow by a sim delay, and restarted;
- ``down``: the target cell's server is SIGKILLed while the source exports, so the step that
  sends it the disk finds it down: the step waits and tries again, the cell is restarted, and
  the move goes on.

The killed process is restarted (the API server with the next case's crash point when the
resumed task cannot reach it, so each case costs one restart); once the task has ended it
must have ended as its case allows (a move in VERIFY_RESIZE in the target cell, or rolled back
where a host failed or a cell was killed; a confirm or revert done, or a revert rolled back to
VERIFY_RESIZE where a host failed), and everything
cells_world.problems lists must hold: the VM listed once through the API server, running on
exactly one host of the two cells, on the node its record names, mapped to that cell; no copy
left in the other cell once the move was confirmed or reverted (while it waits, the source's
hidden copy, stopped); volumes, allocations, image stores, records, commands and reconcile
scans clean in both cells; and no host operation of the case's task run twice.

The module takes less than half as long as test_resize_crash_e2e.py (one restart of the API
server, a few seconds, per case). Left out for that budget, though they pass: the other crash
point (before or after) of each step, and the undos of the other steps of a move or a revert
that rolls back. Also left out: a cell that stays down past a step's deadline. A move's step
tries a silent cell for about two minutes (bollard api --move-cell-wait) and an undo for five
(cell_tasks.UNDO_DEADLINE), neither configurable; the ``down`` case brings the cell back within
the first.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal, cast

import httpx
import pytest

from bollard.cells.move_end import ConfirmFlow, RevertFlow
from bollard.cells.move_flow import CellMoves, MoveFlow, cell_retry
from bollard.cli.cluster import is_running
from bollard.domain.models import Task
from tests.chaos.invariants import NON_TERMINAL
from tests.e2e.cells_world import (
    CELLS,
    NODE_OF,
    VM,
    World,
    bring_to,
    cell_of,
    cells_cluster,
    log_marks,
    other,
    prepare,
    problems,
    repeated,
    restart,
    settle_down,
    settled_problems,
    start_task,
    steps_of,
    vm_of,
    wait_task,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]  # per case; most take seconds

Kind = Literal["move", "confirm", "revert"]
TASK_TYPES: dict[Kind, str] = {
    "move": "cross_cell_move", "confirm": "cross_cell_confirm", "revert": "cross_cell_revert",
}  # fmt: skip
SLOW_HOST = 3.0  # seconds a sim host's export or import is delayed: time to kill a cell
CASE_DOWN_STEP = "transfer"  # the step of the move that finds the target cell down


@dataclass(frozen=True)
class Case:
    kind: Kind
    # kill "api": its crash point in the task, "<step>:before|after|undo"; kill "cell": the
    # host command during which the cell that sent it is killed (volume_export: the source
    # cell; volume_import: the target cell); kill "down": the step that finds the target
    # cell down.
    point: str
    kill: Literal["api", "cell", "down"] = "api"
    how: Literal["resize", "migrate", "grow"] = "resize"  # what moves the VM
    # ("source" | "target", command): the host fails that command once, and the task rolls
    # back (its crash point is the undo of a step).
    fault: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        how = "" if self.how == "resize" else f"-{self.how}"
        return f"{self.kind}-{self.kill}-{self.point.replace(':', '-')}{how}"

    @property
    def task_type(self) -> str:
        return TASK_TYPES[self.kind]

    @property
    def crash_point(self) -> str | None:
        return f"{self.task_type}:{self.point}" if self.kill == "api" else None


# Every step of the three tasks once (the move's in between the others, so the VM goes back
# and forth), in an order where the API server restarted after a crash can mostly be armed at
# once for the next case's point (one the resumed task cannot reach: see _chained).
CASES = [
    Case("move", "copy_records:after"),
    Case("revert", "stop_target:after"),
    Case("move", "stop_source:after", how="migrate"),
    Case("confirm", "delete_source:after"),
    Case("move", "export:after"),
    Case("move", "volume_export", kill="cell"),
    Case("revert", "flip_back:after"),
    Case("move", "transfer:after"),
    Case("revert", "start_source:after"),
    Case("move", "spawn:after", how="migrate"),
    Case("move", "volume_import", kill="cell"),
    Case("confirm", "drop_images:before"),
    Case("move", "grow:after", how="grow"),
    Case("move", "transfer", kill="down"),
    Case("revert", "delete_target:after"),
    Case("move", "start_target:undo", fault=("target", "start")),
    Case("revert", "drop_images:before"),
    Case("move", "copy_records:undo", fault=("target", "volume_import")),
    Case("revert", "flip_back:undo", fault=("source", "start")),
    Case("move", "flip:after"),
    Case("move", "start_target:after"),
    Case("move", "check:before"),
]


def _flows() -> dict[Kind, Any]:
    # (a flow's steps are only named here, never run: nothing but their retry is read)
    moves = cast(CellMoves, SimpleNamespace(retry=cell_retry(1.0)))
    return {"move": MoveFlow(moves), "confirm": ConfirmFlow(moves), "revert": RevertFlow(moves)}


STEPS: dict[str, list[str]] = {
    TASK_TYPES[kind]: [s.name for s in flow.steps(cast(Task, None))]
    for kind, flow in _flows().items()
}


def _type_of(point: str | None) -> str | None:
    return None if point is None else point.split(":")[0]


def _out_of_reach(case: Case, point: str | None) -> bool:
    """Whether `case`'s task, resumed after its crash, cannot reach `point`: one of another
    type, or before or after an earlier step than the crash (a resumed task runs on from the
    step it crashed in; it is not meant to roll back)."""
    if point is None or _type_of(point) != case.task_type:
        return True
    step, when = point.split(":")[1:]
    steps = STEPS[case.task_type]
    crashed = case.point.split(":")[0]
    return when != "undo" and steps.index(step) < steps.index(crashed)


def _armed_for(at: int) -> str | None:
    """The crash point the API server must be armed with when case `at` starts: its own; for
    a case without one, the next case's if this case's task cannot reach it (another type)."""
    case = CASES[at]
    if case.crash_point is not None or at + 1 == len(CASES):
        return case.crash_point
    following = CASES[at + 1].crash_point
    return following if _type_of(following) != case.task_type else None


def _chained(at: int) -> str | None:
    """The crash point to arm when the API server restarts after case `at`'s crash: the next
    case's, if the resumed task cannot reach it; else none."""
    if at + 1 == len(CASES):
        return None
    following = _armed_for(at + 1)
    return following if _out_of_reach(CASES[at], following) else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    started = time.monotonic()
    first = _armed_for(0)  # (the cells run tasks of other types: they never reach it)
    with cells_cluster(tmp_path_factory.mktemp("cellscrash"), first) as cli:
        w = World(cli, armed=first)
        up = time.monotonic() - started
        prepare(w)
        with w.api() as c:
            assert problems(w, c) == []
        yield w
        print(f"\n{len(w.outcomes)} cases in {time.monotonic() - started:.0f} s "
              f"(the cluster's start {up:.0f} s); outcomes:")  # fmt: skip
        for case_id, outcome in w.outcomes.items():
            print(f"  {case_id}: {outcome}")


def kill(w: World, name: str) -> None:
    proc = w.process(name)
    if is_running(proc.pid, proc.argv):
        os.kill(proc.pid, signal.SIGKILL)
    wait_dead(w, name, f"{name} is gone after SIGKILL")


def wait_dead(w: World, name: str, why: str) -> None:
    proc = w.process(name)
    w.cli.wait_until(why, lambda: not is_running(proc.pid, proc.argv), timeout=30)


def task_ids(c: httpx.Client) -> set[str]:
    items = c.get("/tasks", params={"order": "newest", "limit": 50}).json()["items"]
    return {str(t["id"]) for t in items}


def new_task(c: httpx.Client, task_type: str, before: set[str]) -> str:
    """The id of the VM's task of `task_type` that is not among `before` (asked for by a
    request whose answer the API server died before sending)."""
    items = c.get("/tasks", params={"order": "newest", "limit": 50}).json()["items"]
    found = [
        t["id"] for t in items if t["type"] == task_type and t["vm"] == VM and t["id"] not in before
    ]
    assert len(found) == 1, f"the {task_type} task of {VM} among the newest: {items}"
    return str(found[0])


def step_events(c: httpx.Client, task_id: str) -> list[str]:
    """The API server's events of a task's steps, as `<kind> <step>` (e.g. step.waiting
    transfer), oldest first."""
    items = c.get("/events", params={"task": task_id, "limit": 200}).json()["items"]
    return [f"{e['kind']} {e['data'].get('step')}" for e in items if e["kind"].startswith("step.")]


def open_commands(w: World, cell: str, command: str) -> list[dict[str, Any]]:
    """The cell's open commands of a type."""
    with w.cell(cell) as cc:
        items = cc.get("/commands", params={"state": ",".join(NON_TERMINAL)}).json()["items"]
    return [x for x in items if x["type"] == command]


# -- one case -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Before:
    """Where the case's task takes the VM from and to."""

    source: str  # node
    target: str  # node
    record: str | None  # the move record (of a confirm or revert)


def _before(vm: dict[str, Any]) -> Before:
    r = vm.get("resize")
    if vm["status"] != "VERIFY_RESIZE" or r is None:
        return Before(vm["node"], NODE_OF[other(vm["cell"])], None)
    return Before(str(r["source"]), str(r["dest"]), str(r["migration_id"]))


def _start(c: httpx.Client, case: Case) -> str | None:
    """Ask for the case's task; its id (None: the API server died before it answered, as it
    may at a crash point; new_task finds it then)."""
    try:
        answer = start_task(c, case.task_type, case.how)
    except httpx.TransportError:
        if case.crash_point is None:
            raise
        return None
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task"]["id"])


def _kill_cell_mid_step(w: World, case: Case, before: Before) -> str:
    """Kill the cell whose host runs the case's (slow) command while it runs; the command."""
    node = before.source if case.point == "volume_export" else before.target
    cell = cell_of(node)
    running = w.cli.wait_until(
        f"{case.point} runs on {node}", lambda: open_commands(w, cell, case.point), timeout=30
    )
    # Killed once the host is inside its slow part (the delay fault taken, SLOW_HOST long):
    # the command SENT is not enough, for the agent may still be opening the image's transfer
    # with the server about to die (a ReadError then fails the command before its fault).
    armed = f"{node}: {case.point} "
    w.cli.wait_until(
        f"{node} to be inside its delayed {case.point}",
        lambda: not any(fault.startswith(armed) for fault in w.armed_faults()),
        timeout=30,
    )
    kill(w, cell)
    return str(running[0]["id"])


def _cell_down_during_move(w: World, c: httpx.Client, task_id: str, before: Before) -> None:
    """The target cell goes down while the source exports; the step that sends it the disk
    waits, and the cell comes back."""
    source, target = cell_of(before.source), cell_of(before.target)
    w.cli.wait_until(
        f"the export runs on {before.source}",
        lambda: open_commands(w, source, "volume_export"),
        timeout=30,
    )
    kill(w, target)
    waits = f"step.waiting {CASE_DOWN_STEP}"
    w.cli.wait_until(
        f"the move's {CASE_DOWN_STEP} waits for {target}",
        lambda: waits in step_events(c, task_id),
        timeout=30,
    )
    restart(w, target)


def _outcome(c: httpx.Client, case: Case, task: dict[str, Any], before: Before) -> str:
    """The task ended as its case allows, with the VM where that end puts it."""
    state = task["state"]
    vm = vm_of(c)
    where = f"{vm['status']} in {vm['cell']} on {vm['node']} ({vm['flavor']['name']})"
    rolls_back = case.fault is not None or (case.kill == "cell" and state == "rolled_back")
    assert state == ("rolled_back" if rolls_back else "succeeded"), steps_of(task)
    if case.kind == "move":
        want = ("ACTIVE", before.source) if rolls_back else ("VERIFY_RESIZE", before.target)
    elif case.kind == "confirm":
        want = ("ACTIVE", before.target)
    else:
        want = ("VERIFY_RESIZE", before.target) if rolls_back else ("ACTIVE", before.source)
    assert (vm["status"], vm["node"]) == want, where
    assert vm["cell"] == cell_of(want[1]), where
    record_id = before.record or task["id"]
    record = c.get(f"/migrations/{record_id}").json()
    return f"{state}: {where}, record {record['status']}"


def _run_case(w: World, case: Case) -> None:
    at = CASES.index(case)
    api = w.process("api")
    if w.armed != _armed_for(at) or not is_running(api.pid, api.argv):
        restart(w, "api", _armed_for(at))
    killed: str | None = None
    command: str | None = None
    with w.api() as c:
        bring_to(w, c, waiting=case.kind != "move", armed_type=_type_of(w.armed))
        before = _before(vm_of(c))
        if case.fault is not None:
            side, failing = case.fault
            w.arm_fault(before.source if side == "source" else before.target, failing, "fail")
        elif case.kill == "cell":
            node = before.source if case.point == "volume_export" else before.target
            w.arm_fault(node, case.point, "delay", SLOW_HOST)
        elif case.kill == "down":
            w.arm_fault(before.source, "volume_export", "delay", SLOW_HOST)
        earlier = task_ids(c)
        marks = log_marks(w)
        started = time.monotonic()
        task_id = _start(c, case)
        if case.crash_point is not None:
            wait_dead(w, "api", f"the API server kills itself at {case.crash_point}")
            killed = "api"
        elif case.kill == "cell":
            command = _kill_cell_mid_step(w, case, before)
            killed = cell_of(before.source if case.point == "volume_export" else before.target)
        else:
            assert task_id is not None
            _cell_down_during_move(w, c, task_id, before)
    if killed is not None:
        restart(w, killed, _chained(at) if killed == "api" else None)
    with w.api() as c:
        task = wait_task(w, c, task_id or new_task(c, case.task_type, earlier))
        found = settled_problems(w, c)
        found += repeated(w, marks)
        found += [f"fault not fired: {f}" for f in w.armed_faults()]
        assert found == [], f"{case.id}: {steps_of(task)}\n" + "\n".join(f"  - {p}" for p in found)
        outcome = _outcome(c, case, task, before)
        if command is not None:
            with w.cell(killed or CELLS[0]) as cc:
                sent = cc.get(f"/commands/{command}").json()
            assert sent["state"] in ("COMPLETED", "RECONCILED"), (case.id, sent)
            outcome += f", {case.point} {sent['state']}"
        if case.kill == "down":
            assert f"step.waiting {CASE_DOWN_STEP}" in step_events(c, task["id"])
        settled = f", settled in {w.waited:.1f} s" if w.waited else ""
        w.outcomes[case.id] = f"{outcome} [{time.monotonic() - started:.1f} s{settled}]"


def _remember(w: World) -> None:
    """A case failed: what is wrong now is not held against the later cases (so that they
    test what they are about). Best effort: a process may be down."""
    try:
        for name in ("api", *CELLS):
            proc = w.process(name)
            if not is_running(proc.pid, proc.argv):
                restart(w, name)
        with w.api() as c:
            settle_down(w, c)
            w.known |= set(problems(w, c))
    except (httpx.HTTPError, KeyError, ValueError, AssertionError):
        return


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_move_between_cells_survives_a_kill(world: World, case: Case) -> None:
    try:
        _run_case(world, case)
    except BaseException:
        _remember(world)
        raise


def test_every_step_has_a_case() -> None:
    """Each step of the three tasks (as their flows define them) has a crash point among the
    cases, and after each crash the API server can be armed at once for the next case."""
    for kind in TASK_TYPES:
        names = set(STEPS[TASK_TYPES[kind]])
        hurt = {c.point.split(":")[0] for c in CASES if c.kind == kind and c.kill == "api"}
        assert hurt >= names, f"{kind}: no case at {sorted(names - hurt)}"
    unchained = [
        CASES[at + 1].id
        for at, case in enumerate(CASES[:-1])
        if case.crash_point is not None and _chained(at) != _armed_for(at + 1)
    ]
    assert unchained == [], "cases that need a restart of their own"
