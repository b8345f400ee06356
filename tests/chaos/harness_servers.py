"""One chaos run with several servers on one PostgreSQL database (issue 23): start the
cluster (servers_cluster.py), run the workload against live servers drawn at random while
the nemesis kills the leader, servers holding agents, owners of running migrations and
agents, and cuts servers from the database (servers_nemesis.py); watch the leader
throughout (leader_watch.py); stop the nemesis, let the cluster settle (every server up, a
leader, every agent connected, no task running, every command terminal), check the
invariants of invariants.py and invariants_servers.py, stop the cluster.

The database is the caller's (a fresh one per run; see test_chaos_servers.py).
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.cluster import ChaosError
from tests.chaos.harness import (
    HEALTHY_TIMEOUT,
    ChaosConfig,
    ChaosReport,
    _details,
    _open_work,
    _settings,
    _stale_reports,
)
from tests.chaos.invariants import Snapshot, violations
from tests.chaos.invariants_servers import ServersSnapshot, servers_violations
from tests.chaos.leader_watch import LeaderWatch
from tests.chaos.servers_cluster import ServersCluster
from tests.chaos.servers_nemesis import ServersNemesis
from tests.chaos.watch import TwoHostWatch
from tests.chaos.workload import Workload

POLL = 0.25  # polling interval of the settling (never a synchronisation)


@dataclass(frozen=True)
class ServersChaosConfig(ChaosConfig):
    servers: int = 3
    lease_ttl: float = 5.0  # each server's --lease-ttl (membership and leader leases)
    # A database cut lasts this many lease periods: past one, a cut leader must be replaced;
    # past two, its replacement may not wait for the cut to heal.
    cut_for: tuple[float, float] = (1.2, 3.0)
    max_servers_down: int = 2  # killed or cut at once (one at least carries on)
    # False: a cut of the leader is always a ``reset`` (a ``blackhole`` draw too). A leader
    # blackholed inside a fenced transaction keeps the lease row locked (FOR SHARE) until the
    # cut heals, and no peer can take the lease meanwhile (see test_chaos_servers.py).
    blackhole_leader: bool = True

    @property
    def seen_gone_timeout(self) -> float:
        """For a killed agent to show disconnected: its server's peers take that server for
        dead after a lease, once a leader runs (which may take two more)."""
        return 3 * self.lease_ttl + 5.0


SETTLE_LINES = 40  # of the settle's trace in a report (the last ones)
SLOW_SETTLE = 30.0  # seconds: a settle longer than this prints its trace, pass or fail


@dataclass
class ServersChaosReport(ChaosReport):
    # After the faults stopped: each change of what was still open, with its time.
    settle: list[str] = field(default_factory=list)

    def render(self) -> str:
        text = super().render()
        if not self.settle:
            return text
        lines = self.settle[-SETTLE_LINES:]
        return text + "\nsettle (what was open, from when):\n" + "\n".join(f"  {x}" for x in lines)


def run_chaos_servers(
    config: ServersChaosConfig,
    root: Path,
    db_url: str,
    say: Callable[[str], None] = lambda _m: None,
) -> ServersChaosReport:
    cluster = ServersCluster(
        root, db_url=db_url, servers=config.servers, lease_ttl=config.lease_ttl
    )
    report = ServersChaosReport(config, cluster.data_dir)
    t0 = time.monotonic()
    try:
        extra = ["--sim-migration-rate", f"{config.migration_rate:g}"] if config.migrate else []
        cluster.up(config.nodes, config.sim_latency, config.heartbeat, *extra)
        report.timings["up"] = time.monotonic() - t0
        with cluster.answering_api() as api:
            _settings(api, config)
            nodes = [n["name"] for n in api.list_all("/nodes")]
        leaders = LeaderWatch(cluster)
        leaders.start()
        try:
            nemesis = _chaos(config, cluster, report, nodes, say)
            _settle_and_check(config, cluster, report, len(nodes), leaders, nemesis)
            if report.timings.get("settle", 0.0) > SLOW_SETTLE:  # what it waited for
                for line in report.settle[-SETTLE_LINES:]:
                    say(f"chaos seed={config.seed}: settle {line}")
            times = [f"{f.loss.how} of {f.loss.name} " + (
                "no successor" if f.seconds is None else f"{f.seconds:.1f}s")
                for f in leaders.failovers(nemesis.losses)]  # fmt: skip
            say(f"chaos seed={config.seed}: leader failovers (bound {2 * config.lease_ttl:g}s): "
                + (", ".join(times) or "no loss of the leader"))  # fmt: skip
        finally:
            leaders.stop()
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


def _chaos(
    config: ServersChaosConfig,
    cluster: ServersCluster,
    report: ChaosReport,
    nodes: list[str],
    say: Callable[[str], None],
) -> ServersNemesis:
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
    nemesis = ServersNemesis(
        cluster,
        config.seed,
        kill_every=config.kill_every,
        restart_after=config.restart_after,
        cut_for=config.cut_for,
        aim=config.aim,
        again=config.again,
        active_for=config.nemesis_for,
        max_servers_down=config.max_servers_down,
        blackhole_leader=config.blackhole_leader,
        seen_gone_timeout=config.seen_gone_timeout,
        busy_node=workload.busy_node,
        busy_task=workload.busy_task,
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
        report.nemesis += [f"skipped: {s}" for s in nemesis.skipped]
        report.kills = nemesis.strikes()
        report.failures.extend(workload.errors + nemesis.errors)
        report.failures.extend(f"server error: {b}" for b in workload.stats.bugs)
        for event in nemesis.events:
            if event.action.startswith("kill") and event.pid is None:
                report.failures.append(f"{event.name} was already dead when the nemesis came")
    say(f"chaos seed={config.seed}: {report.workload}; strikes {report.kills}")
    return nemesis


def _settle_and_check(
    config: ServersChaosConfig,
    cluster: ServersCluster,
    report: ServersChaosReport,
    nodes: int,
    leaders: LeaderWatch,
    nemesis: ServersNemesis,
) -> None:
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
    report.settle.append(f"{time.monotonic() - t:6.1f}s every server answers /healthz")
    left = _converge(cluster, nodes, config.settle_timeout, t, report.settle)
    report.timings["settle"] = time.monotonic() - t
    if left:
        report.failures.append(
            f"the cluster did not settle within {config.settle_timeout:g}s after the faults "
            f"stopped: {left}"
        )
    failovers = leaders.failovers(nemesis.losses)
    report.nemesis += [f"failover: {f.describe(nemesis.t0)}" for f in failovers]
    measured = [f.seconds for f in failovers if f.seconds is not None]
    if measured:
        report.timings["failover max"] = max(measured)
    with cluster.answering_api() as api:
        stale = _stale_reports(api, datetime.now(UTC))
        snapshot = Snapshot.take(api, cluster.fabric_dir)
        servers = ServersSnapshot.take(api)
        report.violations = violations(snapshot)
        if stale:
            report.violations.append(stale)
        report.violations += servers_violations(
            servers,
            servers=config.servers,
            failovers=failovers,
            lease_ttl=config.lease_ttl,
            t0=nemesis.t0,
        )
        if report.violations:
            report.details = _details(api, snapshot, report.violations)
            report.details += _away_agents(cluster, servers)


def _converge(
    cluster: ServersCluster, nodes: int, timeout: float, since: float, trace: list[str]
) -> str:
    """Poll until every server is up with a leader and every agent is connected, no task
    runs and every command is terminal; what was still open at the deadline ("" once
    settled). Each change of what is open goes into ``trace``, timed from ``since``
    (monotonic): what the cluster waited for, and how long."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        left = _open(cluster, nodes)
        if left != last:
            trace.append(f"{time.monotonic() - since:6.1f}s {left or 'settled'}")
            last = left
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


