"""Failover benchmark: time from a sim host losing power to all of its HA VMs running again.

For each configuration (number of sim nodes x heartbeat interval) and each run, a fresh
cluster is started with `bollard up --detach` in a temporary directory on a free port, with
default settings otherwise (``fencing.fast`` on, ``health.dead_after`` 3;
``health.startup_grace`` left at its default, and waited out before the power off). HA VMs are
put on every node, the last node is switched off with `bollard sim power off`, and the fabric
is polled until every HA VM of that node runs on another node.

With fast failover (the default) the host's agent session ends with the power, the server
reads its power status at once, and a host that reads off is fenced and recovered without
waiting for ``health.dead_after`` missed heartbeats. ``--no-fast`` sets ``fencing.fast`` off
before the power off and so measures the dead wait (the figures before issue 21).

Measured per run (wall clock, one machine):

- ``seconds``: from the power off (the host record's time stamp in the fabric) to the start
  of the last of its HA VMs elsewhere (that VM's time stamp in the fabric);
- ``observed_seconds``: from the power off to the poll that saw them all running;
- ``detect_seconds``, ``fence_seconds``, ``restart_seconds``: power off -> node declared dead
  -> fence confirmed -> last VM running, from the server's events.

JSON goes to stdout and to ``bench/results/failover.json``; progress goes to stderr. Exit
status 1 if a run failed. Every wait has a deadline; each cluster is stopped with
`bollard down` (and anything left over killed) whatever happens.

    python bench/failover.py [--runs N] [--quick] [--no-fast] [--vms-per-node N] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import (
    RESULTS_DIR,
    BenchError,
    Interrupted,
    child_env,
    free_port,
    machine,
    make_log,
    raise_on_sigterm,
    versions,
    wait_for,
    write_report,
)

from bollard.cli.certs import tls_dir_of
from bollard.cli.client import Client, CliError, TlsFiles
from bollard.cli.cluster import is_running, read_cluster
from bollard.sim.fabric import Fabric
from bollard.sim.models import HostPower

DEFAULT_OUTPUT = RESULTS_DIR / "failover.json"
TARGET_SECONDS = 5.0  # with fast failover (issue 21); 30 s was the target of the dead wait
SLOW_TARGET_SECONDS = 30.0  # --no-fast
TARGET_HEARTBEAT = 5.0  # the default heartbeat interval of `bollard up`
VM_VCPUS, VM_MEMORY_MB = 1, 256

UP_TIMEOUT = 120.0  # `bollard up --detach` (it waits for every node to connect)
CLI_TIMEOUT = 60.0
CREATE_TIMEOUT = 120.0  # all VMs running after creation
RECOVERY_TIMEOUT = 180.0  # power off -> all HA VMs of the node running elsewhere
POLL = 0.05  # fabric polling interval (lock-free reads: the measured cluster is not slowed)


log = make_log("failover")


def to_timestamp(text: str) -> float:
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


@dataclass(frozen=True)
class Config:
    nodes: int
    heartbeat: float

    def label(self) -> str:
        return f"{self.nodes} nodes, heartbeat {self.heartbeat:g}s"


class Cluster:
    """A cluster of `bollard up --detach` in its own temporary directory."""

    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.root = workdir
        self.data_dir = workdir / "data"
        env = child_env()
        # The CLI's context file goes to the temporary directory, never to ~/.config.
        env.update(BOLLARD_CONFIG_DIR=str(workdir / "config"), PYTHONUNBUFFERED="1")
        self.env = env
        self.fabric = Fabric(self.data_dir / "fabric")
        self.up_returned = 0.0
        self._client: Client | None = None

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bollard", *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`bollard {' '.join(args)}` timed out after {timeout:g}s") from exc
        if done.returncode != 0:
            raise BenchError(
                f"`bollard {' '.join(args)}` exited {done.returncode}: {done.stderr.strip()}"
            )
        return done.stdout

    def start(self) -> None:
        self.cli(
            "up", "--detach", "--nodes", str(self.config.nodes),
            "--heartbeat", f"{self.config.heartbeat:g}",
            "--data-dir", str(self.data_dir), "--port", str(free_port()),
            timeout=UP_TIMEOUT,
        )  # fmt: skip
        self.up_returned = time.monotonic()
        record = read_cluster(self.data_dir)
        if record is None:
            raise BenchError(f"no cluster.json in {self.data_dir}")
        token = (self.data_dir / "admin.token").read_text().strip()
        # `bollard up` serves HTTPS with a CA of its own in <data-dir>/tls: verify with it.
        ca_file = tls_dir_of(self.data_dir) / "ca.pem"
        tls = TlsFiles(ca_file=str(ca_file)) if record.url.startswith("https:") else None
        self._client = Client(record.url, token, tls=tls)

    @property
    def api(self) -> Client:
        if self._client is None:
            raise BenchError("the cluster is not started")
        return self._client

    def stop(self) -> None:
        """`bollard down`, then kill whatever cluster.json still lists; never raises."""
        if self._client is not None:
            self._client.close()
        try:
            self.cli("down", "--data-dir", str(self.data_dir), timeout=CLI_TIMEOUT)
        except BenchError as exc:
            log(f"bollard down failed: {exc}")
        try:
            record = read_cluster(self.data_dir)
        except CliError as exc:  # a damaged file must not hide what happened before
            log(f"cannot read cluster.json to clean up: {exc}")
            return
        for proc in record.processes if record else []:
            if is_running(proc.pid, proc.argv):
                log(f"killing leftover {proc.name} (pid {proc.pid})")
                os.kill(proc.pid, signal.SIGKILL)

    def settings(self) -> dict[str, Any]:
        items = self.api.get("/settings")
        return {item["key"]: item["value"] for item in items}

    def running(self) -> dict[str, tuple[str, float]]:
        """VM name -> (host, time stamp of its last change) for every VM running in the
        fabric. Lock-free: each record file is replaced atomically."""
        found: dict[str, tuple[str, float]] = {}
        for host in self.fabric.hosts():
            for vm in host.list_vms():
                if vm.power == "running":
                    found[vm.name] = (host.node, vm.updated_at)
        return found

    def events(self, node: str) -> list[dict[str, Any]]:
        page = self.api.get("/events", params={"node": node, "limit": 1000})
        items: list[dict[str, Any]] = page["items"]
        return items


SETTINGS_SHOWN = ("health.dead_after", "health.startup_grace", "fencing.timeout", "fencing.fast")


def one_run(config: Config, vms_per_node: int, keep: bool, fast: bool = True) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bollard-bench-failover-"))
    cluster = Cluster(config, workdir)
    try:
        cluster.start()
        if not fast:
            cluster.api.request("PUT", "/settings/fencing.fast", json={"value": False})
        settings = cluster.settings()
        grace = float(settings["health.startup_grace"])
        nodes = [f"node{i}" for i in range(1, config.nodes + 1)]
        victim = nodes[-1]
        names = {node: [f"ha-{node}-{i}" for i in range(1, vms_per_node + 1)] for node in nodes}
        for node, vm_names in names.items():
            for name in vm_names:
                body = {"name": name, "vcpus": VM_VCPUS, "memory_mb": VM_MEMORY_MB,
                        "node": node, "start": True}  # fmt: skip
                cluster.api.post("/vms", body)
        every = {name: node for node, vm_names in names.items() for name in vm_names}

        def all_running() -> bool:
            running = cluster.running()
            return all(running.get(name, ("",))[0] == node for name, node in every.items())

        wait_for(f"{len(every)} VMs run on their nodes", all_running, CREATE_TIMEOUT, POLL)
        # The health monitor acts only once its start-up grace has passed (counted from the
        # server's start, which came before `bollard up` returned).
        grace_left = cluster.up_returned + grace + 0.5 - time.monotonic()
        if grace_left > 0:
            log(f"waiting {grace_left:.1f}s for health.startup_grace to pass")
            wait_for(
                "the start-up grace passed",
                lambda: time.monotonic() >= cluster.up_returned + grace + 0.5,
                grace_left + 5,
                interval=0.1,
            )
        lost = names[victim]
        cluster.cli("sim", "power", "off", victim, "--data-dir", str(cluster.data_dir))
        record = cluster.fabric.host(victim).record()
        if record is None or record.power != HostPower.OFF:
            raise BenchError(f"{victim} is not off after `bollard sim power off`")
        off_at = record.updated_at

        def recovered() -> dict[str, tuple[str, float]] | None:
            running = cluster.running()
            if all(running.get(name, (victim,))[0] != victim for name in lost):
                return running
            return None

        running = wait_for(
            f"the HA VMs of {victim} run elsewhere", recovered, RECOVERY_TIMEOUT, POLL
        )
        seen_at = time.time()
        last_start = max(running[name][1] for name in lost)
        result: dict[str, Any] = {
            "seconds": round(last_start - off_at, 3),
            "observed_seconds": round(seen_at - off_at, 3),
            "vms": len(lost),
            "victim": victim,
            "placed_on": sorted({running[name][0] for name in lost}),
            "settings": {key: settings[key] for key in SETTINGS_SHOWN},
        }
        events = cluster.events(victim)
        dead = [to_timestamp(e["at"]) for e in events if e["kind"] == "node.dead"]
        fenced = [to_timestamp(e["at"]) for e in events if e["kind"] == "node.fenced"]
        if dead and fenced:
            result["detect_seconds"] = round(dead[-1] - off_at, 3)
            result["fence_seconds"] = round(fenced[-1] - dead[-1], 3)
            result["restart_seconds"] = round(last_start - fenced[-1], 3)
        return result
    finally:
        cluster.stop()
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def summary(config: Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r["seconds"] for r in runs if "seconds" in r]
    out: dict[str, Any] = {
        "nodes": config.nodes,
        "heartbeat_seconds": config.heartbeat,
        "runs": runs,
        "failed_runs": sum(1 for r in runs if "error" in r),
    }
    if good:
        out.update(
            median_seconds=round(statistics.median(good), 3),
            min_seconds=min(good),
            max_seconds=max(good),
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument(
        "--quick", action="store_true", help="3 nodes only (heartbeat 1 s and 5 s), 1 run"
    )
    parser.add_argument(
        "--no-fast",
        action="store_true",
        help="fencing.fast off: measure the wait for health.dead_after (no fast failover)",
    )
    parser.add_argument("--vms-per-node", type=int, default=4, help="HA VMs per node (4)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file ({DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep each run's data dir (logs) for inspection"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.vms_per_node < 1:
        parser.error("--runs and --vms-per-node must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = 1 if args.quick else args.runs
    node_counts = [3] if args.quick else [3, 10]
    configs = [Config(n, hb) for n in node_counts for hb in (1.0, TARGET_HEARTBEAT)]

    raise_on_sigterm()
    started = time.time()
    results: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    for config in configs:
        config_runs: list[dict[str, Any]] = []
        for i in range(1, runs + 1):
            log(f"{config.label()}: run {i}/{runs}")
            try:
                run = one_run(config, args.vms_per_node, args.keep, fast=not args.no_fast)
            except (BenchError, OSError) as exc:
                log(f"{config.label()}: run {i} failed: {exc}")
                run = {"error": str(exc)}
            else:
                settings = run.pop("settings")
                log(f"{config.label()}: run {i}: {run['seconds']:.2f}s")
            config_runs.append(run)
        results.append(summary(config, config_runs))
    target = SLOW_TARGET_SECONDS if args.no_fast else TARGET_SECONDS
    at_target = [r for r in results if r["heartbeat_seconds"] == TARGET_HEARTBEAT]
    met = bool(at_target) and all(
        r["failed_runs"] == 0 and r.get("median_seconds", float("inf")) <= target for r in at_target
    )
    report = {
        "benchmark": "failover",
        "measures": "seconds from a sim host's power off to all of its HA VMs running on other "
        "hosts (fabric time stamps)",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "versions": versions(),
        "parameters": {
            "runs": runs,
            "quick": args.quick,
            "fast_failover": not args.no_fast,
            "vms_per_node": args.vms_per_node,
            "vm": {"vcpus": VM_VCPUS, "memory_mb": VM_MEMORY_MB},
            "node_counts": node_counts,
            "heartbeats_seconds": [1.0, TARGET_HEARTBEAT],
            "powered_off": "the last node",
            "settings": settings,  # as the clusters reported them (all defaults)
            "sim_latency_seconds": 0.2,  # the default of `bollard up`
        },
        "results": results,
        "target_seconds": target,
        "target_basis": f"median of each heartbeat-{TARGET_HEARTBEAT:g}s configuration "
        "(the default), with no failed run",
        "met": met,
    }
    write_report(report, args.output, log)
    return 0 if all(r["failed_runs"] == 0 for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; the clusters started were stopped")
        sys.exit(130)
