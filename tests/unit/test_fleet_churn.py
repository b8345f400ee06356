"""The fleet's churn (bollard.fleet.churn.Churn) against a fake API: what it asks for (start
a stopped VM; stop or migrate a running one, never to its own node), that a VM is never
operated on twice at once, that ``max_inflight`` holds (ticks counted as behind), how
failures are counted, that its record of each VM follows only successful operations, and
that ``run`` keeps its pace and waits for the operations under way. Also the fleet's names
(FleetOptions), and two faults of ``--adopt`` found while testing it (the welcomed agents
were compared with ``--nodes``, and the churn migrated among ``--nodes`` names instead of the
adopted nodes)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from bollard.fleet.api import FleetApi, FleetApiError
from bollard.fleet.churn import Churn, FleetVm
from bollard.fleet.runner import Fleet, FleetError, FleetOptions

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
# What the fake's scripted outcome may be: None (succeeded), a task state, or an API error.
Outcome = str | FleetApiError | None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def settle() -> None:
    """Let every task that can run do so (the fake API never blocks unless gated)."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeApi:
    """The two calls the churn makes, with the cluster's truth to check them against: a VM
    may be started only when stopped, stopped or migrated only when running, migrated only
    to another known node; at most one operation per VM at a time. ``gated`` holds every
    task until the test opens its gate; ``outcome`` scripts failures."""

    def __init__(self, vms: list[FleetVm], nodes: list[str], *, gated: bool = False) -> None:
        self.truth = {vm.name: (vm.node, vm.running) for vm in vms}
        self.nodes = nodes
        self.gated = gated
        self.gates: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.busy: set[str] = set()
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.peak = 0
        self.outcome: Callable[[str, str], Outcome] = lambda name, op: None
        self.refuse: Callable[[str, str], FleetApiError | None] = lambda name, op: None
        self.problems: list[str] = []

    async def vm_op(self, name: str, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = dict(body or {})
        node, running = self.truth[name]
        if name in self.busy:
            self.problems.append(f"{op} {name} while another operation on it is under way")
        if op == "start" and running:
            self.problems.append(f"start of running {name}")
        if op in ("stop", "migrate") and not running:
            self.problems.append(f"{op} of stopped {name}")
        if op == "migrate" and (body.get("to") == node or body.get("to") not in self.nodes):
            self.problems.append(f"migrate {name} from {node} to {body.get('to')}")
        if op not in ("start", "stop", "migrate"):
            self.problems.append(f"unexpected operation {op}")
        self.calls.append((name, op, body))
        refused = self.refuse(name, op)
        if refused is not None:
            raise refused
        task_id = f"t{len(self.calls)}"
        self.tasks[task_id] = (name, op, body)
        self.busy.add(name)
        self.peak = max(self.peak, len(self.busy))
        return {"id": task_id, "state": "pending"}

    async def wait_task(self, task_id: str, timeout: float) -> dict[str, Any]:
        name, op, body = self.tasks[task_id]
        try:
            if self.gated:
                await self.gates.setdefault(task_id, asyncio.Event()).wait()
            outcome = self.outcome(name, op)
            if isinstance(outcome, FleetApiError):
                raise outcome
            if outcome is not None:
                return {"id": task_id, "state": outcome}
            node, running = self.truth[name]
            if op == "migrate":
                node = body["to"]
            else:
                running = op == "start"
            self.truth[name] = (node, running)
            return {"id": task_id, "state": "succeeded"}
        finally:
            self.busy.discard(name)

    def open(self, task_id: str | None = None) -> None:
        """Let one task (default: every task started so far) end."""
        for tid in [task_id] if task_id else list(self.tasks):
            self.gates.setdefault(tid, asyncio.Event()).set()


def make(api: FakeApi, vms: list[FleetVm], nodes: list[str], rate: float, **kw: Any) -> Churn:
    return Churn(cast(FleetApi, api), vms, nodes, rate, **kw)


def fleet_vms(running: bool = True, per_node: int = 2, nodes: list[str] = NODES) -> list[FleetVm]:
    return [FleetVm(f"{n}-vm{j}", n, running) for n in nodes for j in range(per_node)]


def records(vms: list[FleetVm]) -> dict[str, tuple[str, bool]]:
    return {vm.name: (vm.node, vm.running) for vm in vms}


# -- what is asked for ------------------------------------------------------------------------


def test_a_stopped_vm_is_started_on_its_own_node() -> None:
    async def main() -> None:
        vm = FleetVm("vm", "n1", running=False)
        api = FakeApi([vm], NODES)
        churn = make(api, [vm], NODES, rate=1, rng=random.Random(1))
        churn._tick()
        await settle()
        assert api.calls == [("vm", "start", {})]
        assert (vm.node, vm.running) == ("n1", True)
        assert churn.stats.started == churn.stats.succeeded == Counter(start=1)
        assert churn.idle == [vm]  # free for the next operation

    run(main())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_running_vms_are_stopped_or_migrated_elsewhere_and_records_follow(seed: int) -> None:
    """Many operations one after the other: each one valid for the VM's real state (the
    fake checks), migrations never to the VM's own node, and the churn's record of every VM
    always the cluster's truth."""

    async def main() -> None:
        vms = fleet_vms(running=True, per_node=3)
        api = FakeApi(vms, NODES)
        churn = make(api, vms, NODES, rate=1, rng=random.Random(seed))
        for _ in range(300):
            churn._tick()
            await settle()
            assert records(vms) == api.truth
        assert api.problems == []
        ops = Counter(op for _name, op, _body in api.calls)
        assert set(ops) == {"start", "stop", "migrate"} and ops.total() == 300
        assert churn.stats.started == churn.stats.succeeded == ops
        assert churn.stats.failed == Counter() and churn.stats.behind == 0
        # A running VM is stopped or migrated about as often (the choice is a coin flip).
        assert 0.35 < ops["migrate"] / (ops["migrate"] + ops["stop"]) < 0.65
        moved = {name for name, op, _body in api.calls if op == "migrate"}
        assert any(vm.node != vm.name.split("-")[0] for vm in vms if vm.name in moved)

    run(main())


def test_with_a_single_node_a_running_vm_is_only_ever_stopped() -> None:
    async def main() -> None:
        vms = fleet_vms(running=True, per_node=4, nodes=["n1"])
        api = FakeApi(vms, ["n1"])
        churn = make(api, vms, ["n1"], rate=1, rng=random.Random(7))
        for _ in range(40):
            churn._tick()
            await settle()
        assert api.problems == []
        assert {op for _name, op, _body in api.calls} == {"start", "stop"}
        assert all(vm.node == "n1" for vm in vms)

    run(main())


def test_the_same_seed_makes_the_same_choices() -> None:
    def choices(seed: int) -> list[tuple[str, str, dict[str, Any]]]:
        async def main() -> list[tuple[str, str, dict[str, Any]]]:
            vms = fleet_vms(running=True, per_node=3)
            api = FakeApi(vms, NODES)
            rng = random.Random(seed)
            churn = make(api, vms, NODES, rate=1, rng=rng)
            for _ in range(50):
                churn._tick()
                await settle()
            return api.calls

        return run(main())

    assert choices(5) == choices(5)
    assert choices(5) != choices(6)


# -- concurrency ------------------------------------------------------------------------------


def test_a_vm_is_never_operated_on_twice_at_once() -> None:
    async def main() -> None:
        vms = fleet_vms(running=False, per_node=1, nodes=["n1", "n2"])
        api = FakeApi(vms, ["n1", "n2"], gated=True)
        churn = make(api, vms, ["n1", "n2"], rate=1, rng=random.Random(3))
        for _ in range(2):
            churn._tick()
        await settle()
        assert sorted(name for name, _op, _body in api.calls) == ["n1-vm0", "n2-vm0"]
        # Both VMs are busy: further ticks find nothing to do and are counted as behind.
        for _ in range(3):
            churn._tick()
        await settle()
        assert len(api.calls) == 2 and churn.stats.behind == 3
        # One ends: the next tick may only pick that one.
        first = api.calls[0][0]
        api.open("t1")
        await settle()
        churn._tick()
        await settle()
        assert [name for name, _op, _body in api.calls] == [first, api.calls[1][0], first]
        assert api.calls[2][1] in ("stop", "migrate")  # it was started: now it runs
        api.open()
        await settle()
        assert api.problems == [] and api.peak == 2
        assert sorted(vm.name for vm in churn.idle) == ["n1-vm0", "n2-vm0"]

    run(main())


def test_max_inflight_holds_and_the_extra_ticks_count_as_behind() -> None:
    async def main() -> None:
        vms = fleet_vms(running=True, per_node=4)
        api = FakeApi(vms, NODES, gated=True)
        churn = make(api, vms, NODES, rate=1, max_inflight=3, rng=random.Random(11))
        for _ in range(8):
            churn._tick()
        await settle()
        assert len(api.calls) == 3 and api.peak == 3
        assert churn.stats.behind == 5
        assert len(churn.idle) == len(vms) - 3
        api.open()
        await settle()
        for _ in range(3):
            churn._tick()
        await settle()
        assert len(api.calls) == 6 and churn.stats.behind == 5
        api.open()
        await settle()
        assert api.problems == [] and api.peak == 3
        assert churn.stats.started == churn.stats.succeeded
        assert churn.stats.started.total() == 6

    run(main())


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refused", "outcome", "code"),
    [
        (FleetApiError(409, "conflict", "busy"), None, "conflict"),
        (FleetApiError(0, "unreachable", "no route"), None, "unreachable"),
        (None, "failed", "failed"),
        (None, "rolled_back", "rolled_back"),
        (None, "needs_attention", "needs_attention"),
        (None, FleetApiError(0, "timeout", "still running"), "timeout"),
    ],
)
def test_a_failed_operation_is_counted_by_code_and_changes_no_record(
    refused: FleetApiError | None, outcome: Outcome, code: str
) -> None:
    async def main() -> None:
        vms = [FleetVm("up", "n1", True), FleetVm("down", "n2", False)]
        api = FakeApi(vms, NODES)
        api.refuse = lambda name, op: refused
        api.outcome = lambda name, op: outcome
        churn = make(api, vms, NODES, rate=1, rng=random.Random(2))
        for _ in range(10):
            churn._tick()
            await settle()
        assert records(vms) == {"up": ("n1", True), "down": ("n2", False)}
        ops = Counter(op for _name, op, _body in api.calls)
        assert ops.total() == 10 and ops["start"] >= 1
        assert churn.stats.started == churn.stats.failed == ops
        assert churn.stats.succeeded == Counter()
        assert churn.stats.errors == Counter({code: 10})
        assert sorted(vm.name for vm in churn.idle) == ["down", "up"]  # tried again later
        assert not churn.stats.latencies  # only successes are timed
        assert api.problems == []

    run(main())


