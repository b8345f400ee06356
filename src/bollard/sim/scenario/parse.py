"""Parse a scenario file (YAML; the format is docs/scenarios.md) into a ``Scenario``.

Everything is checked before anything starts: the shape of each section, every value's type
and range, the settings against the cluster's settings registry, and every name a section
uses against the nodes, VMs and groups the cluster declares. The first problem found is
raised as ``ScenarioError`` ("FILE:LINE: what was expected").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode

from bollard.domain.errors import InvalidInput
from bollard.domain.settings import REGISTRY
from bollard.sim.scenario.model import (
    DEFAULT_HEARTBEAT,
    DEFAULT_MEMORY_MB,
    DEFAULT_SIM_LATENCY,
    DEFAULT_VCPUS,
    NODE_ACTIONS,
    Action,
    ClusterSpec,
    GroupSpec,
    Never,
    NodeSpec,
    RuleSpec,
    Scenario,
    Step,
    VmSpec,
)
from bollard.sim.scenario.parse_expect import HA_STATES, MAX_SECONDS, ExpectParser
from bollard.sim.scenario.yaml_read import Doc, ScenarioError

__all__ = ["ScenarioError", "load_scenario", "parse_scenario"]

MAX_NODES = 32
MAX_VMS = 200
SHUTDOWN_POLICIES = ("freeze", "failover", "migrate", "conditional")


def load_scenario(path: Path | str) -> Scenario:
    """Read and parse the file at ``path``; ScenarioError if it cannot be read or is wrong."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(file, 0, f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(file, 0, "not a text file (expected UTF-8 YAML)") from None
    return parse_scenario(text, file)


def parse_scenario(text: str, file: str = "<scenario>") -> Scenario:
    return _Parser(Doc(file, text)).scenario()


