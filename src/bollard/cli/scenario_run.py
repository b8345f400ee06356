"""Running a scenario: start its cluster, set it up, watch the must-nevers, play the timeline,
wait for the expected end state, stop everything; the result and the timeline say how it went.

The must-never checks run from the end of the set-up to the end of the run: a thread reads
the sim fabric continuously (bollard.sim.scenario.watch) and another follows the server's
events (scenario_events; the recovery-before-fence check reads them). A timeline step waits
for its ``at`` (seconds since the timeline began), and a ``wait`` step or the final ``expect``
polls the server and the fabric until the state holds (and has held for ``stable`` seconds)
or its deadline passes. No step waits on a fixed sleep otherwise.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bollard.cli.client import CliError
from bollard.cli.scenario_cluster import ScenarioCluster, start_cluster
from bollard.cli.scenario_events import EventTail
from bollard.cli.scenario_setup import running_by_name, set_up
from bollard.cli.scenario_steps import StepFailed, StepRunner
from bollard.cli.scenario_timeline import Entry, Result, Timeline
from bollard.sim.fabric import Fabric
from bollard.sim.scenario.checks import FenceOrder, World, misses
from bollard.sim.scenario.model import Action, Expectation, Scenario
from bollard.sim.scenario.watch import FabricView, FabricWatch, Violation, WatchPlan, stay_on_plan

__all__ = ["run_scenario"]

STARTUP_TIMEOUT = 60.0
POLL = 0.25  # seconds between two looks at the cluster while waiting for a state
BACKGROUND_GRACE = 30.0  # how long background steps (clean shutdowns) may outlive the end


@dataclass
class _Run:
    scenario: Scenario
    timeline: Timeline
    result: Result
    cluster: ScenarioCluster
    uuids: dict[str, str]
    watch: FabricWatch | None = None
    tail: EventTail | None = None

    @property
    def names(self) -> dict[str, str]:
        return {uuid: name for name, uuid in self.uuids.items()}

    def never(self, violation: Violation) -> None:
        self.result.violations.append(violation.text)
        self.timeline.add("NEVER", violation.text)

    def look(self) -> World:
        client = self.cluster.client
        vms = {v["name"]: v for v in client.list_all("/vms")}
        nodes = {n["name"]: n for n in client.list_all("/nodes")}
        running = running_by_name(Fabric(self.cluster.fabric_dir), self.names)
        events: list[dict[str, Any]] = self.tail.snapshot() if self.tail else []
        return World(vms, nodes, running, events)

    def await_state(self, expect: Expectation, label: str) -> list[str]:
        """Poll until ``expect`` holds and has held ``stable`` seconds (its misses if not by
        its deadline: ``within`` seconds to be reached)."""
        deadline = time.monotonic() + expect.within
        met_since: float | None = None
        missing: list[str] = []
        while True:
            try:
                missing = misses(expect, self.look())
            except CliError as exc:  # the server restarts, or is too busy to answer
                missing = [f"cannot look at the cluster: {exc}"]
            now = time.monotonic()
            if not missing:
                if met_since is None:
                    met_since = now
                    held = f"; must hold {expect.stable:g} s" if expect.stable else ""
                    self.timeline.add("check", f"{label} holds{held}")
                if now - met_since >= expect.stable:
                    return []
            elif met_since is not None:
                self.timeline.add("check", f"{label} no longer holds: {missing[0]}")
                met_since = None
            if met_since is None and now >= deadline:
                return missing
            time.sleep(POLL)  # polling interval while waiting for a state


def run_scenario(
    scenario: Scenario,
    *,
    data_dir: Path | None = None,
    keep: bool = False,
    echo: Callable[[Entry], None] | None = None,
) -> tuple[Result, Timeline]:
    """Run ``scenario`` on a cluster of its own (in ``data_dir``, else a new temporary
    directory, removed at the end unless ``keep`` or the run failed)."""
    began = time.monotonic()
    timeline = Timeline(echo=echo)
    result = Result(scenario=scenario.name, file=scenario.file)
    root = data_dir or Path(tempfile.mkdtemp(prefix=f"bollard-scenario-{_slug(scenario.name)}-"))
    cluster: ScenarioCluster | None = None
    try:
        cluster = start_cluster(
            scenario.cluster,
            root,
            timeout=STARTUP_TIMEOUT,
            say=lambda text: timeline.add("setup", text),
        )
        uuids = set_up(cluster, scenario.cluster, timeline, STARTUP_TIMEOUT)
        result.setup_seconds = time.monotonic() - began
        timeline.begin()
        run = _Run(scenario, timeline, result, cluster, uuids)
        try:
            _play(run)
        finally:
            _stop_watching(run)
    except CliError as exc:
        result.error = f"the run stopped: {exc}"
        timeline.add("error", result.error)
    finally:
        if cluster is not None:
            stopping = time.monotonic()
            cluster.stop()
            timeline.add("result", f"cluster stopped in {time.monotonic() - stopping:.1f} s")
    result.seconds = time.monotonic() - began
    result.passed = not (result.error or result.misses or result.violations)
    timeline.add("result", result.summary())
    if keep or not result.passed or data_dir is not None:
        result.data_dir = str(root)
        timeline.add("result", f"data dir kept (logs, database, sim fabric): {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return result, timeline


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())[:40].strip("-") or "run"


def _plan(run: _Run) -> WatchPlan:
    s = run.scenario
    view = FabricView.of(Fabric(run.cluster.fabric_dir).snapshot())
    moved = [run.uuids[n] for n in s.never.moved]
    return WatchPlan(
        names=run.names,
        stay_stopped=frozenset(run.uuids[n] for n in s.never.running),
        stay_on=stay_on_plan(view, moved),
        apart=tuple((r.name, frozenset(run.uuids[v] for v in r.vms)) for r in s.strict_apart()),
    )


def _play(run: _Run) -> None:
    tl, s = run.timeline, run.scenario
    run.watch = FabricWatch(Fabric(run.cluster.fabric_dir), _plan(run), run.never).start()
    watch = run.watch
    order = FenceOrder(lambda uuid: watch.last_host.get(uuid))

    def on_event(event: dict[str, Any]) -> None:
        violation = order.feed(event)
        if violation is not None:
            run.never(violation)

    last = run.cluster.client.get("/events", params={"limit": 1})
    run.tail = EventTail(run.cluster.client, tl, int(last.get("last_id") or 0), on_event).start()
    tl.add(
        "setup",
        f"watching {len(run.uuids)} VMs on the sim fabric and the server's events; "
        "the timeline begins",
    )
    steps = StepRunner(run.cluster, run.uuids, lambda kind, text: tl.add(kind, text))
    for step in s.timeline:
        if step.at is not None and tl.now() < step.at:
            time.sleep(step.at - tl.now())  # the timeline's own "at T"
        if step.action is Action.WAIT:
            assert step.wait is not None
            label = f"wait (line {step.line})"
            missing = run.await_state(step.wait, label)
            if missing:
                _missed(run, label, missing)
                return  # later steps assume this state: the run stops here
            continue
        try:
            tl.add("fault", steps.run(step))
        except StepFailed as exc:
            run.result.misses.append(str(exc))
            tl.add("miss", str(exc))
            return
    missing = run.await_state(s.expect, f"expect (line {s.expect.line})")
    if missing:
        _missed(run, f"expect (line {s.expect.line})", missing)
    still = steps.background.join(BACKGROUND_GRACE)
    for name in still:
        text = f"{name} had not ended {BACKGROUND_GRACE:g} s after the end state was checked"
        run.result.misses.append(text)
        tl.add("miss", text)
    run.result.misses += steps.failures


def _missed(run: _Run, label: str, missing: list[str]) -> None:
    for text in missing:
        run.result.misses.append(f"{label}: {text}")
        run.timeline.add("miss", f"{label}: {text}")


def _stop_watching(run: _Run) -> None:
    if run.tail is not None:
        run.tail.stop()
        run.result.events = run.tail.snapshot()
    if run.watch is not None:
        run.watch.stop()
        run.result.fabric_reads = run.watch.reads
        for error in run.watch.errors:
            run.result.misses.append(error)
