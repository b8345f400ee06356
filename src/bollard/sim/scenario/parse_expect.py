"""Parsing the expectations of a scenario file (``expect`` and ``wait`` steps), and the
checks of the names a file uses against those its cluster declares (see parse.py)."""

from __future__ import annotations

from typing import Any

from yaml.nodes import Node

from bollard.sim.scenario.model import (
    DEFAULT_WITHIN,
    EventMatch,
    Expectation,
    NodeExpect,
    VmExpect,
)
from bollard.sim.scenario.yaml_read import Doc

MAX_SECONDS = 3600.0
HA_STATES = ("started", "stopped", "disabled", "ignored")
STATUSES = ("ACTIVE", "SHUTOFF", "ERROR", "BUILD", "MIGRATING", "PAUSED", "UNKNOWN")
HEALTHS = ("up", "suspect", "dead", "fencing", "fenced", "fence_failed")
SCHEDULING = ("ready", "flushing", "flushed", "unflushing", "maintenance")


class ExpectParser:
    """The names the cluster declares, and the readers of expectations that use them."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.nodes: set[str] = set()
        self.vms: set[str] = set()

    def _check(self, names: set[str], name: str, node: Node, what: str, kind: str) -> str:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise self.doc.error(node, f"{what}: no {kind} {name!r} in the cluster ({known})")
        return name

    def node_ref(self, node: Node, what: str) -> str:
        return self._check(self.nodes, self.doc.name(node, what), node, what, "node")

    def vm_ref(self, node: Node, what: str) -> str:
        return self._check(self.vms, self.doc.name(node, what), node, what, "VM")

    # -- expectations ----------------------------------------------------------------------

    def expectation(self, node: Node, what: str) -> Expectation:
        d = self.doc
        f = d.fields(
            node,
            what,
            optional=(
                "within",
                "stable",
                "vms",
                "nodes",
                "together",
                "apart",
                "events",
                "no_events",
            ),
        )
        within = (
            d.number(f["within"], f"{what} within (seconds)", low=0, high=MAX_SECONDS)
            if ("within" in f)
            else DEFAULT_WITHIN
        )
        stable = (
            d.number(f["stable"], f"{what} stable (seconds)", low=0, high=MAX_SECONDS)
            if ("stable" in f)
            else 0.0
        )
        vms = tuple(
            self.vm_expect(name, value, f"{what} vm {name}")
            for name, value in (d.mapping(f["vms"], f"{what} vms").items() if "vms" in f else [])
        )
        nodes = tuple(
            self.node_expect(name, value, f"{what} node {name}")
            for name, value in (
                d.mapping(f["nodes"], f"{what} nodes").items() if "nodes" in f else []
            )
        )
        together = self.vm_sets(f.get("together"), f"{what} together")
        apart = self.vm_sets(f.get("apart"), f"{what} apart")
        events = self.event_matches(f.get("events"), f"{what} events")
        no_events = self.event_matches(f.get("no_events"), f"{what} no_events")
        if not (vms or nodes or together or apart or events or no_events):
            raise d.error(
                node,
                f"{what}: expected at least one of vms, nodes, together, apart, events, no_events",
            )
        return Expectation(
            within, stable, vms, nodes, together, apart, events, no_events, d.where(node).line
        )

    def vm_expect(self, name: str, node: Node, what: str) -> VmExpect:
        d = self.doc
        self._check(self.vms, name, node, what, "VM")
        f = d.fields(
            node,
            what,
            optional=(
                "node",
                "state",
                "status",
                "ha_state",
                "ha_group",
                "fault",
                "ha_restarts",
                "ha_relocates",
                "epoch",
            ),
        )
        nodes = (
            tuple(self.node_ref(n, f"{what} node") for _, n in d.names(f["node"], what))
            if ("node" in f)
            else None
        )
        state = (
            d.choice(f["state"], f"{what} state", ("running", "stopped"))
            if ("state" in f)
            else None
        )
        fields: dict[str, Any] = {}
        if "status" in f:
            fields["status"] = d.choice(f["status"], f"{what} status", STATUSES)
        if "ha_state" in f:
            fields["ha_state"] = d.choice(f["ha_state"], f"{what} ha_state", (*HA_STATES, "error"))
        if "ha_group" in f:
            fields["ha_group"] = self._optional(f["ha_group"], f"{what} ha_group")
        if "fault" in f:
            fields["fault"] = self._optional(f["fault"], f"{what} fault")
        for key in ("ha_restarts", "ha_relocates", "epoch"):
            if key in f:
                fields[key] = d.integer(f[key], f"{what} {key}", low=0, high=1_000_000)
        if nodes is None and state is None and not fields:
            raise d.error(
                node,
                f"{what}: expected at least one of node, state, status, "
                "ha_state, ha_group, fault, ha_restarts, ha_relocates, epoch",
            )
        return VmExpect(name, nodes, state, fields, d.where(node).line)

    def _optional(self, node: Node, what: str) -> str | None:
        """Text, or null (``~``) for "none"."""
        value = self.doc.scalar(node, what)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.doc.error(node, f"{what}: expected text or null (~)")
        return value

    def node_expect(self, name: str, node: Node, what: str) -> NodeExpect:
        d = self.doc
        self._check(self.nodes, name, node, what, "node")
        f = d.fields(
            node,
            what,
            optional=("health", "scheduling", "connected", "maintenance", "shutdown_kind"),
        )
        fields: dict[str, Any] = {}
        if "health" in f:
            fields["health"] = d.choice(f["health"], f"{what} health", HEALTHS)
        if "scheduling" in f:
            fields["scheduling"] = d.choice(f["scheduling"], f"{what} scheduling", SCHEDULING)
        for key in ("connected", "maintenance"):
            if key in f:
                fields[key] = d.boolean(f[key], f"{what} {key}")
        if "shutdown_kind" in f:
            kind = self._optional(f["shutdown_kind"], f"{what} shutdown_kind")
            if kind not in (None, "poweroff", "reboot"):
                raise d.error(
                    f["shutdown_kind"],
                    f"{what} shutdown_kind: expected poweroff, reboot or null (~)",
                )
            fields["shutdown_kind"] = kind
        if not fields:
            raise d.error(
                node,
                f"{what}: expected at least one of health, scheduling, "
                "connected, maintenance, shutdown_kind",
            )
        return NodeExpect(name, fields, d.where(node).line)

    def vm_sets(self, node: Node | None, what: str) -> tuple[tuple[str, ...], ...]:
        if node is None:
            return ()
        d = self.doc
        sets = []
        for i, item in d.items(node, f"{what} (a list of lists of VMs)"):
            names = [self.vm_ref(n, f"{what} {i}") for n in d.sequence(item, f"{what} {i}")]
            if len(set(names)) < 2:
                raise d.error(item, f"{what} {i}: expected at least two different VMs")
            sets.append(tuple(names))
        return tuple(sets)

    def event_matches(self, node: Node | None, what: str) -> tuple[EventMatch, ...]:
        if node is None:
            return ()
        d = self.doc
        found = []
        for i, item in d.items(node, what):
            f = d.fields(
                item, f"{what} {i}", required=("kind",), optional=("vm", "node", "message")
            )
            kind = d.text(f["kind"], f"{what} {i} kind")
            vm = self.vm_ref(f["vm"], f"{what} {i} vm") if "vm" in f else None
            on = self.node_ref(f["node"], f"{what} {i} node") if "node" in f else None
            message = d.text(f["message"], f"{what} {i} message") if "message" in f else None
            found.append(EventMatch(kind, vm, on, message, d.where(item).line))
        return tuple(found)
