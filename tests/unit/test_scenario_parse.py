"""The scenario file parser (bollard.sim.scenario.parse): every shipped scenario parses, and a
malformed file is refused with its file, the line of the problem and what was expected
there; `bollard sim scenario check` says the same in one line and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bollard.sim.models import SimVm
from bollard.sim.scenario import ScenarioError, load_scenario, parse_scenario
from bollard.sim.scenario.checks import FenceOrder, World, misses
from bollard.sim.scenario.model import Action
from bollard.sim.scenario.watch import FabricView, WatchPlan, violations
from bollard.sim.storage_models import SimDisk

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

GOOD = """\
name: demo
cluster:
  nodes:
    - node1
    - {name: node2, vcpus: 8, memory: 8192, shutdown_policy: freeze}
  settings: {health.dead_after: 4}
  groups:
    - {name: g, nodes: {node1: 2, node2: 1}, restricted: true}
  vms:
    - {name: a, node: node1, ha_group: g}
    - {name: b, state: stopped}
    - {name: c, ha_state: ignored, node: node2, volumes: [c-data]}
  rules:
    - {name: r, kind: apart, strict: true, vms: [a, c]}
timeline:
  - at: 1
    power_off: node1
  - vm_start_fails: a
    times: 2
  - wait:
      within: 5
      nodes: {node1: {health: fenced}}
  - set_vm: a
    ha_state: started
  - migrate: a
    to: node2
    refused: strict
expect:
  within: 10
  vms:
    a: {node: [node2], state: running, ha_state: started}
  events:
    - {kind: node.fenced, node: node1}
