"""Sim fabric: fault injection, jobs and the execution log, and `bollard sim fault`."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from bollard.cli.sim_cmd import sim_app
from bollard.domain.states import PowerState
from bollard.sim import Fabric, FaultMode, JobState, SimVm
from bollard.sim.models import AGENT_FAULTS, DRIVER_FAULTS, MigrationPhase

ANY = frozenset(FaultMode)


def test_fault_fires_count_times_then_clears_itself(tmp_path: Path) -> None:
    faults = Fabric(tmp_path).host("n1").faults
    assert faults.take("start", ANY) is None
    faults.set("start", FaultMode.FAIL, count=2)
    faults.set("stop", FaultMode.HANG, count=0)
    assert [(f.command, f.mode, f.remaining) for f in faults.all()] == [
        ("start", FaultMode.FAIL, 2),
        ("stop", FaultMode.HANG, None),
    ]
    assert faults.take("define", ANY) is None
    assert faults.take("start", AGENT_FAULTS) is None  # not a mode this point fires
    first = faults.take("start", DRIVER_FAULTS)
    assert first is not None and (first.fired, first.remaining) == (1, 1)
    assert faults.take("start", DRIVER_FAULTS) is not None
    assert faults.take("start", DRIVER_FAULTS) is None
    for _ in range(5):  # count 0: until cleared
        assert faults.take("stop", DRIVER_FAULTS) is not None
    assert [f.command for f in faults.all()] == ["stop"]
    assert faults.clear("stop") == 1 and faults.clear("stop") == 0
    assert faults.all() == [] and not faults.path.exists()


def test_set_replaces_and_clear_all(tmp_path: Path) -> None:
    faults = Fabric(tmp_path).host("n1").faults
    faults.set("start", FaultMode.FAIL)
    faults.set("start", FaultMode.DROP_ANSWER, count=3)
    faults.set("undefine", FaultMode.CRASH_AGENT)
    [start, _] = faults.all()
    assert (start.mode, start.count, start.fired) == (FaultMode.DROP_ANSWER, 3, 0)
    assert faults.clear() == 2 and faults.all() == []
    with pytest.raises(ValueError):
        faults.set("start", FaultMode.FAIL, count=-1)


def _take_many(root: str, tries: int, results: multiprocessing.Queue[int]) -> None:
    faults = Fabric(root).host("n1").faults
    results.put(sum(faults.take("start", ANY) is not None for _ in range(tries)))


def test_a_fault_fires_exactly_count_times_across_processes(tmp_path: Path) -> None:
    Fabric(tmp_path).host("n1").faults.set("start", FaultMode.FAIL, count=25)
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_take_many, args=(str(tmp_path), 20, results)) for _ in range(4)]
    for p in procs:
        p.start()
    fired = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(fired) == 25


def test_jobs_progress_with_time_abort_and_survive_the_reader(tmp_path: Path) -> None:
    jobs = Fabric(tmp_path).host("n1").jobs
    job = jobs.start("c1", "migrate", 10.0, vm_uuid="vm-1", now=100.0)
    assert jobs.start("c1", "other", 99.0, now=105.0) == job  # one job per command id
    jobs.start("c2", "copy", 10.0, supervised=False, now=100.0)
    jobs.start("c3", "copy", 1.0, now=100.0)
    again = Fabric(tmp_path).host("n1").jobs.get("c1")  # another process's view
    assert again is not None
    assert (again.state(104.0), again.progress(104.0)) == (JobState.RUNNING, 0.4)
    assert (again.state(110.0), again.progress(111.0)) == (JobState.COMPLETED, 1.0)
    aborted = jobs.abort_supervised("agent lost its server", now=105.0)
    assert [j.command_id for j in aborted] == ["c1"]  # c2 may run alone; c3 had completed
    c1 = jobs.get("c1")
    assert c1 is not None and c1.state(200.0) == JobState.ABORTED
    assert c1.abort_reason == "agent lost its server" and c1.progress(200.0) == 0.5
    assert jobs.abort("c3", "late", now=105.0) == jobs.get("c3")  # completed: unchanged
    assert jobs.abort("nope", "x") is None
    assert [j.command_id for j in jobs.all()] == ["c1", "c2", "c3"]
    assert jobs.remove("c1") and not jobs.remove("c1")
    with pytest.raises(ValueError):
        jobs.start("../x", "k", 1.0)


def test_execution_log_skips_torn_lines(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("n1")
    assert host.executed() == []
    host.exec_log.append("c1", "start", "vm-1")
    host.exec_log.append(None, "stop", "vm-1")
    with host.exec_log.path.open("a") as f:
        f.write('{"command_id": "c3", "comm')
    assert [(o.command_id, o.command) for o in host.executed()] == [("c1", "start"), (None, "stop")]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    return app


def test_fault_cli_set_list_clear(app: typer.Typer, tmp_path: Path) -> None:
    fab = tmp_path / "fab"
    Fabric(fab).host("node-a").ensure_host(4, 1024)
    run = CliRunner().invoke
    where = ["--fabric-dir", str(fab)]
    result = run(
        app, ["sim", "fault", "set", "node-a", "--command", "start", "--mode", "hang", *where]
    )
    assert result.exit_code == 0, result.output
    assert "start -> hang (1 time)" in result.output
    result = run(
        app,
        ["sim", "fault", "set", "node-a", "--command", "stop", "--mode", "drop-answer",
         "--count", "0", *where],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run(app, ["sim", "fault", "list", "-o", "json", *where])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["node"], r["command"], r["mode"], r["count"], r["remaining"]) for r in rows] == [
        ("node-a", "start", "hang", 1, 1),
        ("node-a", "stop", "drop-answer", 0, None),
    ]
    table = run(app, ["sim", "fault", "list", *where])
    assert "drop-answer" in table.output and "until cleared" in table.output
    result = run(app, ["sim", "fault", "clear", "node-a", "--command", "stop", *where])
    assert result.exit_code == 0 and "1 fault cleared" in result.output
    assert [f.command for f in Fabric(fab).host("node-a").faults.all()] == ["start"]
    result = run(app, ["sim", "fault", "clear", "node-a", *where])
    assert result.exit_code == 0 and Fabric(fab).host("node-a").faults.all() == []


def test_fault_cli_refuses_unknown_hosts_commands_and_modes(
    app: typer.Typer, tmp_path: Path
) -> None:
    fab = tmp_path / "fab"
    Fabric(fab).host("node-a").ensure_host(4, 1024)
    where = ["--fabric-dir", str(fab)]

    def fault_set(node: str, command: str, mode: str) -> Result:
        args = ["sim", "fault", "set", node, "--command", command, "--mode", mode, *where]
        return CliRunner().invoke(app, args)

    bad_node = fault_set("node-x", "start", "fail")
    assert bad_node.exit_code != 0 and "no sim host 'node-x'" in bad_node.output
    assert "node-a" in bad_node.output
    bad_cmd = fault_set("node-a", "boot", "fail")
    assert bad_cmd.exit_code != 0 and "unknown command type 'boot'" in bad_cmd.output
    bad_mode = fault_set("node-a", "start", "explode")
    assert bad_mode.exit_code != 0
    assert Fabric(fab).host("node-a").faults.all() == []


def test_fault_cli_migrate_phase_and_load(app: typer.Typer, tmp_path: Path) -> None:
    fab = tmp_path / "fab"
    host = Fabric(fab).host("node-a")
    host.ensure_host(4, 1024)
    where = ["--fabric-dir", str(fab)]
    run = CliRunner().invoke
    base = ["sim", "fault", "set", "node-a", "--mode", "fail", *where]
    result = run(app, [*base, "--command", "migrate", "--phase", "switchover"])
    assert result.exit_code == 0, result.output
    assert "migrate -> fail at switchover (1 time)" in result.output
    [fault] = host.faults.all()
    assert (fault.command, fault.mode, fault.phase) == ("migrate", FaultMode.FAIL, "switchover")
    rows = json.loads(run(app, ["sim", "fault", "list", "-o", "json", *where]).stdout)
    assert rows[0]["phase"] == "switchover"
    wrong = run(app, [*base, "--command", "start", "--phase", "transfer"])
    assert wrong.exit_code != 0 and "--phase is only for" in wrong.output
    bad = run(app, [*base, "--command", "migrate", "--phase", "later"])
    assert bad.exit_code != 0
    with pytest.raises(ValueError, match="only for"):
        host.faults.set("migrate", FaultMode.HANG, phase=MigrationPhase.CLEANUP)

    host.put_vm(SimVm(uuid="u1", name="a", vcpus=3, memory_mb=64, power=PowerState.RUNNING))
    host.put_vm(SimVm(uuid="u2", name="b", vcpus=1, memory_mb=64, power=PowerState.PAUSED))
    assert host.load() == 0.75  # running vCPUs over the host's
    result = run(app, ["sim", "load", "set", "node-a", "2.5", *where])
    assert result.exit_code == 0, result.output
    assert host.load() == 2.5
    assert run(app, ["sim", "load", "clear", "node-a", *where]).exit_code == 0
    assert host.load() == 0.75
    assert run(app, ["sim", "load", "set", "node-x", "1", *where]).exit_code != 0
