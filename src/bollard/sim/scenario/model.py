"""A scenario as the runner reads it: the cluster, the fault timeline, the expected end state
and the must-never checks (the file format is docs/scenarios.md). Plain frozen records; the
parser (parse.py) builds them and checks every cross-reference."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DEFAULT_HEARTBEAT = 1.0
DEFAULT_SIM_LATENCY = 0.05
DEFAULT_VCPUS = 16
DEFAULT_MEMORY_MB = 32768
DEFAULT_WITHIN = 30.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    vcpus: int
    memory_mb: int
    shutdown_policy: str | None  # freeze | failover | migrate | conditional; None: the setting
    line: int


@dataclass(frozen=True)
class GroupSpec:
    name: str
    nodes: dict[str, int]  # node -> priority
    restricted: bool
    nofailback: bool
    line: int


@dataclass(frozen=True)
class RuleSpec:
    name: str
    kind: str  # together | apart
    strict: bool
    vms: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class VmSpec:
    name: str
    node: str | None  # where it is created; None: where the scheduler places it
    vcpus: int
    memory_mb: int
    running: bool  # state: running (started at creation) or stopped
    meta: dict[str, Any]  # the VM's HA fields as the API takes them (ha, ha_group, ...)
    ha_state: str | None  # set once created: started | stopped | disabled | ignored
    line: int
    volumes: tuple[str, ...] = ()  # volumes of the shared pool, attached before it starts


@dataclass(frozen=True)
class ClusterSpec:
    heartbeat: float
    sim_latency: float
    nodes: tuple[NodeSpec, ...]
    settings: dict[str, Any]
    groups: tuple[GroupSpec, ...]
    rules: tuple[RuleSpec, ...]
    vms: tuple[VmSpec, ...]

    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]


class Action(StrEnum):
    """What a timeline step does (its key in the file)."""

    POWER_OFF = "power_off"  # cut the host's power: its VMs stop, its agent dies
    POWER_ON = "power_on"  # boot the host and start its agent again
    PARTITION = "partition"  # cut the host's agent off from the server (`bollard sim partition`)
    HEAL = "heal"  # lift the partition (`bollard sim heal`)
    KILL_AGENT = "kill_agent"  # SIGKILL the agent; the host and its VMs stay up
    RESTART_AGENT = "restart_agent"  # start the agent again (stopping it first if it runs)
    SHUTDOWN = "shutdown"  # clean power-off of the host (`bollard sim node shutdown`)
    REBOOT = "reboot"  # clean reboot; its agent is started again once the host is back
    START_FAILS = "start_fails"  # starts of every VM fail on a host (sim fault)
    START_WORKS = "start_works"  # clear that fault
    VM_START_FAILS = "vm_start_fails"  # starts of one VM fail (on every host, or on one)
    VM_START_WORKS = "vm_start_works"  # clear that fault
    MAINTENANCE_ON = "maintenance_on"  # `bollard node maintenance NODE on`
    MAINTENANCE_OFF = "maintenance_off"
    CRASH_VM = "crash_vm"  # the VM crashes on its host, behind Bollard's back
    RESTART_SERVER = "restart_server"  # stop the server and start it again
    SET = "set"  # change cluster settings
    SET_VM = "set_vm"  # change a VM's HA fields (ha_state, ha_group, max_restart, ...)
    MIGRATE = "migrate"  # migrate a VM (to a node, or where the scheduler says)
    WAIT = "wait"  # wait until a state holds (an expectation with its own deadline)


NODE_ACTIONS = frozenset(
    {
        Action.POWER_OFF,
        Action.POWER_ON,
        Action.PARTITION,
        Action.HEAL,
        Action.KILL_AGENT,
        Action.RESTART_AGENT,
        Action.SHUTDOWN,
        Action.REBOOT,
        Action.START_WORKS,
        Action.MAINTENANCE_ON,
        Action.MAINTENANCE_OFF,
    }
)


@dataclass(frozen=True)
class EventMatch:
    """An event of the server: its kind, and optionally its VM, node and words of its message."""

    kind: str
    vm: str | None
    node: str | None
    message: str | None
    line: int

    def matches(self, event: Mapping[str, Any]) -> bool:
        kind = str(event.get("kind") or "")
        if self.kind.endswith("*"):
            if not kind.startswith(self.kind[:-1]):
                return False
        elif kind != self.kind:
            return False
        if self.vm is not None and event.get("vm") != self.vm:
            return False
        if self.node is not None and event.get("node") != self.node:
            return False
        return self.message is None or self.message in str(event.get("message") or "")

    def __str__(self) -> str:
        parts = [self.kind]
        if self.vm is not None:
            parts.append(f"vm {self.vm}")
        if self.node is not None:
            parts.append(f"node {self.node}")
        if self.message is not None:
            parts.append(f"message ~ {self.message!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class VmExpect:
    name: str
    nodes: tuple[str, ...] | None  # where it must be (the server's owner), any of these
    state: str | None  # running | stopped (what the sim fabric and the server both say)
    fields: dict[str, Any]  # more fields of the API's VM: status, ha_state, fault, ...
    line: int


@dataclass(frozen=True)
class NodeExpect:
    name: str
    fields: dict[str, Any]  # health, scheduling, connected, maintenance, ...
    line: int


@dataclass(frozen=True)
class Expectation:
    """A state to reach within ``within`` seconds, and to keep for ``stable`` seconds."""

    within: float
    stable: float
    vms: tuple[VmExpect, ...] = ()
    nodes: tuple[NodeExpect, ...] = ()
    together: tuple[tuple[str, ...], ...] = ()  # each set runs on one node
    apart: tuple[tuple[str, ...], ...] = ()  # no two of each set run on one node
    events: tuple[EventMatch, ...] = ()  # each happened since the timeline began
    no_events: tuple[EventMatch, ...] = ()  # none of these happened
    line: int = 0


@dataclass(frozen=True)
class Step:
    at: float | None  # seconds after the timeline began; None: right after the step before
    action: Action
    node: str | None = None
    vm: str | None = None
    times: int = 0  # (vm_)start_fails: how many starts fail (0: until (vm_)start_works)
    values: dict[str, Any] = field(default_factory=dict)  # set: settings; set_vm: fields
    wait: Expectation | None = None
    line: int = 0

    def describe(self) -> str:
        what = self.action.value.replace("_", " ")
        times = "until cleared" if self.times == 0 else f"{self.times} time(s)"
        where = f"on {self.node}" if self.node else "on every host"
        if self.action is Action.START_FAILS:
            return f"starts fail on {self.node} ({times})"
        if self.action is Action.VM_START_FAILS:
            return f"starts of {self.vm} fail {where} ({times})"
        if self.action is Action.START_WORKS:
            return f"starts work again on {self.node}"
        if self.action is Action.VM_START_WORKS:
            return f"starts of {self.vm} work again {where}"
        if self.action is Action.SET:
            return "set " + _pairs(self.values)
        if self.action is Action.SET_VM:
            return f"set {self.vm}: " + _pairs(self.values)
        if self.action is Action.MIGRATE:
            to = self.node or "(scheduler's choice)"
            return f"migrate {self.vm} to {to}"
        if self.action is Action.CRASH_VM:
            return f"{self.vm} crashes"
        if self.action is Action.WAIT:
            return "wait"
        return f"{what} {self.node}" if self.node else what


@dataclass(frozen=True)
class Never:
    """The must-never checks that name VMs (the others always run: a VM on two hosts, a disk
    opened by two hosts, a recovery before its node's fence, a strict apart rule broken)."""

    running: tuple[str, ...] = ()  # never seen running, anywhere
    moved: tuple[str, ...] = ()  # never seen running on a node other than its first


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    file: str
    cluster: ClusterSpec
    timeline: tuple[Step, ...]
    expect: Expectation
    never: Never

    def strict_apart(self) -> list[RuleSpec]:
        return [r for r in self.cluster.rules if r.kind == "apart" and r.strict]


def _pairs(values: Mapping[str, Any]) -> str:
    """key=value, ..., each value as the file would say it (true, 1.5, text)."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