"""


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "bad.yaml")
    return caught.value


def _replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize(
    "path",
    sorted(SCENARIOS.glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_scenario_of_the_suite_parses(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.cluster.nodes and scenario.cluster.vms
    assert scenario.expect.within > 0


def test_the_suite_has_at_least_15_scenarios() -> None:
    shipped = list(SCENARIOS.glob("*.yaml")) + list((SCENARIOS / "pending").glob("*.yaml"))
    assert len(shipped) >= 15, shipped


def test_a_good_file_parses_into_its_parts() -> None:
    s = parse_scenario(GOOD, "good.yaml")
    assert s.name == "demo"
    assert [n.name for n in s.cluster.nodes] == ["node1", "node2"]
    assert (s.cluster.nodes[1].vcpus, s.cluster.nodes[1].memory_mb) == (8, 8192)
    assert s.cluster.nodes[1].shutdown_policy == "freeze"
    assert s.cluster.settings == {"health.dead_after": 4}
    assert s.cluster.groups[0].nodes == {"node1": 2, "node2": 1}
    assert s.cluster.vms[0].meta == {"ha_group": "g"}
    assert s.cluster.vms[2].volumes == ("c-data",)
    assert [step.action for step in s.timeline] == [
        Action.POWER_OFF,
        Action.VM_START_FAILS,
        Action.WAIT,
        Action.SET_VM,
        Action.MIGRATE,
    ]
    assert s.timeline[1].times == 2 and s.timeline[1].node is None
    assert s.timeline[4].values == {"refused": "strict"}
    assert s.expect.vms[0].nodes == ("node2",)
    # Declared stopped: never running; declared ignored: never moved.
    assert s.never.running == ("b",)
    assert s.never.moved == ("c",)
    assert [r.name for r in s.strict_apart()] == ["r"]


@pytest.mark.parametrize(
    ("old", "new", "line_needle", "expected"),
    [
        ("    - node1\n", "    - no de\n", "no de", "expected a name"),
        ("vcpus: 8,", "vcpus: eight,", "vcpus: eight", "expected a whole number from 1"),
        ("shutdown_policy: freeze", "shutdown_policy: thaw", "thaw", "expected one of freeze"),
        ("health.dead_after: 4", "health.dead_after: 0", "dead_after: 0", "health.dead_after"),
        ("health.dead_after: 4", "health.dead_aftr: 4", "dead_aftr", "no setting"),
        ("{node1: 2, node2: 1}", "{node1: 2, node9: 1}", "node9", "no node 'node9'"),
        ("{name: a, node: node1,", "{name: a, node: node7,", "node7", "no node 'node7'"),
        ("kind: apart", "kind: away", "kind: away", "expected one of together, apart"),
        ("vms: [a, c]", "vms: [a, zz]", "[a, zz]", "no VM 'zz'"),
        ("vms: [a, c]", "vms: [a, a]", "[a, a]", "at least two different VMs"),
        (
            "{name: b, state: stopped}",
            "{name: b, state: stopped, volumes: [c-data]}",
            "name: c,",
            "'c-data' is attached to b",
        ),
        ("    power_off: node1", "    power_of: node1", "power_of", "unknown action 'power_of'"),
        ("  - at: 1\n", "  - at: soon\n", "at: soon", "expected a number from 0"),
        ("    times: 2", "    times: -1", "times: -1", "expected a whole number from 0"),
        (
            "ha_state: started\n  - migrate",
            "ha_state: paused\n  - migrate",
            "paused",
            "expected one of started",
        ),
        ("    refused: strict", "    refusd: strict", "refusd", "unknown key 'refusd'"),
        (
            "state: running, ha_state",
            "state: up, ha_state",
            "state: up",
            "expected one of running, stopped",
        ),
        ("{kind: node.fenced, node: node1}", "{node: node1}", "{node: node1}", "'kind' is missing"),
        ("  within: 10\n", "  within: 10\n  within: 11\n", "within: 11", "given twice"),
        ("  within: 5\n", "  within: []\n", "within: []", "expected a single value"),
        (
            "nodes: {node1: {health: fenced}}",
            "nodes: {node1: {health: gone}}",
            "health: gone",
            "expected one of up, suspect",
        ),
    ],
)
def test_each_problem_is_named_with_file_line_and_what_was_expected(
    old: str, new: str, line_needle: str, expected: str
) -> None:
    text = _replace(old, new)
    err = _error(text)
    assert err.file == "bad.yaml"
    assert err.line == _line_of(text, line_needle), str(err)
    assert expected in err.message, str(err)
    assert str(err).startswith(f"bad.yaml:{err.line}: ")


def test_missing_sections_and_bad_yaml_are_refused_with_a_line() -> None:
    err = _error("cluster:\n  nodes: [node1]\n")
    assert (err.line, err.message) == (1, "the scenario: 'expect' is missing")
    err = _error("name: x\ncluster: {nodes: [a]\nexpect: {}\n")
    assert err.message.startswith("not valid YAML") and err.line >= 2
    assert _error("").message.startswith("the file is empty")
    err = _error("- just\n- a list\n")
    assert err.line == 1 and "expected a mapping" in err.message
    err = _error("cluster: {nodes: [n1]}\nexpect: {within: 3}\n")
    assert err.line == 2 and "expected at least one of vms, nodes" in err.message
    err = _error("cluster: {nodes: [n1]}\nexpect:\n  vms: {a: {node: n1}}\n")
    assert (err.line, err.message) == (3, "expect vm a: no VM 'a' in the cluster (none)")
    assert str(ScenarioError("f.yaml", 0, "cannot read the file")) == "f.yaml: cannot read the file"


def test_steps_out_of_time_order_are_refused() -> None:
    text = _replace("  - vm_start_fails: a\n", "  - at: 0.5\n    vm_start_fails: a\n")
    err = _error(text)
    assert err.line == _line_of(text, "at: 0.5") and "time order" in err.message


def test_the_cli_check_names_the_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(_replace("kind: apart", "kind: away"))
    result = subprocess.run(
        [sys.executable, "-m", "bollard", "sim", "scenario", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:{_line_of(bad.read_text(), 'kind: away')}:" in lines[0]
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "bollard", "sim", "scenario", "check", str(good), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"scenario": "demo"' in result.stdout


# -- the checks, on made-up views -----------------------------------------------------------


def _vm(uuid: str, power: str = "running", drives: list[SimDisk] | None = None) -> SimVm:
    return SimVm(
        uuid=uuid,
        name=uuid,
        vcpus=1,
        memory_mb=256,
        power=power,  # type: ignore[arg-type]
        drives=drives or [],
    )


def test_fabric_violations_name_what_must_never_be() -> None:
    disk = SimDisk(device="vdb", size_mb=64, path="sim://shared/nfs/d1")
    view = FabricView.of(
        {
            "n1": [_vm("a"), _vm("b", drives=[disk]), _vm("s")],
            "n2": [_vm("a"), _vm("c", drives=[disk]), _vm("m"), _vm("x", power="paused")],
        }
    )
    plan = WatchPlan(
        names={"a": "a"},
        stay_stopped=frozenset({"s"}),
        stay_on={"m": "n1"},
        apart=(("r", frozenset({"a", "b"})),),
    )
    found = {(v.check, v.subject) for v in violations(view, plan)}
    assert found == {
        ("two_hosts", "a"),
        ("disk_two_hosts", "sim://shared/nfs/d1"),
        ("running", "s"),
        ("moved", "m"),
        ("apart", "r@n1"),
    }
    quiet = FabricView.of({"n1": [_vm("a")], "n2": [_vm("b"), _vm("s", power="stopped")]})
    assert violations(quiet, plan) == []


def test_a_recovery_before_its_node_is_fenced_is_a_violation() -> None:
    order = FenceOrder(lambda uuid: "n1")
    recovered = {
        "id": 9,
        "kind": "vm.recovered",
        "vm": "a",
        "node": "n2",
        "message": "a now belongs to n2 (from fenced n1), epoch 2",
    }
    found = order.feed(recovered)
    assert found is not None and "before its old node n1" in found.text
    assert order.feed({"id": 10, "kind": "node.fenced", "node": "n1"}) is None
    assert order.feed({**recovered, "id": 11}) is None
    order.feed({"id": 12, "kind": "node.up", "node": "n1"})  # back: a new fence is needed
    assert order.feed({**recovered, "id": 13}) is not None


def test_misses_say_what_differs() -> None:
    s = parse_scenario(GOOD, "good.yaml")
    world = World(
        vms={"a": {"name": "a", "node": "node1", "status": "ACTIVE", "ha_state": "started"}},
        nodes={},
        running={"a": ["node1"]},
        events=[],
    )
    found = misses(s.expect, world)
    assert "vm a: its node is node1, expected node2" in found
    assert any(m.startswith("no event node.fenced node node1") for m in found)
    world = World(
        vms={"a": {"name": "a", "node": "node2", "status": "ACTIVE", "ha_state": "started"}},
        nodes={},
        running={"a": ["node2"]},
        events=[{"id": 1, "kind": "node.fenced", "node": "node1", "message": "off"}],
    )
    assert misses(s.expect, world) == []