def _open(cluster: ServersCluster, nodes: int) -> str:
    view = cluster.view()
    if view is None:
        return "no server answers GET /servers"
    parts = []
    if not cluster.complete(view, nodes):
        parts.append(
            "servers: "
            + ", ".join(
                f"{s['name']} {s['state']} agents={s['agents']}"
                + (" (leader)" if s["id"] == view["leader"] else "")
                for s in view["items"]
            )
        )
    try:
        with cluster.answering_api() as api:
            work = _open_work(api)
    except ChaosError as exc:
        work = str(exc)
    if work:
        parts.append(work)
    return "; ".join(parts)


def _away_agents(cluster: ServersCluster, snap: ServersSnapshot) -> list[str]:
    """For each node the servers show disconnected: whether its agent runs, and the last
    word of its log on its session (to tell an agent that is away from a session the
    servers lost track of)."""
    out = []
    for node in snap.nodes:
        if node["connected"]:
            continue
        log = cluster.data_dir / "logs" / f"{node['name']}.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        said = [line for line in lines if _SESSION.search(line)]
        last = said[-1].strip() if said else "(nothing on its session in its log)"
        running = node["name"] in cluster.names() and cluster.running(node["name"])
        out.append(
            f"  {node['name']} shown disconnected; agent running: {running}; its log: {last}"
        )
    return out


_SESSION = re.compile(r"bollard\.agent\.session: (connected to|connection to .* lost)")
