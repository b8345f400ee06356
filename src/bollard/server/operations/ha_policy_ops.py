"""HA groups and affinity rules (domain/ha.py): create, change and delete them, each in one
transaction with its event (`ha.group.created|changed|deleted`, `ha.rule.created|changed|
deleted`), which names the actor of the call (domain/actors.py) as every event does.

What a group or a rule means for placement is the scheduler's (server/scheduling.py); here
only what may be stored: a group names its nodes with priorities (a node not enrolled yet may
be named, as in Proxmox), a rule names VMs that exist (422 naming the others). A group VMs are
in is not deleted (409 naming them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.ha import (
    SETTABLE_STATES,
    AffinityKind,
    AffinityRule,
    HaGroup,
    HaHold,
    HaState,
    format_group_nodes,
)
from bollard.domain.operations import SHUTDOWN, START, PowerOp
from bollard.domain.states import DesiredPower
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.store import affinity, events, ha_groups, vms

_SHOWN = 10  # names a refusal lists at most


@dataclass(frozen=True)
class GroupChange:
    """What a change of a group sets (None: unchanged)."""

    nodes: Mapping[str, int] | None = None
    restricted: bool | None = None
    nofailback: bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class RuleChange:
    """What a change of a rule sets (None: unchanged)."""

    kind: AffinityKind | None = None
    strict: bool | None = None
    vms: Sequence[str] | None = None
    description: str | None = None


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def vm_uuids(conn: Connection, names: Sequence[str], what: str) -> list[str]:
    """The uuids of the VMs named (in the order given, each once); InvalidInput naming
    every name that is no VM."""
    found: list[str] = []
    unknown: list[str] = []
    for name in dict.fromkeys(names):
        try:
            found.append(vms.get(conn, name).uuid)
        except NotFound:
            unknown.append(name)
    if unknown:
        raise InvalidInput(
            f"{what}: no VM named {_listed(unknown)} (`bollard vm list` shows the VMs)"
        )
    return found


def _check_rule_size(vm_names: Sequence[str]) -> None:
    if len(set(vm_names)) < 2:
        raise InvalidInput("vms: a rule holds at least 2 different VMs")


def _group_text(group: HaGroup) -> str:
    flags = [f for f, on in (("restricted", group.restricted), ("nofailback", group.nofailback))
             if on]  # fmt: skip
    return format_group_nodes(group.nodes) + (f" ({', '.join(flags)})" if flags else "")


def _rule_text(rule: AffinityRule) -> str:
    strict = "strict" if rule.strict else "non-strict"
    return f"{strict} {rule.kind.value}: {', '.join(rule.vms)}"


class HaPolicyOperations:
    def __init__(self, *, work: UnitOfWork, clock: Clock) -> None:
        self._work = work
        self._clock = clock

    # --- groups --------------------------------------------------------------------------

    async def create_group(
        self, name: str, nodes: Mapping[str, int], *, restricted: bool = False,
        nofailback: bool = False, description: str = "",
    ) -> HaGroup:  # fmt: skip
        if not nodes:
            raise InvalidInput("nodes: give at least one node")

        def tx() -> HaGroup:
            with self._work.write() as conn:
                now = self._clock.now()
                group = ha_groups.create(
                    conn, name=name, nodes=dict(nodes), restricted=restricted,
                    nofailback=nofailback, description=description, now=now,
                )  # fmt: skip
                events.add(
                    conn, "ha.group.created", f"HA group {name} created: {_group_text(group)}",
                    now, data={"group": name, "nodes": dict(group.nodes),
                               "restricted": restricted, "nofailback": nofailback},
                )  # fmt: skip
                return group

        return await self._work.run(tx)

    async def change_group(self, name: str, change: GroupChange) -> HaGroup:
        values: dict[str, Any] = {
            k: v
            for k, v in (
                ("restricted", change.restricted),
                ("nofailback", change.nofailback),
                ("description", change.description),
            )
            if v is not None
        }
        if change.nodes is not None and not change.nodes:
            raise InvalidInput("nodes: give at least one node")

        def tx() -> HaGroup:
            with self._work.write() as conn:
                before = ha_groups.get(conn, name)
                if change.nodes is None and not values:
                    return before
                now = self._clock.now()
                nodes = None if change.nodes is None else dict(change.nodes)
                group = ha_groups.change(conn, name, now, nodes=nodes, **values)
                events.add(
                    conn, "ha.group.changed", f"HA group {name} changed: {_group_text(group)}",
                    now, data={"group": name, "changed": sorted(
                        [*values, *(["nodes"] if nodes is not None else [])]
                    )},
                )  # fmt: skip
                return group

        return await self._work.run(tx)

    async def delete_group(self, name: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                ha_groups.remove(conn, name)  # Conflict (409) naming its VMs
                events.add(conn, "ha.group.deleted", f"HA group {name} deleted",
                           self._clock.now(), data={"group": name})  # fmt: skip

        await self._work.run(tx)

    # --- affinity rules ------------------------------------------------------------------

    async def create_rule(
        self, name: str, kind: AffinityKind, vm_names: Sequence[str], *, strict: bool = False,
        description: str = "",
    ) -> AffinityRule:  # fmt: skip
        _check_rule_size(vm_names)

        def tx() -> AffinityRule:
            with self._work.write() as conn:
                uuids = vm_uuids(conn, vm_names, "vms")
                now = self._clock.now()
                rule = affinity.create(
                    conn, name=name, kind=kind, strict=strict, vm_uuids=uuids,
                    description=description, now=now,
                )  # fmt: skip
                events.add(
                    conn, "ha.rule.created", f"affinity rule {name} created: {_rule_text(rule)}",
                    now, data={"rule": name, "kind": kind.value, "strict": strict,
                               "vms": list(rule.vms)},
                )  # fmt: skip
                return rule

        return await self._work.run(tx)

    async def change_rule(self, name: str, change: RuleChange) -> AffinityRule:
        values: dict[str, Any] = {
            k: v
            for k, v in (
                ("kind", change.kind),
                ("strict", change.strict),
                ("description", change.description),
            )
            if v is not None
        }
        if change.vms is not None:
            _check_rule_size(change.vms)

        def tx() -> AffinityRule:
            with self._work.write() as conn:
                before = affinity.get(conn, name)
                uuids = None if change.vms is None else vm_uuids(conn, change.vms, "vms")
                if uuids is None and not values:
                    return before
                now = self._clock.now()
                rule = affinity.change(conn, name, now, vm_uuids=uuids, **values)
                events.add(
                    conn, "ha.rule.changed", f"affinity rule {name} changed: {_rule_text(rule)}",
                    now, data={"rule": name, "changed": sorted(
                        [*values, *(["vms"] if uuids is not None else [])]
                    )},
                )  # fmt: skip
                return rule

        return await self._work.run(tx)

    async def delete_rule(self, name: str) -> None:
        def tx() -> None:
            with self._work.write() as conn:
                affinity.remove(conn, name)
                events.add(conn, "ha.rule.deleted", f"affinity rule {name} deleted",
                           self._clock.now(), data={"rule": name})  # fmt: skip

        await self._work.run(tx)


# --- a VM's HA request state (PATCH /api/v1/vms/{name}: vm_ops.set_meta) -------------------


@dataclass(frozen=True)
class HaStateColumns:
    """What setting a VM's HA request state writes: its `ha` policy (None: unchanged) and
    its hold (None: cleared, with its restart and relocate counts)."""

    ha: str | None
    hold: HaHold | None


def ha_state_columns(state: str, ha: str | None) -> HaStateColumns:
    """The columns for request state `state` (started, stopped, disabled, ignored), with the
    `ha` policy given in the same request (InvalidInput if the two disagree)."""
    try:
        wanted = HaState(state)
    except ValueError:
        raise InvalidInput(f"ha_state: {state!r} is not one of started, stopped, disabled, "
                           "ignored") from None  # fmt: skip
    if wanted not in SETTABLE_STATES:
        raise InvalidInput("ha_state: error is set by Bollard only (set another state to clear it)")
    if wanted is HaState.IGNORED:
        return HaStateColumns(ha=ha, hold=HaHold.IGNORED)
    policy = "none" if wanted is HaState.DISABLED else "restart"
    if ha is not None and ha != policy:
        raise InvalidInput(f"ha_state {wanted.value} means ha {policy}, not ha {ha}: give one")
    return HaStateColumns(ha=policy, hold=None)


def ha_state_power(state: str | None, desired: DesiredPower) -> PowerOp | None:
    """The power operation a request state asks of a VM meant to be `desired`: started
    starts a stopped one, stopped shuts a running one down; None otherwise."""
    if state == HaState.STARTED and desired is DesiredPower.STOPPED:
        return START
    if state == HaState.STOPPED and desired is DesiredPower.RUNNING:
        return SHUTDOWN
    return None


def check_group(conn: Connection, name: str | None) -> None:
    """A VM's `ha_group` names a group that exists (InvalidInput naming it otherwise)."""
    if name and ha_groups.find(conn, name) is None:
        raise InvalidInput(
            f"ha_group: no HA group named {name!r} (`bollard ha group list` shows them)"
        )