def test_failures_and_successes_mix_and_only_successes_move_records() -> None:
    async def main() -> None:
        vms = fleet_vms(running=True, per_node=3)
        api = FakeApi(vms, NODES)
        seen: Counter[str] = Counter()

        def outcome(name: str, op: str) -> Outcome:
            seen[op] += 1
            if op == "migrate" and seen[op] % 2:
                return "rolled_back"  # every other migration is rolled back
            return None

        api.outcome = outcome
        churn = make(api, vms, NODES, rate=1, rng=random.Random(4))
        for _ in range(200):
            churn._tick()
            await settle()
            assert records(vms) == api.truth
        stats = churn.stats
        assert api.problems == []
        assert stats.failed == Counter(migrate=(seen["migrate"] + 1) // 2)
        assert stats.errors == Counter(rolled_back=(seen["migrate"] + 1) // 2)
        assert stats.succeeded + stats.failed == stats.started
        summary = stats.summary()
        assert summary["failed"] == dict(stats.failed)
        assert summary["latency_s"]["samples"] == stats.succeeded.total()
        assert summary["errors"] == {"rolled_back": stats.errors["rolled_back"]}

    run(main())


# -- run --------------------------------------------------------------------------------------


def test_run_issues_operations_until_stopped_then_waits_for_those_under_way() -> None:
    async def main() -> None:
        vms = fleet_vms(running=True, per_node=2)
        api = FakeApi(vms, NODES, gated=True)
        churn = make(api, vms, NODES, rate=200, rng=random.Random(9))
        stop = asyncio.Event()
        runner = asyncio.create_task(churn.run(stop))
        async with asyncio.timeout(10):
            while len(api.calls) < 3:  # the pace: a tick every 5 ms
                await asyncio.sleep(0.005)
        stop.set()
        await settle()
        assert not runner.done()  # the operations under way have not ended yet
        calls = len(api.calls)
        api.open()
        async with asyncio.timeout(10):
            await runner
        assert len(api.calls) == calls  # nothing new once stopped
        assert churn.stats.started == churn.stats.succeeded
        assert churn.stats.started.total() == calls
        assert sorted(vm.name for vm in churn.idle) == sorted(vm.name for vm in vms)
        assert api.problems == []

    run(main())


def test_run_returns_at_once_when_stopped_with_nothing_under_way() -> None:
    async def main() -> None:
        vm = FleetVm("vm", "n1", running=False)
        api = FakeApi([vm], NODES)
        churn = make(api, [vm], NODES, rate=0.01, rng=random.Random(1))
        stop = asyncio.Event()
        runner = asyncio.create_task(churn.run(stop))
        await settle()  # the first tick is immediate; the next one would be 100 s later
        assert api.calls == [("vm", "start", {})]
        stop.set()
        async with asyncio.timeout(5):  # wakes early on stop instead of waiting out its pace
            await runner
        assert vm.running

    run(main())


@pytest.mark.parametrize("rate", [0, -1.5])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        make(FakeApi([], NODES), [], NODES, rate)


def test_summary_of_latencies() -> None:
    churn = make(FakeApi([], NODES), [], NODES, 1)
    empty = churn.stats.summary()
    assert empty["latency_s"] == {"p50": None, "p99": None, "samples": 0}
    churn.stats.latencies.extend(i / 100 for i in range(100, 0, -1))
    churn.stats.behind = 4
    summary = churn.stats.summary()
    assert summary["latency_s"] == {"p50": 0.51, "p99": 1.0, "samples": 100}
    assert summary["behind"] == 4
    json.dumps(summary)  # the fleet's status file and `-o json` hold it as it is


# -- the fleet's names ------------------------------------------------------------------------


def test_node_and_vm_names() -> None:
    options = FleetOptions("http://x", "t", nodes=3, vms_per_node=2, prefix="load")
    assert options.node_names() == ["load-0001", "load-0002", "load-0003"]
    assert options.vm_names("load-0002") == ["load-0002-vm001", "load-0002-vm002"]
    assert FleetOptions("http://x", "t", nodes=1, vms_per_node=0).vm_names("fleet-0001") == []
    big = FleetOptions("http://x", "t", nodes=10000, vms_per_node=120)
    names = big.node_names()
    assert names[0] == "fleet-0001" and names[-1] == "fleet-10000" and len(set(names)) == 10000
    assert big.vm_names("fleet-0001")[-1] == "fleet-0001-vm120"


# -- --adopt (faults found while testing it) --------------------------------------------------


class AdoptApi(FakeApi):
    """What an adopting fleet reads from the server: two nodes' VMs, one running each."""

    def __init__(self) -> None:
        super().__init__([FleetVm("a-vm1", "a-1", True), FleetVm("a-vm2", "a-2", True)], [])
        self.nodes = ["a-1", "a-2"]

    async def vms(self) -> list[dict[str, Any]]:
        return [
            {"uuid": f"uuid-{name}", "name": name, "node": node, "vcpus": 1,
             "memory_mb": 256, "epoch": 1, "desired_power": "running"}
            for name, (node, _running) in sorted(self.truth.items())
        ]  # fmt: skip

    async def aclose(self) -> None:
        pass


def _adopting_fleet(tmp_path: Path, welcomed: int, **options: Any) -> tuple[Fleet, AdoptApi]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"a-1": "token-1", "a-2": "token-2"}))
    # What the CLI passes with --adopt and no --nodes / --vms-per-node.
    fleet = Fleet(
        FleetOptions("http://127.0.0.1:1", "t", nodes=0, vms_per_node=0, adopt_tokens=tokens,
                     **options),
        lambda message: None,
    )  # fmt: skip
    api = AdoptApi()
    fleet.api = cast(FleetApi, api)

    async def start_all(**kwargs: Any) -> int:  # no server: say how many were welcomed
        return welcomed

    fleet.agents.start_all = start_all  # type: ignore[method-assign]
    return fleet, api


def test_adopt_fails_when_the_adopted_hosts_are_not_welcomed(tmp_path: Path) -> None:
    fleet, _api = _adopting_fleet(tmp_path, welcomed=0, duration=0.0)
    with pytest.raises(FleetError, match="welcomed"):
        run(fleet.run(asyncio.Event()))


def test_adopt_churn_migrates_between_the_adopted_nodes(tmp_path: Path) -> None:
    fleet, _api = _adopting_fleet(tmp_path, welcomed=2, duration=0.0, churn=1.0)
    status = run(fleet.run(asyncio.Event()))
    assert status["phase"] == "stopped"
    assert fleet.churn is not None
    assert sorted(fleet.churn.nodes) == ["a-1", "a-2"]
