"""One fleet run: enroll the nodes, connect their agents, create the VMs, keep them running.

Phases, as ``status["phase"]`` tells them: ``enrolling``, ``connecting``, ``creating``,
``running`` (steady state: heartbeats, and the churn if asked for), then ``stopped`` or
``failed``. The status (phase, counts, rates, the fleet process's own CPU and memory) is
logged every few seconds and, with ``status_file``, written there as JSON (atomically), which
is how the benchmarks follow a fleet they started as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bollard.agent.config import AgentConfigError, tls_context
from bollard.agent.drivers.base import VmSpec
from bollard.fleet.agents import FleetAgents, HostShape
from bollard.fleet.api import FleetApi, FleetApiError
from bollard.fleet.churn import Churn, FleetVm

STATUS_EVERY = 5.0
ENROLL_CONCURRENCY = 32
CREATE_TIMEOUT = 300.0  # one VM's create task, end to end


class FleetError(Exception):
    """The fleet cannot run (the message says why, in one line)."""


@dataclass(frozen=True)
class FleetOptions:
    server_url: str
    token: str
    nodes: int
    vms_per_node: int
    heartbeat: float | None = None  # None: the server's interval
    churn: float = 0.0  # operations per second; 0: none
    prefix: str = "fleet"
    vm_vcpus: int = 1
    vm_memory_mb: int = 512
    start_vms: bool = True
    concurrency: int = 100  # API clients creating VMs at once
    batch: int = 1  # VMs a client creates at once (> 1: POST /vms/batch, NODE-bN-1..)
    connect_batch: int = 100
    duration: float | None = None  # seconds of steady state; None: until stopped
    status_file: Path | None = None
    shape: HostShape = field(default_factory=HostShape)
    # Adopt: the server already has the nodes (their tokens in this JSON file, {node: token})
    # and their VMs; the fleet plays their hosts, with those VMs defined (and running where
    # they should), instead of enrolling nodes and creating VMs.
    adopt_tokens: Path | None = None
    # https servers: the CA that signed the server's certificate ("system": the system's
    # trust store) and, for servers that require one, the client certificate to present.
    ca_file: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def node_names(self) -> list[str]:
        return [f"{self.prefix}-{i:04d}" for i in range(1, self.nodes + 1)]

    def vm_names(self, node: str) -> list[str]:
        return [f"{node}-vm{j:03d}" for j in range(1, self.vms_per_node + 1)]

    def batches(self, node: str) -> list[tuple[str, int]]:
        """With `batch` > 1, the node's VMs as batches: (name, count) each, the VMs named
        NAME-1 .. NAME-COUNT; a last batch of one VM is a single create of NAME-1."""
        sizes = [min(self.batch, self.vms_per_node - start)
                 for start in range(0, self.vms_per_node, self.batch)]  # fmt: skip
        return [
            (f"{node}-b{i:03d}" + ("-1" if size == 1 else ""), size)
            for i, size in enumerate(sizes, 1)
        ]


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Fleet:
    def __init__(self, options: FleetOptions, log: Callable[[str], None]) -> None:
        if options.adopt_tokens is None and (options.nodes < 1 or options.vms_per_node < 0):
            raise FleetError("--nodes must be >= 1 and --vms-per-node >= 0")
        self.options = options
        self.log = log
        try:
            tls = tls_context(
                options.server_url, options.ca_file, options.client_cert, options.client_key
            )
        except AgentConfigError as exc:
            raise FleetError(str(exc)) from None
        self.api = FleetApi(
            options.server_url, options.token, connections=options.concurrency + 50, tls=tls
        )
        self.agents = FleetAgents(options.server_url, options.shape, options.heartbeat, tls=tls)
        self.vms: list[FleetVm] = []
        self.churn: Churn | None = None
        self.status: dict[str, Any] = {
            "phase": "starting",
            "nodes": options.nodes,
            "vms_per_node": options.vms_per_node,
            "heartbeat": options.heartbeat,
            "churn_rate": options.churn,
            "connected": 0,
            "vms_created": 0,
            "vms_failed": 0,
        }
        self._started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> dict[str, Any]:
        """Run until ``stop`` is set (or ``duration`` passes); the final status."""
        reporter = asyncio.create_task(self._report_loop())
        try:
            if self.options.adopt_tokens is not None:
                await self._adopt(self.options.adopt_tokens)
                await self._connect()
            else:
                await self._enroll()
                await self._connect()
                await self._create_vms(stop)
            if not stop.is_set():
                await self._steady(stop)
            self._set(phase="stopped")
        except FleetError as exc:
            self._set(phase="failed", error=str(exc))
            raise
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await self.agents.stop_all()
            await self.api.aclose()
            self._write_status()
        return self.status

    # phases

    async def _enroll(self) -> None:
        self._set(phase="enrolling")
        names = self.options.node_names()
        try:
            existing = await self.api.node_names()
        except FleetApiError as exc:
            raise FleetError(f"cannot list the server's nodes: {exc}") from None
        taken = sorted(set(names) & existing)
        if taken:
            raise FleetError(
                f"{len(taken)} of the fleet's nodes already exist on the server (e.g. "
                f"{taken[0]}); a fleet's hosts live only as long as its process, so use "
                "another --prefix or a fresh server"
            )
        gate = asyncio.Semaphore(ENROLL_CONCURRENCY)

        async def enroll(node: str) -> None:
            async with gate:
                token = await self.api.enroll(node)
            self.agents.add(node, token)

        try:
            await asyncio.gather(*(enroll(n) for n in names))
        except FleetApiError as exc:
            raise FleetError(f"cannot enroll the fleet's nodes: {exc}") from None
        self.log(f"enrolled {len(names)} nodes")

    async def _adopt(self, tokens_file: Path) -> None:
        self._set(phase="adopting")
        try:
            tokens = json.loads(tokens_file.read_text())
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read the tokens file {tokens_file}: {exc}") from None
        if not isinstance(tokens, dict) or not tokens:
            raise FleetError(f"{tokens_file} must hold a JSON object {{node: token}}")
        for node, token in sorted(tokens.items()):
            self.agents.add(str(node), str(token))
        try:
            known = await self.api.vms()
        except FleetApiError as exc:
            raise FleetError(f"cannot list the server's VMs: {exc}") from None
        for vm in known:
            agent = self.agents.agents.get(vm["node"] or "")
            if agent is None:
                continue
            spec = VmSpec(uuid=vm["uuid"], name=vm["name"], vcpus=vm["vcpus"],
                          memory_mb=vm["memory_mb"], epoch=vm["epoch"])  # fmt: skip
            await agent.driver.define(spec)
            running = vm["desired_power"] == "running"
            if running:
                await agent.driver.start(spec.uuid)
            self.vms.append(FleetVm(vm["name"], agent.node, running=running))
        self._set(nodes=len(tokens), vms_created=len(self.vms))
        self.log(f"adopted {len(tokens)} nodes and {len(self.vms)} VMs")

    async def _connect(self) -> None:
        self._set(phase="connecting")
        began = time.monotonic()
        expected = len(self.agents.agents)
        timeout = max(60.0, 0.2 * expected)

        def progress(done: int, total: int) -> None:
            self._set(connected=done)

        welcomed = await self.agents.start_all(
            batch=self.options.connect_batch, timeout=timeout, progress=progress
        )
        if welcomed < expected:
            raise FleetError(
                f"only {welcomed} of {expected} agents were welcomed within {timeout:.0f}s"
            )
        seconds = time.monotonic() - began
        self._set(connect_seconds=round(seconds, 2))
        self.log(f"{welcomed} agents connected in {seconds:.1f}s")

    async def _create_vms(self, stop: asyncio.Event) -> None:
        self._set(phase="creating")
        opts = self.options
        plan: list[tuple[str, str, int]] = (
            [(vm, node, 1) for node in opts.node_names() for vm in opts.vm_names(node)]
            if opts.batch == 1
            else [(name, node, n) for node in opts.node_names() for name, n in opts.batches(node)]
        )
        queue: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)
        began = time.monotonic()
        errors: dict[str, int] = {}

        async def worker() -> None:
            while not stop.is_set():
                try:
                    name, node, count = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if count == 1:
                    ok = int(await self._create_one(name, node, errors))
                else:
                    ok = await self._create_batch(name, node, count, errors)
                self._set(
                    vms_created=self.status["vms_created"] + ok,
                    vms_failed=self.status["vms_failed"] + count - ok,
                )

        workers = min(self.options.concurrency, len(plan))
        await asyncio.gather(*(worker() for _ in range(workers)))
        seconds = time.monotonic() - began
        created = self.status["vms_created"]
        self._set(
            create_seconds=round(seconds, 2),
            create_rate=round(created / seconds, 1) if seconds > 0 else None,
            create_errors=errors,
        )
        self.log(f"{created} VMs created in {seconds:.1f}s ({self.status['vms_failed']} failed)")

    async def _create_one(self, name: str, node: str, errors: dict[str, int]) -> bool:
        opts = self.options
        try:
            task = await self.api.create_vm(
                name, node, opts.vm_vcpus, opts.vm_memory_mb, start=opts.start_vms
            )
        except FleetApiError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
            return False
        return await self._created(name, node, str(task["id"]), errors)

    async def _create_batch(self, name: str, node: str, count: int, errors: dict[str, int]) -> int:
        """NAME-1 .. NAME-COUNT on `node` in one request; how many ended ACTIVE."""
        opts = self.options
        try:
            made = await self.api.create_vms(
                name, count, node, opts.vm_vcpus, opts.vm_memory_mb, start=opts.start_vms
            )
        except FleetApiError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + count
            return 0
        ended = await asyncio.gather(
            *(self._created(vm, node, task_id, errors) for vm, task_id in made)
        )
        return sum(ended)

    async def _created(self, name: str, node: str, task_id: str, errors: dict[str, int]) -> bool:
        """Whether VM `name`'s create task (`task_id`) succeeded (it is then one of the
        fleet's VMs); its failure counted in `errors`."""
        try:
            ended = await self.api.wait_task(task_id, CREATE_TIMEOUT)
        except FleetApiError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
            return False
        state = str(ended.get("state"))
        if state != "succeeded":
            errors[state] = errors.get(state, 0) + 1
            return False
        self.vms.append(FleetVm(name, node, running=self.options.start_vms))
        return True

    async def _steady(self, stop: asyncio.Event) -> None:
        self._set(phase="running", running_since=time.time())
        self.log(
            "steady state: agents heartbeating"
            + (f", churn {self.options.churn:g} ops/s" if self.options.churn else "")
        )
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if self.options.duration is not None:
            waits.append(asyncio.create_task(asyncio.sleep(self.options.duration)))  # run time
        churn_task: asyncio.Task[None] | None = None
        churn_stop = asyncio.Event()
        if self.options.churn > 0:
            self.churn = Churn(self.api, self.vms, sorted(self.agents.agents), self.options.churn)
            churn_task = asyncio.create_task(self.churn.run(churn_stop))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            churn_stop.set()
            if churn_task is not None:
                await churn_task

    # status

    def _set(self, **values: Any) -> None:
        self.status.update(values)

    def snapshot(self) -> dict[str, Any]:
        self.status.update(
            connected=self.agents.connected(),
            hypervisor_vms=self.agents.fabric.vm_count(),
            uptime_s=round(time.monotonic() - self._started, 1),
            process={
                "cpu_s": round(time.process_time(), 2),
                "rss_mb": _rss_mb(),
                "pid": os.getpid(),
            },
        )
        if self.churn is not None:
            self.status["churn"] = self.churn.stats.summary()
        return self.status

    def _write_status(self) -> None:
        path = self.options.status_file
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=2) + "\n")
        os.replace(tmp, path)

    async def _report_loop(self) -> None:
        while True:
            status = self.snapshot()
            self._write_status()
            line = (
                f"{status['phase']}: {status['connected']}/{status['nodes']} connected, "
                f"{status['vms_created']} VMs created ({status['vms_failed']} failed), "
                f"rss {status['process']['rss_mb']} MB"
            )
            if self.churn is not None:
                s = self.churn.stats
                line += f", churn {sum(s.succeeded.values())} ok {sum(s.failed.values())} failed"
            self.log(line)
            await asyncio.sleep(STATUS_EVERY)  # the reporting period
