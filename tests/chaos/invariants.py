"""What must hold once the faults stop and the cluster has settled, checked against the sim
fabric (the ground truth of what the "hosts" run):

1. every command is in a terminal state (and every task has ended);
2. every VM's record agrees with the fabric, and every fabric VM has a record;
3. no command was executed twice (command ids in the hosts' execution logs are unique);
4. no VM is present on two hosts (a stopped stale copy on a powered-off or out-of-service
   node, which it destroys when it rejoins, aside; two running copies never);
5. each node's allocated resources are the sum of the VMs recorded on it;
6. a node in service (health up) has its host powered on.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bollard.domain.commands import TERMINAL, CommandState
from bollard.domain.states import TaskStatus
from bollard.sim.fabric import Fabric
from bollard.sim.models import ExecutedOp, SimHostRecord, SimVm
from tests.chaos.cluster import Api

NON_TERMINAL = sorted(s.value for s in CommandState if s not in TERMINAL)
_STOPPED = ("stopped", "crashed")
_RUNNING = ("running", "paused")


@dataclass
class Snapshot:
    vms: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    open_commands: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    fabric: dict[str, list[SimVm]]  # node -> VMs defined there
    executed: dict[str, list[ExecutedOp]]  # node -> operations performed there
    host_power: dict[str, str | None]  # node -> its host's power (None: no host record)

    @classmethod
    def take(cls, api: Api, fabric_dir: Path) -> Snapshot:
        hosts = Fabric(fabric_dir).hosts()
        return cls(
            vms=api.list_all("/vms"),
            nodes=api.list_all("/nodes"),
            open_commands=api.list_all("/commands", state=",".join(NON_TERMINAL)),
            tasks=api.list_all("/tasks"),
            fabric={h.node: h.list_vms() for h in hosts},
            executed={h.node: h.executed() for h in hosts},
            host_power={h.node: _power(h.record()) for h in hosts},
        )

    def pending_cleanup(self, node: str, vm: SimVm) -> bool:
        """A stopped copy on a host that is powered off, or on a node out of service (dead,
        fenced, ...): a stale copy its node destroys when it rejoins, not a second VM."""
        if vm.power.value in _RUNNING:
            return False
        health = next((n.get("health", "up") for n in self.nodes if n["name"] == node), None)
        return self.host_power.get(node) != "on" or health != "up"

    def copies(self) -> dict[str, list[tuple[str, SimVm]]]:
        """uuid -> [(node, fabric VM)] for every VM defined somewhere in the fabric."""
        found: dict[str, list[tuple[str, SimVm]]] = defaultdict(list)
        for node, vms in self.fabric.items():
            for vm in vms:
                found[vm.uuid].append((node, vm))
        return found


@dataclass
class Violation:
    invariant: str
    offenders: list[str] = field(default_factory=list)
    vm_uuids: set[str] = field(default_factory=set)  # VMs worth a closer look
    command_ids: set[str] = field(default_factory=set)

    def __str__(self) -> str:
        lines = "\n".join(f"    - {o}" for o in self.offenders)
        return f"  {self.invariant}: {len(self.offenders)} offender(s)\n{lines}"


def _power(record: SimHostRecord | None) -> str | None:
    return None if record is None else record.power.value


def _vm_line(vm: dict[str, Any]) -> str:
    return (
        f"{vm['name']} ({vm['uuid']}) on {vm['node']}: vm_state={vm['vm_state']} "
        f"task_state={vm['task_state']} observed_power={vm['observed_power']} "
        f"desired={vm['desired_power']} fault={vm['fault']!r}"
    )


def check_commands_terminal(snap: Snapshot) -> Violation:
    v = Violation("1. commands in a non-terminal state")
    for c in snap.open_commands:
        v.offenders.append(
            f"command {c['id']} {c['type']} on {c['node']} vm={c['vm_uuid']}: state={c['state']}"
            f" agent_state={c['agent_state']} attempts={c['attempts']}"
        )
        v.command_ids.add(c["id"])
        if c["vm_uuid"]:
            v.vm_uuids.add(c["vm_uuid"])
    return v


def check_tasks_ended(snap: Snapshot) -> Violation:
    v = Violation("1b. tasks that never ended")
    for t in snap.tasks:
        if not TaskStatus(t["state"]).ended:
            v.offenders.append(f"task {t['id']} {t['type']} {t['vm']} on {t['node']}: {t['state']}")
            if t["vm_uuid"]:
                v.vm_uuids.add(t["vm_uuid"])
    return v


def check_records_match_fabric(snap: Snapshot) -> Violation:
    v = Violation("2. VM records that differ from the fabric")
    copies = snap.copies()
    recorded = {vm["uuid"] for vm in snap.vms}

    def bad(vm: dict[str, Any], why: str) -> None:
        v.offenders.append(f"{_vm_line(vm)}: {why}")
        v.vm_uuids.add(vm["uuid"])

    for vm in snap.vms:
        where = copies.get(vm["uuid"], [])
        here = next((fvm for node, fvm in where if node == vm["node"]), None)
        elsewhere = [
            (node, fvm.power.value)
            for node, fvm in where
            if node != vm["node"] and not snap.pending_cleanup(node, fvm)
        ]
        if elsewhere:
            bad(vm, f"also defined on other node(s) {elsewhere}")
        power = here.power.value if here is not None else None
        state = vm["vm_state"]
        if vm["task_state"] is not None or vm["task_id"] is not None:
            bad(vm, f"still held by task {vm['task_id']} after the cluster settled")
        elif state == "active":
            if power != "running":
                bad(vm, f"recorded active but the fabric has it {power or 'absent'}")
        elif state == "stopped":
            if power not in _STOPPED:
                bad(vm, f"recorded stopped but the fabric has it {power or 'absent'}")
        elif state != "error":
            bad(vm, f"vm_state {state} with no task: stuck (fabric has it {power or 'absent'})")
        # Whatever the state, what the host reported is what the host has (reports since
        # the cluster settled have brought every record up to date, see _stale_reports).
        if vm["observed_power"] != (power or "absent"):
            bad(vm, f"observed_power {vm['observed_power']} but the fabric has {power or 'absent'}")
    for uuid, where in sorted(copies.items()):
        if uuid not in recorded:
            for node, fvm in where:
                if snap.pending_cleanup(node, fvm):
                    continue
                v.offenders.append(
                    f"orphan: {fvm.name} ({uuid}) {fvm.power.value} on {node} has no record"
                )
                v.vm_uuids.add(uuid)
    return v


def check_executed_once(snap: Snapshot) -> Violation:
    """Each operation of a command on each thing ran once: a command may act on several
    things (a DEFINE makes each of its disks' volumes), never on one thing twice."""
    v = Violation("3. commands executed more than once")
    seen: dict[tuple[str, str, str | None], list[str]] = defaultdict(list)
    for node, ops in snap.executed.items():
        for op in ops:
            if op.command_id is not None:
                key = (op.command_id, op.command, op.vm_uuid)
                seen[key].append(f"{op.command} {op.vm_uuid} on {node} at {op.at:.3f}")
    for (cid, _op, _subject), runs in sorted(seen.items(), key=lambda kv: str(kv[0])):
        if len(runs) > 1:
            v.offenders.append(f"command {cid} executed {len(runs)} times: {runs}")
            v.command_ids.add(cid)
    return v


def check_single_host(snap: Snapshot) -> Violation:
    v = Violation("4. VMs present on more than one host")
    for uuid, where in sorted(snap.copies().items()):
        running = [n for n, f in where if f.power.value in _RUNNING]
        live = [n for n, f in where if not snap.pending_cleanup(n, f)]
        if len(running) > 1 or len(live) > 1:
            v.offenders.append(
                f"{where[0][1].name} ({uuid}) on {[(n, f.power.value) for n, f in where]}"
            )
            v.vm_uuids.add(uuid)
    return v


def check_nodes_up_are_on(snap: Snapshot) -> Violation:
    v = Violation("6. nodes in service (health up) whose host is powered off")
    for node in snap.nodes:
        power = snap.host_power.get(node["name"])
        if node.get("health", "up") == "up" and power != "on":
            v.offenders.append(
                f"{node['name']}: health up, connected={node['connected']}, but its host is "
                f"{power or 'missing'} in the fabric"
            )
    return v


def check_capacity(snap: Snapshot) -> Violation:
    v = Violation("5. node allocations that differ from the VMs recorded on them")
    used: dict[str, Counter[str]] = defaultdict(Counter)
    for vm in snap.vms:
        if vm["node"]:
            used[vm["node"]]["vcpus"] += vm["vcpus"]
            used[vm["node"]]["memory_mb"] += vm["memory_mb"]
    for node in snap.nodes:
        allocated = node["allocated"]
        want = used[node["name"]]
        if (allocated["vcpus"], allocated["memory_mb"]) != (want["vcpus"], want["memory_mb"]):
            v.offenders.append(
                f"{node['name']}: allocated {allocated} but its VMs use {dict(want) or 0}"
            )
    return v


CHECKS = (
    check_commands_terminal,
    check_tasks_ended,
    check_records_match_fabric,
    check_executed_once,
    check_single_host,
    check_capacity,
    check_nodes_up_are_on,
)


def violations(snap: Snapshot) -> list[Violation]:
    return [v for v in (check(snap) for check in CHECKS) if v.offenders]