class _Parser(ExpectParser):
    # -- the file --------------------------------------------------------------------------

    def scenario(self) -> Scenario:
        d = self.doc
        top = d.fields(
            d.root,
            "the scenario",
            required=("cluster", "expect"),
            optional=("name", "description", "timeline", "never"),
        )
        name = d.text(top["name"], "name") if "name" in top else Path(d.file).stem
        description = d.text(top["description"], "description") if "description" in top else ""
        cluster = self.cluster(top["cluster"])
        timeline = self.timeline(top["timeline"]) if "timeline" in top else ()
        expect = self.expectation(top["expect"], "expect")
        expect = replace(expect, line=d.key_line(d.root, "expect"))  # (where `expect:` is)
        never = self.never(top.get("never"), cluster, timeline)
        return Scenario(name, description, d.file, cluster, timeline, expect, never)

    # -- cluster ---------------------------------------------------------------------------

    def cluster(self, node: Node) -> ClusterSpec:
        d = self.doc
        f = d.fields(
            node,
            "cluster",
            required=("nodes",),
            optional=(
                "heartbeat",
                "sim_latency",
                "node_size",
                "settings",
                "groups",
                "rules",
                "vms",
            ),
        )
        heartbeat = DEFAULT_HEARTBEAT
        if "heartbeat" in f:
            heartbeat = d.number(f["heartbeat"], "cluster heartbeat (seconds)", low=0.1, high=60)
        latency = DEFAULT_SIM_LATENCY
        if "sim_latency" in f:
            latency = d.number(f["sim_latency"], "cluster sim_latency (seconds)", low=0, high=10)
        vcpus, memory = DEFAULT_VCPUS, DEFAULT_MEMORY_MB
        if "node_size" in f:
            vcpus, memory = self.size(f["node_size"], "node_size", vcpus, memory)
        nodes = self.node_specs(f["nodes"], vcpus, memory)
        settings = self.settings(f["settings"], "cluster settings") if "settings" in f else {}
        groups = self.groups(f["groups"]) if "groups" in f else ()
        vms = self.vm_specs(f["vms"], {g.name for g in groups}) if "vms" in f else ()
        rules = self.rules(f["rules"]) if "rules" in f else ()
        return ClusterSpec(heartbeat, latency, nodes, settings, groups, rules, vms)

    def size(self, node: Node, what: str, vcpus: int, memory: int) -> tuple[int, int]:
        d = self.doc
        f = d.fields(node, what, optional=("vcpus", "memory"))
        if "vcpus" in f:
            vcpus = d.integer(f["vcpus"], f"{what} vcpus", low=1, high=4096)
        if "memory" in f:
            memory = d.integer(f["memory"], f"{what} memory (MB)", low=64, high=16 * 1024 * 1024)
        return vcpus, memory

    def node_specs(self, node: Node, vcpus: int, memory: int) -> tuple[NodeSpec, ...]:
        d = self.doc
        specs: list[NodeSpec] = []
        for i, item in d.items(node, "cluster nodes"):
            what = f"cluster node {i}"
            line = d.where(item).line
            if isinstance(item, ScalarNode):
                spec = NodeSpec(d.name(item, what), vcpus, memory, None, line)
            else:
                f = d.fields(
                    item, what, required=("name",), optional=("vcpus", "memory", "shutdown_policy")
                )
                name = d.name(f["name"], f"{what} name")
                own_vcpus = (
                    d.integer(f["vcpus"], f"{what} vcpus", low=1, high=4096)
                    if ("vcpus" in f)
                    else vcpus
                )
                own_memory = (
                    d.integer(f["memory"], f"{what} memory (MB)", low=64, high=16 * 1024 * 1024)
                    if "memory" in f
                    else memory
                )
                policy = None
                if "shutdown_policy" in f:
                    policy = d.choice(
                        f["shutdown_policy"], f"{what} shutdown_policy", SHUTDOWN_POLICIES
                    )
                spec = NodeSpec(name, own_vcpus, own_memory, policy, line)
            if spec.name in self.nodes:
                raise d.error(item, f"{what}: node {spec.name!r} is declared twice")
            if spec.name == "server":
                raise d.error(item, f"{what}: 'server' is the server process's name; pick another")
            self.nodes.add(spec.name)
            specs.append(spec)
        if not specs:
            raise d.error(node, "cluster nodes: expected at least one node")
        if len(specs) > MAX_NODES:
            raise d.error(node, f"cluster nodes: at most {MAX_NODES} nodes, got {len(specs)}")
        return tuple(specs)

    def settings(self, node: Node, what: str) -> dict[str, Any]:
        d = self.doc
        values: dict[str, Any] = {}
        for key, value in d.mapping(node, what).items():
            setting = REGISTRY.get(key)
            if setting is None:
                raise d.error(value, f"{what}: no setting {key!r}; see `bollard settings list`")
            raw = d.scalar(value, f"{what} {key}")
            try:
                values[key] = setting.parse(raw)
            except InvalidInput as exc:
                raise d.error(value, f"{what}: {exc.message}") from None
        return values

    def groups(self, node: Node) -> tuple[GroupSpec, ...]:
        d = self.doc
        groups: list[GroupSpec] = []
        for i, item in d.items(node, "cluster groups"):
            what = f"group {i}"
            f = d.fields(
                item, what, required=("name", "nodes"), optional=("restricted", "nofailback")
            )
            name = d.name(f["name"], f"{what} name")
            what = f"group {name}"
            members: dict[str, int] = {}
            for member, prio in d.mapping(f["nodes"], f"{what} nodes (node: priority)").items():
                self._check(self.nodes, member, prio, f"{what} nodes", "node")
                members[member] = d.integer(
                    prio, f"{what} priority of {member}", low=-1000, high=1000
                )
            if not members:
                raise d.error(f["nodes"], f"{what} nodes: expected at least one node")
            restricted = (
                d.boolean(f["restricted"], f"{what} restricted") if ("restricted" in f) else False
            )
            nofailback = (
                d.boolean(f["nofailback"], f"{what} nofailback") if ("nofailback" in f) else False
            )
            if any(g.name == name for g in groups):
                raise d.error(item, f"{what}: declared twice")
            groups.append(GroupSpec(name, members, restricted, nofailback, d.where(item).line))
        return tuple(groups)

    def vm_specs(self, node: Node, groups: set[str]) -> tuple[VmSpec, ...]:
        d = self.doc
        specs: list[VmSpec] = []
        taken: dict[str, str] = {}  # volume -> the VM it is attached to
        for i, item in d.items(node, "cluster vms"):
            what = f"vm {i}"
            f = d.fields(
                item,
                what,
                required=("name",),
                optional=(
                    "node",
                    "vcpus",
                    "memory",
                    "state",
                    "ha",
                    "ha_priority",
                    "ha_group",
                    "ha_state",
                    "max_restart",
                    "max_relocate",
                    "migration_method",
                    "volumes",
                ),
            )
            name = d.name(f["name"], f"{what} name")
            what = f"vm {name}"
            if name in self.vms:
                raise d.error(item, f"{what}: declared twice")
            where = self.node_ref(f["node"], f"{what} node") if "node" in f else None
            vcpus = (
                d.integer(f["vcpus"], f"{what} vcpus", low=1, high=1024) if ("vcpus" in f) else 1
            )
            memory = (
                d.integer(f["memory"], f"{what} memory (MB)", low=1, high=16 * 1024 * 1024)
                if "memory" in f
                else 256
            )
            state = (
                d.choice(f["state"], f"{what} state", ("running", "stopped"))
                if ("state" in f)
                else "running"
            )
            meta = self.vm_meta(f, what, groups)
            ha_state = (
                d.choice(f["ha_state"], f"{what} ha_state", HA_STATES)
                if ("ha_state" in f)
                else None
            )
            volumes = []
            for volume, at in d.names(f["volumes"], f"{what} volumes") if "volumes" in f else []:
                if volume in taken:
                    raise d.error(at, f"{what} volumes: {volume!r} is attached to {taken[volume]}")
                taken[volume] = name
                volumes.append(volume)
            self.vms.add(name)
            specs.append(
                VmSpec(
                    name,
                    where,
                    vcpus,
                    memory,
                    state == "running",
                    meta,
                    ha_state,
                    d.where(item).line,
                    tuple(volumes),
                )
            )
        if len(specs) > MAX_VMS:
            raise d.error(node, f"cluster vms: at most {MAX_VMS} VMs, got {len(specs)}")
        return tuple(specs)

    def vm_meta(self, f: dict[str, Node], what: str, groups: set[str]) -> dict[str, Any]:
        """The VM fields the API takes as they are: ha, ha_priority, ha_group, max_restart,
        max_relocate, migration_method."""
        d = self.doc
        meta: dict[str, Any] = {}
        if "ha" in f:
            meta["ha"] = d.choice(f["ha"], f"{what} ha", ("restart", "none"))
        if "ha_priority" in f:
            meta["ha_priority"] = d.integer(
                f["ha_priority"], f"{what} ha_priority", low=-1000, high=1000
            )
        if "ha_group" in f:
            meta["ha_group"] = self._check(
                groups,
                d.name(f["ha_group"], f"{what} ha_group"),
                f["ha_group"],
                f"{what} ha_group",
                "group",
            )
        for key in ("max_restart", "max_relocate"):
            if key in f:
                meta[key] = d.integer(f[key], f"{what} {key}", low=0, high=100)
        if "migration_method" in f:
            meta["migration_method"] = d.choice(
                f["migration_method"], f"{what} migration_method", ("default", "live", "shutdown")
            )
        return meta

    def rules(self, node: Node) -> tuple[RuleSpec, ...]:
        d = self.doc
        rules: list[RuleSpec] = []
        for i, item in d.items(node, "cluster rules"):
            what = f"rule {i}"
            f = d.fields(item, what, required=("name", "kind", "vms"), optional=("strict",))
            name = d.name(f["name"], f"{what} name")
            what = f"rule {name}"
            kind = d.choice(f["kind"], f"{what} kind", ("together", "apart"))
            strict = d.boolean(f["strict"], f"{what} strict") if "strict" in f else False
            vms = [self.vm_ref(n, f"{what} vms") for n in d.sequence(f["vms"], f"{what} vms")]
            if len(set(vms)) < 2:
                raise d.error(f["vms"], f"{what} vms: expected at least two different VMs")
            if any(r.name == name for r in rules):
                raise d.error(item, f"{what}: declared twice")
            rules.append(RuleSpec(name, kind, strict, tuple(vms), d.where(item).line))
        return tuple(rules)

    # -- timeline --------------------------------------------------------------------------

    def timeline(self, node: Node) -> tuple[Step, ...]:
        d = self.doc
        steps: list[Step] = []
        last_at = 0.0
        for i, item in d.items(node, "timeline"):
            step = self.step(item, f"timeline step {i}")
            if step.at is not None:
                if step.at < last_at:
                    raise d.error(
                        item,
                        f"timeline step {i}: at {step.at:g} comes before the "
                        f"step above it (at {last_at:g}); keep the steps in time order",
                    )
                last_at = step.at
            steps.append(step)
        return tuple(steps)

    def step(self, item: Node, what: str) -> Step:
        d = self.doc
        f = d.mapping(item, what)
        actions = [a for a in Action if a.value in f]
        if len(actions) != 1:
            choices = ", ".join(a.value for a in Action)
            if actions:
                got = " and ".join(a.value for a in actions)
                raise d.error(item, f"{what}: expected one action, got {got}")
            keys = d.keys(item)
            other = next((k for k in keys if k.value != "at"), None)
            if other is None:
                raise d.error(item, f"{what}: expected an action ({choices})")
            raise d.error(
                other, f"{what}: unknown action {other.value!r}; expected one of {choices}"
            )
        action = actions[0]
        extra = {
            Action.START_FAILS: ("times",),
            Action.VM_START_FAILS: ("node", "times"),
            Action.VM_START_WORKS: ("node",),
            Action.MIGRATE: ("to", "refused"),
            Action.SET_VM: (
                "ha_state",
                "ha_group",
                "ha",
                "ha_priority",
                "max_restart",
                "max_relocate",
                "migration_method",
            ),
        }.get(action, ())
        f = d.fields(item, what, required=(action.value,), optional=("at", *extra))
        at = (
            d.number(f["at"], f"{what} at (seconds)", low=0, high=MAX_SECONDS)
            if ("at" in f)
            else None
        )
        value = f[action.value]
        line = d.where(item).line
        what = f"{what} ({action.value})"
        if action in NODE_ACTIONS:
            return Step(at, action, node=self.node_ref(value, what), line=line)
        if action is Action.START_FAILS:
            times = (
                d.integer(f["times"], f"{what} times", low=0, high=1000) if ("times" in f) else 0
            )
            return Step(at, action, node=self.node_ref(value, what), times=times, line=line)
        if action in (Action.VM_START_FAILS, Action.VM_START_WORKS):
            vm = self.vm_ref(value, what)
            on = self.node_ref(f["node"], f"{what} node") if "node" in f else None
            times = (
                d.integer(f["times"], f"{what} times", low=0, high=1000) if ("times" in f) else 0
            )
            return Step(at, action, node=on, vm=vm, times=times, line=line)
        if action is Action.CRASH_VM:
            return Step(at, action, vm=self.vm_ref(value, what), line=line)
        if action is Action.RESTART_SERVER:
            if not isinstance(value, ScalarNode) or d.scalar(value, what) not in (True, None):
                raise d.error(value, f"{what}: expected true (or nothing)")
            return Step(at, action, line=line)
        if action is Action.SET:
            return Step(at, action, values=self.settings(value, what), line=line)
        if action is Action.SET_VM:
            vm = self.vm_ref(value, what)
            values = self.vm_meta(f, what, set())  # (groups: checked by the server)
            if "ha_group" in f:
                values["ha_group"] = d.name(f["ha_group"], f"{what} ha_group")
            if "ha_state" in f:
                values["ha_state"] = d.choice(f["ha_state"], f"{what} ha_state", HA_STATES)
            if not values:
                raise d.error(
                    item, f"{what}: expected at least one field to set ({', '.join(extra)})"
                )
            return Step(at, action, vm=vm, values=values, line=line)
        if action is Action.MIGRATE:
            vm = self.vm_ref(value, what)
            to = self.node_ref(f["to"], f"{what} to") if "to" in f else None
            refused: Any = None
            if "refused" in f:
                raw = d.scalar(f["refused"], f"{what} refused")
                if not isinstance(raw, bool | str) or raw is False:
                    raise d.error(
                        f["refused"], f"{what} refused: expected true or words of the refusal"
                    )
                refused = raw
            values = {} if refused is None else {"refused": refused}
            return Step(at, action, vm=vm, node=to, values=values, line=line)
        return Step(at, action, wait=self.expectation(value, what), line=line)

    # -- must-never ------------------------------------------------------------------------

    def never(self, node: Node | None, cluster: ClusterSpec, timeline: tuple[Step, ...]) -> Never:
        """The VMs that must never run and those that must never move: the ones the file
        names, plus every VM declared stopped (never running) and every VM declared ignored
        (never moved), unless a timeline step names it (set_vm, migrate)."""
        d = self.doc
        running: list[str] = []
        moved: list[str] = []
        if node is not None:
            f = d.fields(node, "never", optional=("running", "moved"))
            if "running" in f:
                running += [
                    self.vm_ref(n, "never running")
                    for n in d.sequence(f["running"], "never running")
                ]
            if "moved" in f:
                moved += [
                    self.vm_ref(n, "never moved") for n in d.sequence(f["moved"], "never moved")
                ]
        touched = {s.vm for s in timeline if s.vm is not None}
        for vm in cluster.vms:
            if vm.name in touched:
                continue
            if not vm.running and vm.ha_state != "started" and vm.name not in running:
                running.append(vm.name)
            if vm.ha_state == "ignored" and vm.name not in moved:
                moved.append(vm.name)
        return Never(tuple(running), tuple(moved))
