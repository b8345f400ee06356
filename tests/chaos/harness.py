"""One chaos run: start a cluster, run the workload while the nemesis kills processes, stop
the nemesis, let the cluster settle (with a deadline), check the invariants, stop the
cluster. Returns a report; the test asserts it is clean. Usable outside pytest too
(scripts/chaos.py).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.cluster import Api, ChaosError, LocalCluster
from tests.chaos.invariants import NON_TERMINAL, Snapshot, Violation, violations
from tests.chaos.nemesis import SERVER, Nemesis
from tests.chaos.watch import TwoHostWatch
from tests.chaos.workload import Workload

NOT_DEAD_FOR = 20.0  # seconds without heartbeats before a node counts as dead, unless fencing
HEALTHY_TIMEOUT = 30.0
FRESH_TIMEOUT = 20.0
DETAIL_VMS = 6  # offending VMs whose command histories go into the report


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    ops: int
    nodes: int = 3
    clients: int = 3
    names: int = 6
    kill_every: tuple[float, float] = (2.0, 4.0)
    restart_after: tuple[float, float] = (0.3, 2.5)
    server_share: float = 0.3
    aim: float = 0.7  # share of kills aimed at a task in flight
    again: float = 0.2  # share of restarts followed by a kill during start-up
    fencing: bool = False  # keep the default health settings: dead agents get fenced
    nemesis_for: float | None = None  # seconds of faults at most (None: the whole workload)
    migrate: bool = False  # also migrate VMs (slow sim migrations: `migration_rate` MB/s)
    migration_rate: float = 100.0
    think: tuple[float, float] = (0.3, 1.5)
    sim_latency: float = 0.05
    heartbeat: float = 0.5
    reconcile_interval: float = 0.5
    settle_timeout: float = 120.0
    replay: str = ""  # how to run this again, for the report

    @property
    def workload_timeout(self) -> float:
        return 60.0 + 5.0 * self.ops


@dataclass
class ChaosReport:
    config: ChaosConfig
    data_dir: Path
    failures: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    workload: str = ""
    nemesis: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    log_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.violations

    def headline(self) -> str:
        c = self.config
        result = "ok" if self.ok else "FAILED"
        kills = ", ".join(f"{k}={n}" for k, n in sorted(self.kills.items())) or "none"
        times = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        return f"chaos seed={c.seed} ops={c.ops}: {result}; kills: {kills}; {times}"

    def render(self) -> str:
        c = self.config
        out = [self.headline()]
        if c.replay:
            out.append(f"replay: {c.replay}")
        out.append(f"data dir (logs, database, fabric): {self.data_dir}")
        out.append(f"workload: {self.workload}")
        if self.failures:
            out.append("failures:")
            out.extend(f"  {f}" for f in self.failures)
        if self.violations:
            out.append(f"invariant violations (seed {c.seed}):")
            out.extend(str(v) for v in self.violations)
        if self.details:
            out.append("details:")
            out.extend(self.details)
        if self.log_problems:
            out.append("errors in the logs:")
            out.extend(f"  {p}" for p in self.log_problems)
        out.append("nemesis:")
        out.extend(f"  {e}" for e in self.nemesis)
        out.append(f"(seed {c.seed})")
        return "\n".join(out)


def run_chaos(
    config: ChaosConfig, root: Path, say: Callable[[str], None] = lambda _m: None
) -> ChaosReport:
    cluster = LocalCluster(root)
    report = ChaosReport(config, cluster.data_dir)
    t0 = time.monotonic()
    try:
        extra = ["--sim-migration-rate", f"{config.migration_rate:g}"] if config.migrate else []
        cluster.up(config.nodes, config.sim_latency, config.heartbeat, *extra)
        report.timings["up"] = time.monotonic() - t0
        with cluster.api() as api:
            _settings(api, config)
            nodes = [n["name"] for n in api.list_all("/nodes")]
        _chaos(config, cluster, report, nodes, say)
        _settle_and_check(config, cluster, report)
    except ChaosError as exc:
        report.failures.append(f"harness: {exc}")
    except Exception as exc:  # noqa: BLE001 - any failure is reported with the seed
        report.failures.append(
            f"harness: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        )
    finally:
        report.log_problems = cluster.log_problems()
        t_down = time.monotonic()
        note = cluster.down()
        if note:
            report.failures.append(f"cleanup: {note}")
        report.timings["down"] = time.monotonic() - t_down
        report.timings["total"] = time.monotonic() - t0
    return report


def _settings(api: Api, config: ChaosConfig) -> None:
    values: dict[str, object] = {"reconcile.commands.interval": config.reconcile_interval}
    if not config.fencing:
        # An agent the nemesis kills is back within seconds: not a dead host to fence (and
        # power off) at the default 3 missed heartbeats. 404: a server without health checks.
        values["health.dead_after"] = math.ceil(NOT_DEAD_FOR / config.heartbeat)
    for key, value in values.items():
        response = api.http.put(f"/settings/{key}", json={"value": value})
        if response.status_code != 404 or key.startswith("reconcile."):
            response.raise_for_status()


def _chaos(
    config: ChaosConfig,
    cluster: LocalCluster,
    report: ChaosReport,
    nodes: list[str],
    say: Callable[[str], None],
) -> None:
    t = time.monotonic()
    workload = Workload(
        cluster,
        config.seed,
        config.ops,
        config.clients,
        names=[f"vm{i}" for i in range(config.names)],
        nodes=nodes,
        think=config.think,
        migrate=config.migrate,
    )
    nemesis = Nemesis(
        cluster,
        config.seed,
        kill_every=config.kill_every,
        restart_after=config.restart_after,
        server_share=config.server_share,
        aim=config.aim,
        again=config.again,
        active_for=config.nemesis_for,
        busy_node=workload.busy_node,
    )
    watch = TwoHostWatch(cluster.fabric_dir)
    watch.start()
    nemesis.start()
    workload.start()
    try:
        if not workload.join(config.workload_timeout):
            workload.stop()
            report.failures.append(
                f"the clients did not issue {config.ops} operations within "
                f"{config.workload_timeout:g}s"
            )
            workload.join(30.0)
    finally:
        nemesis.stop()
        watch.stop()
        report.timings["chaos"] = time.monotonic() - t
        if watch.reads == 0:
            report.failures.append("the two-host watch never read the fabric")
        report.failures.extend(
            f"VM on two hosts during the run: {v}" for v in watch.violations[:20]
        )
        report.workload = workload.stats.summary()
        report.nemesis = [str(e) for e in nemesis.events]
        report.kills = {n: nemesis.count(n) for n in sorted({e.name for e in nemesis.events})}
        report.failures.extend(workload.errors + nemesis.errors)
        report.failures.extend(f"server error: {b}" for b in workload.stats.bugs)
        for event in nemesis.events:
            if event.action == "kill" and event.pid is None:
                report.failures.append(f"{event.name} was already dead when the nemesis came")
    say(f"chaos seed={config.seed}: {report.workload}; {nemesis.kills} kills")


def _settle_and_check(config: ChaosConfig, cluster: LocalCluster, report: ChaosReport) -> None:
    t = time.monotonic()
    dead = cluster.not_running()
    if dead:
        report.failures.append(
            f"process(es) {', '.join(dead)} died on their own after the nemesis stopped;"
            " restarted for the checks\n" + cluster.log_tails(15)
        )
        for name in dead:
            cluster.restart(name)
    cluster.wait_healthy(HEALTHY_TIMEOUT)
    with cluster.api() as api:
        left = _converge(api, config.settle_timeout)
        if left:
            report.failures.append(
                f"the cluster did not settle within {config.settle_timeout:g}s after the "
                f"faults stopped: {left}"
            )
        report.timings["settle"] = time.monotonic() - t
        stale = _stale_reports(api, datetime.now(UTC))
        snapshot = Snapshot.take(api, cluster.fabric_dir)
        report.violations = violations(snapshot)
        if stale:
            report.violations.append(stale)
        if report.violations:
            report.details = _details(api, snapshot, report.violations)


def _converge(api: Api, timeout: float) -> str:
    """Poll until no task runs and every command is terminal (and every node is back);
    returns what was still open at the deadline ("" once settled)."""
    deadline = time.monotonic() + timeout
    while True:
        left = _open_work(api)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.25)  # polling interval


def _open_work(api: Api) -> str:
    try:
        status = api.get("/status")
        nodes = api.list_all("/nodes")
        busy = [v for v in api.list_all("/vms") if v["task_state"] or v["task_id"]]
        open_commands = api.get("/commands", state=",".join(NON_TERMINAL), limit=20)
    except httpx.HTTPError as exc:
        return f"API unavailable: {exc}"
    parts = []
    away = [n["name"] for n in nodes if not n["connected"]]
    if away:
        parts.append(f"nodes not connected: {away}")
    if status["tasks_running"]:
        parts.append(f"{status['tasks_running']} task(s) running")
    if busy:
        parts.append(
            "VMs held by a task: "
            + ", ".join(f"{v['name']} ({v['task_state']}, task {v['task_id']})" for v in busy)
        )
    if open_commands["total"]:
        parts.append(
            f"{open_commands['total']} non-terminal command(s): "
            + ", ".join(f"{c['id']} {c['type']} {c['state']}" for c in open_commands["items"])
        )
    return "; ".join(parts)


def _stale_reports(api: Api, since: datetime) -> Violation | None:
    """Wait until every node that owns a VM has a current inventory (its session sent a full
    report) and has reported after ``since``, so that observed_power is current when it is
    compared with the fabric. Reports carry only changes, so a VM's own observed_at does not
    move while its state does not: what must be fresh is its node's report. The nodes that
    stay connected but never get there are a violation."""
    deadline = time.monotonic() + FRESH_TIMEOUT
    while True:
        owners = {v["node"] for v in api.list_all("/vms") if v["node"] is not None}
        nodes = {n["name"]: n for n in api.list_all("/nodes")}
        stale = [
            nodes[name]
            for name in sorted(owners)
            if name in nodes
            and (
                not nodes[name]["inventory_known"]
                or nodes[name]["last_heartbeat"] is None
                or datetime.fromisoformat(nodes[name]["last_heartbeat"]) <= since
            )
        ]
        if not stale:
            return None
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)  # polling interval
    v = Violation(
        f"2b. nodes whose reports no longer bring their VMs up to date ({FRESH_TIMEOUT:g}s)"
    )
    for node in stale:
        v.offenders.append(
            f"{node['name']}: connected={node['connected']}, inventory_known="
            f"{node['inventory_known']}, last heartbeat {node['last_heartbeat']} "
            f"(seq {node['last_seq']})"
        )
    return v


def _details(api: Api, snap: Snapshot, found: list[Violation]) -> list[str]:
    """Command histories of the offending VMs (and commands), to start the investigation."""
    out: list[str] = []
    uuids = sorted({u for v in found for u in v.vm_uuids})
    records = {vm["uuid"]: vm for vm in snap.vms}
    for uuid in uuids[:DETAIL_VMS]:
        vm = records.get(uuid)
        out.append(f"  VM {uuid} ({vm['name'] if vm else 'no record'}):")
        if vm is not None:
            out.append(f"    record: {_brief(vm)}")
        for node, ops in snap.executed.items():
            for op in ops:
                if op.vm_uuid == uuid:
                    out.append(f"    executed on {node}: {op.command} by {op.command_id}")
        try:
            cmds = api.list_all("/commands", vm=uuid)
        except httpx.HTTPError as exc:
            out.append(f"    (commands unavailable: {exc})")
            continue
        for cmd in cmds[-8:]:
            out.extend(_command_lines(api, cmd["id"]))
    extra = sorted({c for v in found for c in v.command_ids})
    for cid in extra[:DETAIL_VMS]:
        out.extend(_command_lines(api, cid))
    if len(uuids) > DETAIL_VMS:
        out.append(f"  ... and {len(uuids) - DETAIL_VMS} more VM(s)")
    return out


def _command_lines(api: Api, cid: str) -> list[str]:
    try:
        c = api.get(f"/commands/{cid}")
    except httpx.HTTPError as exc:
        return [f"    command {cid}: unavailable ({exc})"]
    lines = [
        f"    command {c['id']} {c['type']} on {c['node']} task={c['task_id']}: "
        f"{c['state']} (agent {c['agent_state']}) answer={_brief(c['answer'])}"
    ]
    for h in c.get("history") or []:
        lines.append(f"      {h['at']} {h['from_state']} -> {h['to_state']}: {h['note']}")
    return lines


def _brief(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["SERVER", "ChaosConfig", "ChaosReport", "run_chaos"]
