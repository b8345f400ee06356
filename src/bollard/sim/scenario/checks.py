"""Checks of a scenario against what the server and the sim fabric say (pure functions).

``misses`` compares an expectation with one look at the world (the server's VMs, nodes and
events, the fabric's running VMs) and says what does not match yet. ``FenceOrder`` reads the
server's events in order and finds a VM recovered on another node before its old node's
fence was confirmed (``node.fenced``) or confirmed down by an operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bollard.sim.scenario.model import Expectation, VmExpect
from bollard.sim.scenario.watch import Violation

__all__ = ["FenceOrder", "World", "misses"]

_FROM_FENCED = re.compile(r"\(from fenced ([^)\s]+)\)")
PROOF_OF_OFF = frozenset({"node.fenced", "node.confirmed_down"})


@dataclass(frozen=True)
class World:
    """One look at the cluster."""

    vms: Mapping[str, Mapping[str, Any]]  # the server's VMs by name (as GET /vms gives them)
    nodes: Mapping[str, Mapping[str, Any]]  # the server's nodes by name
    running: Mapping[str, list[str]]  # VM name -> the sim hosts it runs on
    events: Sequence[Mapping[str, Any]]  # the server's events since the timeline began


def misses(expect: Expectation, world: World) -> list[str]:
    """What of ``expect`` does not hold in ``world`` (empty: all of it holds)."""
    found: list[str] = []
    for vm in expect.vms:
        found += _vm_misses(vm, world)
    for node in expect.nodes:
        got = world.nodes.get(node.name)
        if got is None:
            found.append(f"node {node.name}: the server does not list it")
            continue
        for key, want in node.fields.items():
            if key not in got:
                found.append(f"node {node.name}: the server's node has no field {key!r}")
            elif got[key] != want:
                found.append(
                    f"node {node.name}: {key} is {_shown(got[key])}, expected {_shown(want)}"
                )
    for names in expect.together:
        hosts = {n: world.running.get(n, []) for n in names}
        where = {h for hs in hosts.values() for h in hs}
        if any(len(hs) != 1 for hs in hosts.values()) or len(where) != 1:
            found.append(
                f"together {', '.join(names)}: expected all running on one node, "
                f"they run on {_placement(hosts)}"
            )
    for names in expect.apart:
        hosts = {n: world.running.get(n, []) for n in names}
        seen: dict[str, str] = {}
        clash = []
        for name in names:
            for host in hosts[name]:
                if host in seen:
                    clash.append(f"{seen[host]} and {name} on {host}")
                seen.setdefault(host, name)
        if clash:
            found.append(f"apart {', '.join(names)}: {'; '.join(clash)}")
    for match in expect.events:
        if not any(match.matches(e) for e in world.events):
            found.append(f"no event {match} happened")
    for match in expect.no_events:
        hits = [e for e in world.events if match.matches(e)]
        if hits:
            found.append(f"event {match} happened: {_event_line(hits[0])}")
    return found


def _vm_misses(vm: VmExpect, world: World) -> list[str]:
    got = world.vms.get(vm.name)
    if got is None:
        return [f"vm {vm.name}: the server does not list it"]
    found: list[str] = []
    owner = got.get("node")
    hosts = world.running.get(vm.name, [])
    if vm.nodes is not None and owner not in vm.nodes:
        found.append(f"vm {vm.name}: its node is {_shown(owner)}, expected {' or '.join(vm.nodes)}")
    if vm.state == "running":
        if hosts != [owner]:
            found.append(
                f"vm {vm.name}: expected running on {owner} (its node), the sim "
                f"hosts run it on {_hosts(hosts)}"
            )
        elif "status" not in vm.fields and got.get("status") != "ACTIVE":
            found.append(f"vm {vm.name}: status {_shown(got.get('status'))}, expected ACTIVE")
    elif vm.state == "stopped":
        if hosts:
            found.append(f"vm {vm.name}: expected stopped, it runs on {_hosts(hosts)}")
        elif got.get("observed_power") == "running":
            found.append(f"vm {vm.name}: expected stopped, the server says it runs")
    for key, want in vm.fields.items():
        if key not in got:
            found.append(f"vm {vm.name}: the server's VM has no field {key!r}")
            continue
        have = got[key]
        if key == "fault" and isinstance(want, str):
            if not isinstance(have, str) or want not in have:
                found.append(f"vm {vm.name}: fault is {_shown(have)}, expected one with {want!r}")
        elif have != want:
            found.append(f"vm {vm.name}: {key} is {_shown(have)}, expected {_shown(want)}")
    return found


def _shown(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _hosts(hosts: Iterable[str]) -> str:
    listed = ", ".join(sorted(hosts))
    return listed or "no host"


def _placement(hosts: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{name} on {_hosts(h)}" for name, h in hosts.items())


def _event_line(event: Mapping[str, Any]) -> str:
    return f"#{event.get('id')} {event.get('kind')}: {event.get('message')}"


class FenceOrder:
    """Reads the events in order: a VM recovered from a node (``vm.recovered``) must come
    after that node's fence was confirmed (``node.fenced``, or ``node.confirmed_down`` by an
    operator), with no ``node.up`` of that node in between."""

    def __init__(self, last_host: Callable[[str], str | None]) -> None:
        self._last_host = last_host  # VM uuid -> where the fabric last saw it running
        self._off: dict[str, int] = {}  # node -> id of the event proving it off, while it is

    def feed(self, event: Mapping[str, Any]) -> Violation | None:
        kind = str(event.get("kind") or "")
        node = event.get("node")
        if kind in PROOF_OF_OFF and isinstance(node, str):
            self._off[node] = int(event.get("id") or 0)
        elif kind == "node.up" and isinstance(node, str):
            self._off.pop(node, None)
        elif kind == "vm.recovered":
            return self._check(event)
        return None

    def _check(self, event: Mapping[str, Any]) -> Violation | None:
        message = str(event.get("message") or "")
        named = _FROM_FENCED.search(message)
        uuid = str(event.get("vm_uuid") or "")
        source = named.group(1) if named else self._last_host(uuid)
        vm = str(event.get("vm") or uuid)
        if source is None:
            return None  # nowhere known to have run: nothing it could run twice on
        if source in self._off:
            return None
        return Violation(
            "recovery_before_fence",
            vm,
            f"{vm} was recovered on {event.get('node')} (event #{event.get('id')}) before its "
            f"old node {source} was fenced or confirmed down",
        )
