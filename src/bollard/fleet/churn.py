"""A steady rate of VM operations on the fleet's VMs: start, stop and live migrate.

Every ``1 / rate`` seconds one VM that has no operation under way is picked at random: a
stopped one is started; a running one is stopped or migrated to another of the fleet's
nodes. Each operation is a task the server runs end to end; its latency is from the
request to the task's end. When ``max_inflight`` operations are already under way, the tick
is counted as ``behind`` instead of piling up more work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bollard.fleet.api import FleetApi, FleetApiError

log = logging.getLogger(__name__)

OP_TIMEOUT = 120.0
LATENCIES_KEPT = 20000


@dataclass
class FleetVm:
    name: str
    node: str
    running: bool


@dataclass
class ChurnStats:
    started: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    behind: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 4)

        return {
            "started": dict(self.started),
            "succeeded": dict(self.succeeded),
            "failed": dict(self.failed),
            "behind": self.behind,
            "latency_s": {"p50": pct(0.5), "p99": pct(0.99), "samples": len(ordered)},
            "errors": dict(self.errors.most_common(5)),
        }


class Churn:
    def __init__(
        self,
        api: FleetApi,
        vms: list[FleetVm],
        nodes: list[str],
        rate: float,
        *,
        max_inflight: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("churn rate must be > 0")
        self.api = api
        self.idle = list(vms)  # VMs with no operation under way
        self.nodes = nodes
        self.rate = rate
        self.max_inflight = max_inflight
        self.rng = rng or random.Random()
        self.stats = ChurnStats()
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Issue operations at ``rate`` per second until ``stop`` is set; then wait (with a
        deadline) for those under way."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        while not stop.is_set():
            self._tick()
            due += interval
            delay = due - loop.time()
            if delay < -1.0:  # far behind (a stalled loop): do not try to catch up in a burst
                due = loop.time()
                continue
            with contextlib.suppress(TimeoutError):  # the churn's pace: wakes early on stop
                await asyncio.wait_for(stop.wait(), max(0.0, delay))
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=OP_TIMEOUT)

    def _tick(self) -> None:
        if len(self._inflight) >= self.max_inflight or not self.idle:
            self.stats.behind += 1
            return
        vm = self.idle.pop(self.rng.randrange(len(self.idle)))
        task = asyncio.create_task(self._operate(vm))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _choose(self, vm: FleetVm) -> tuple[str, dict[str, Any]]:
        if not vm.running:
            return "start", {}
        others = [n for n in self.nodes if n != vm.node]
        if others and self.rng.random() < 0.5:
            return "migrate", {"to": self.rng.choice(others)}
        return "stop", {}

    async def _operate(self, vm: FleetVm) -> None:
        op, body = self._choose(vm)
        self.stats.started[op] += 1
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            task = await self.api.vm_op(vm.name, op, body)
            ended = await self.api.wait_task(str(task["id"]), OP_TIMEOUT)
        except FleetApiError as exc:
            self.stats.failed[op] += 1
            self.stats.errors[exc.code] += 1
            log.debug("churn %s %s: %s", op, vm.name, exc)
        else:
            if ended.get("state") == "succeeded":
                self.stats.succeeded[op] += 1
                self.stats.latencies.append(loop.time() - began)
                if op == "migrate":
                    vm.node = body["to"]
                else:
                    vm.running = op == "start"
            else:
                self.stats.failed[op] += 1
                self.stats.errors[str(ended.get("state"))] += 1
        finally:
            self.idle.append(vm)
