"""What a VM's HA group and affinity rules ask of its placement, gathered for the scheduler
(``domain/placement_rules.py`` weighs them).

``policy_of`` reads the VM's group (nodes, priorities, restricted, nofailback) and the rules
it is in, with where each other VM of those rules is: its node, and the destination of a
migration, HA restart or resize of it under way (an open record of ``migrations`` with a
destination).

Two placements of VMs of one rule must not both pass on facts the other is about to change
(two VMs kept apart both sent to the one free node). So ``policy_of`` first locks the VM's
rule rows (``SELECT ... ORDER BY name FOR NO KEY UPDATE`` on PostgreSQL: a second placement
of a VM of the same rule waits there until the first commits, and every statement after the
wait sees what the first wrote; rows locked in name order, so two placements never wait on
each other; NO KEY UPDATE so the foreign-key checks of rule membership changes are not
blocked). The placing transaction writes the VM's new position (its node, or a migration
record with its destination) before it commits. SQLite runs one writer at a time already.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select

from bollard.domain.ha import HaGroup
from bollard.domain.migrations import MigrationStatus
from bollard.domain.models import Vm
from bollard.domain.placement_rules import Partner, PlacementPolicy, RuleFacts
from bollard.store import affinity, ha_groups, vms
from bollard.store.tables import affinity_rule_vms, affinity_rules, migrations

_OPEN = [s.value for s in MigrationStatus if not s.ended]


def lock_rules(conn: Connection, vm_uuid: str) -> list[str]:
    """Lock the rows of the rules the VM is in (PostgreSQL; nothing to do on SQLite) until the
    transaction ends; their names."""
    names = select(affinity_rule_vms.c.rule).where(affinity_rule_vms.c.vm_uuid == vm_uuid)
    query = (
        select(affinity_rules.c.name)
        .where(affinity_rules.c.name.in_(names.scalar_subquery()))
        .order_by(affinity_rules.c.name)
        .with_for_update(key_share=True)
    )
    return list(conn.execute(query).scalars())


def destinations(conn: Connection, vm_uuids: Iterable[str]) -> dict[str, str]:
    """The destination of each of these VMs that a migration, HA restart or resize is moving
    (its newest open record with a destination), by VM uuid."""
    uuids = sorted(set(vm_uuids))
    if not uuids:
        return {}
    rows = conn.execute(
        select(migrations.c.vm_uuid, migrations.c.dest)
        .where(
            migrations.c.vm_uuid.in_(uuids),
            migrations.c.status.in_(_OPEN),
            migrations.c.dest.is_not(None),
        )
        .order_by(migrations.c.created_at, migrations.c.id)
    )
    return {uuid: dest for uuid, dest in rows}


def group_of(conn: Connection, name: str | None) -> HaGroup | None:
    return ha_groups.find(conn, name) if name else None


def policy_of(
    conn: Connection, vm: Vm, *, lock: bool = True, group: HaGroup | None = None
) -> PlacementPolicy:
    """The VM's group (``group`` when given, else its own) and its rules with where their
    other VMs are. ``lock``: lock the rules first (see the module's text) — every placement
    that writes; a look that moves nothing (candidates) passes False."""
    if lock:
        lock_rules(conn, vm.uuid)
    rules = affinity.rules_of(conn, vm.uuid)
    others = sorted({u for r in rules for u in r.vm_uuids if u != vm.uuid})
    found = vms.find_many(conn, others)
    moving = destinations(conn, others)
    facts = []
    for rule in rules:
        partners = tuple(
            Partner(name=found[u].name, node=found[u].node, moving_to=moving.get(u))
            for u in rule.vm_uuids
            if u != vm.uuid and u in found
        )
        facts.append(
            RuleFacts(name=rule.name, kind=rule.kind, strict=rule.strict, partners=partners)
        )
    return PlacementPolicy(group=group or group_of(conn, vm.ha_group), rules=tuple(facts))
