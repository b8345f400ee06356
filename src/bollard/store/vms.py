"""Queries on VMs. vm_state and task_state change only through transition(), checked
against their whitelisted tables (domain/vms.py) and made as a compare-and-swap on the
states read and the task that holds the VM, so two operations never both own a VM."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import CompileError, IntegrityError

from bollard.domain.drift import VmView
from bollard.domain.errors import AlreadyExists, Conflict, NotFound
from bollard.domain.flavors import FlavorRef
from bollard.domain.models import Nic, Page, Vm, ha_policy, nic_args
from bollard.domain.states import DesiredPower, PowerState, TaskState, VmState
from bollard.domain.vms import VmStates, allowed
from bollard.store import macs, pagination, vm_moves, volumes
from bollard.store.db import raw_rows, raw_utc, utc
from bollard.store.tables import affinity_rule_vms, host_vms, nodes, vms

log = logging.getLogger(__name__)

# Columns written only through transition().
_STATE_COLUMNS = frozenset({"vm_state", "task_state", "task_id"})
# The states by their stored values (a lookup: an Enum call costs twenty times as much, and a
# page of VMs converts four per VM).
_VM_STATES = {s.value: s for s in VmState}
_TASK_STATES = {s.value: s for s in TaskState}
_DESIRED = {p.value: p for p in DesiredPower}
_POWER_STATES = {p.value: p for p in PowerState}


def _vm(row: Row[Any]) -> Vm:
    m = row._asdict()  # (a dict's lookups are cheaper than the row mapping's)
    return Vm(
        uuid=m["uuid"],
        name=m["name"],
        node=m["node"],
        vcpus=m["vcpus"],
        memory_mb=m["memory_mb"],
        epoch=m["epoch"],
        vm_state=_VM_STATES[m["vm_state"]],
        task_state=_TASK_STATES[m["task_state"]] if m["task_state"] else None,
        task_id=m["task_id"],
        desired_power=_DESIRED[m["desired_power"]],
        observed_power=_POWER_STATES[m["observed_power"]],
        observed_at=utc(m["observed_at"]),
        observed_seq=m["observed_seq"],
        fault=m["fault"],
        created_at=utc(m["created_at"]) or m["created_at"],
        updated_at=utc(m["updated_at"]) or m["updated_at"],
        previous_node=m["previous_node"],
        migration_method=m["migration_method"],
        node_limit=list(m["node_limit"]) if m["node_limit"] else None,
        node_selector=m["node_selector"],
        on_lost=m["on_lost"],
        ha=m["ha"],
        ha_priority=m["ha_priority"],
        autostart=bool(m["autostart"]),
        nics=tuple(_nic(n) for n in m["nics"] or ()),
        flavor=FlavorRef.of(m["flavor"]) if m["flavor"] else None,
        hidden=bool(m["hidden"]),
        ha_group=m["ha_group"],
        ha_hold=m["ha_hold"],
        max_restart=m["max_restart"],
        max_relocate=m["max_relocate"],
        ha_restarts=m["ha_restarts"] or 0,
        ha_relocates=m["ha_relocates"] or 0,
    )


def _nic(n: dict[str, Any]) -> Nic:
    return Nic(
        mac=n["mac"],
        network=n.get("network"),
        bridge=n.get("bridge"),
        model=n.get("model") or "virtio",
        sriov=n.get("sriov"),
        mode=n.get("mode"),
    )


def name_taken(conn: Connection, name: str) -> bool:
    return conn.execute(select(vms.c.uuid).where(vms.c.name == name)).first() is not None


def create(
    conn: Connection,
    *,
    uuid: str,
    name: str,
    node: str,
    vcpus: int,
    memory_mb: int,
    desired_power: DesiredPower,
    task_id: str,
    now: datetime,
    migration_method: str = "default",
    node_limit: list[str] | None = None,
    node_selector: str | None = None,
    on_lost: str = "none",
    ha: str | None = None,
    ha_priority: int = 0,
    nics: Sequence[Nic] = (),
    flavor: FlavorRef | None = None,
) -> Vm:
    """Insert a new VM. Its NICs' MACs must be taken for it already (macs.assign).

    Its observed power is ABSENT when its node's stored report is a whole inventory of the
    node's current session (a new VM cannot be in it, and a later report of the node carries
    it only if it arrives there), else UNKNOWN until the node's next full report. Without
    this, a VM whose definition never reached its host kept UNKNOWN for good: reports carry
    only changes, and the last full one was stored before the VM existed."""
    if name_taken(conn, name):
        raise AlreadyExists(f"a VM named {name!r} already exists")
    observed = PowerState.ABSENT if _inventory_current(conn, node) else PowerState.UNKNOWN
    try:
        conn.execute(
            insert(vms).values(
                uuid=uuid,
                name=name,
                node=node,
                vcpus=vcpus,
                memory_mb=memory_mb,
                epoch=1,
                vm_state=VmState.BUILDING.value,
                task_state=TaskState.SCHEDULING.value,
                task_id=task_id,
                desired_power=desired_power.value,
                observed_power=observed.value,
                observed_seq=0,
                migration_method=migration_method,
                node_limit=node_limit,
                node_selector=node_selector,
                on_lost=on_lost,
                ha=ha,
                ha_priority=ha_priority,
                autostart=False,
                nics=nic_args(nics),
                flavor=None if flavor is None else flavor.stored(),
                flavor_id=None if flavor is None else flavor.id,
                created_at=now,
                updated_at=now,
            )
        )
    except IntegrityError as exc:  # the name taken meanwhile, by a create not committed then
        if "uq_vms_name" in str(exc.orig) or "vms.name" in str(exc.orig):
            raise AlreadyExists(f"a VM named {name!r} already exists") from None
        raise
    return get_by_uuid(conn, uuid)


# Built once: building a statement and its cache key is about a third of what a query by
# name costs (every VM shown is read through this).
_BY_NAME = select(vms).where(vms.c.name == bindparam("name"))


def get(conn: Connection, name: str) -> Vm:
    row = conn.execute(_BY_NAME, {"name": name}).first()
    if row is None:
        raise NotFound(f"VM {name!r} does not exist")
    return _vm(row)


def get_by_uuid(conn: Connection, uuid: str) -> Vm:
    row = conn.execute(select(vms).where(vms.c.uuid == uuid)).first()
    if row is None:
        raise NotFound(f"VM {uuid} does not exist")
    return _vm(row)


def find_by_uuid(conn: Connection, uuid: str) -> Vm | None:
    row = conn.execute(select(vms).where(vms.c.uuid == uuid)).first()
    return None if row is None else _vm(row)


_IN_CHUNK = 500  # uuids per IN (...) list


def find_many(conn: Connection, uuids: list[str]) -> dict[str, Vm]:
    """The VMs with these uuids that exist, by uuid (a few queries, not one per VM)."""
    found: dict[str, Vm] = {}
    for start in range(0, len(uuids), _IN_CHUNK):
        chunk = uuids[start : start + _IN_CHUNK]
        for row in conn.execute(select(vms).where(vms.c.uuid.in_(chunk))).all():
            vm = _vm(row)
            found[vm.uuid] = vm
    return found


def list_page(conn: Connection, *, limit: int, cursor: str | None) -> Page:
    """Visible VMs (not hidden: a copy of a VM moving between cells), by name."""
    return pagination.page(
        conn, vms, vms.c.name, _vm, limit=limit, cursor=cursor, where=vms.c.hidden.is_(False)
    )


def finish_import(conn: Connection, uuid: str, now: datetime) -> None:
    """A VM copied from another cell: hidden, stopped, no task (its disks and guest come
    later, from images)."""
    conn.execute(
        update(vms)
        .where(vms.c.uuid == uuid)
        .values(
            hidden=True, vm_state=VmState.STOPPED.value, task_state=None, task_id=None,
            updated_at=now,
        )
    )  # fmt: skip


def is_hidden(conn: Connection, name: str) -> bool:
    row = conn.execute(select(vms.c.hidden).where(vms.c.name == name)).first()
    return row is not None and bool(row.hidden)


def set_hidden(conn: Connection, name: str, hidden: bool, now: datetime) -> Vm:
    """Hide or show VM `name` (NotFound if there is none)."""
    get(conn, name)
    conn.execute(update(vms).where(vms.c.name == name).values(hidden=hidden, updated_at=now))
    return get(conn, name)


def on_node(conn: Connection, node: str) -> list[Vm]:
    return [_vm(r) for r in conn.execute(select(vms).where(vms.c.node == node)).all()]


def counts_by_state(conn: Connection) -> list[tuple[str, str | None, int]]:
    rows = conn.execute(
        select(vms.c.vm_state, vms.c.task_state, func.count())
        .where(vms.c.hidden.is_(False))
        .group_by(vms.c.vm_state, vms.c.task_state)
    ).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def transition(
    conn: Connection,
    uuid: str,
    now: datetime,
    *,
    held_by: str | None,
    task_state: TaskState | None,
    vm_state: VmState | None = None,
    task_id: str | None = None,
    expect_vm_state: VmState | None = None,
    unchanged: Mapping[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move a VM to `task_state` (None: no task holds it afterwards) and, when given, to
    `vm_state` (None keeps it), if the table allows the move from its current pair.

    `held_by` is the task that must hold the VM now (None: no task may); `task_id` the task
    that takes it (only when none holds it). With `expect_vm_state`, only from that
    vm_state; `unchanged` maps other columns to the values they must still have. `values`
    are written with the move (other columns than the states).

    Returns False (and logs) when the move is refused, and False when the VM does not exist
    or is not as expected. The update is guarded by what it read, so a concurrent change
    makes it return False instead of overwriting."""
    if task_id is not None and (held_by is not None or task_state is None):
        raise ValueError("task_id names the task that takes a VM no task holds")
    if held_by is None and task_state is not None and task_id is None:
        raise ValueError("a task that takes the VM needs its task_id")
    row = conn.execute(vm_moves.STATES, {"w_uuid": uuid}).first()
    if row is None or row.task_id != held_by:
        return False
    src = VmStates(VmState(row.vm_state), TaskState(row.task_state) if row.task_state else None)
    if expect_vm_state is not None and src.vm_state is not expect_vm_state:
        return False
    dst = VmStates(src.vm_state if vm_state is None else vm_state, task_state)
    if not allowed(src, dst):
        log.warning(
            "VM %s: refused transition %s/%s -> %s/%s",
            uuid, src.vm_state, src.task_state, dst.vm_state, dst.task_state,
        )  # fmt: skip
        return False
    # As .values() would (SQLAlchemy does not check the names of parameters).
    if not vm_moves.COLUMNS.issuperset(values):
        raise CompileError(
            f"Unconsumed column names: {', '.join(values.keys() - vm_moves.COLUMNS)}"
        )
    params: dict[str, Any] = {
        **values,
        "vm_state": dst.vm_state.value,
        "task_state": None if task_state is None else task_state.value,
        "task_id": None if task_state is None else (task_id or held_by),
        "updated_at": now,
        "w_uuid": uuid,
        "w_held": held_by,
        "w_vm_state": src.vm_state.value,
        "w_task_state": None if src.task_state is None else src.task_state.value,
    }
    kept: list[tuple[str, bool]] = []
    for column, value in (unchanged or {}).items():
        kept.append((column, value is None))
        params[f"w_u_{column}"] = value
    shape = (held_by is None, src.task_state is None, tuple(kept))
    move = vm_moves.move(shape)
    return conn.execute(move, params).rowcount == 1


def begin_task(
    conn: Connection,
    vm: Vm,
    task_state: TaskState,
    task_id: str,
    now: datetime,
    *,
    allowed: frozenset[VmState],
    desired_power: DesiredPower | None = None,
) -> None:
    """Take the VM for a task, if no other task holds it and its state allows the operation."""
    if vm.task_state is not None or vm.task_id is not None:
        raise Conflict(f"VM {vm.name!r} is busy with task {vm.task_id} ({vm.task_state})")
    if vm.vm_state not in allowed:
        raise Conflict(
            f"VM {vm.name!r} is {vm.vm_state}; this operation needs it to be "
            + " or ".join(sorted(s.value for s in allowed))
        )
    values: dict[str, Any] = {}
    if desired_power is not None:
        values["desired_power"] = desired_power.value
    if not transition(
        conn, vm.uuid, now, held_by=None, task_state=task_state, task_id=task_id,
        expect_vm_state=vm.vm_state, **values,
    ):  # fmt: skip
        current = get_by_uuid(conn, vm.uuid)
        raise Conflict(
            f"VM {vm.name!r} changed under this request (now busy with task "
            f"{current.task_id}); try again"
        )


def set_task_state(
    conn: Connection, uuid: str, task_id: str, state: TaskState, now: datetime
) -> None:
    """Show what the task that holds the VM does now (nothing if it no longer holds it)."""
    transition(conn, uuid, now, held_by=task_id, task_state=state)


def end_task(
    conn: Connection,
    uuid: str,
    task_id: str,
    now: datetime,
    *,
    vm_state: VmState | None = None,
    fault: str | None = None,
) -> bool:
    """Release the VM from its task (only the task that holds it may), setting its outcome."""
    return transition(
        conn, uuid, now, held_by=task_id, task_state=None, vm_state=vm_state, fault=fault
    )


def remove(conn: Connection, uuid: str) -> None:
    """Delete the VM's record and free its MAC addresses."""
    conn.execute(delete(vms).where(vms.c.uuid == uuid))
    macs.release(conn, uuid)
    conn.execute(delete(affinity_rule_vms).where(affinity_rule_vms.c.vm_uuid == uuid))


def reset_sequence(conn: Connection, node: str) -> None:
    """A new agent incarnation starts a new order of reports for the node's VMs."""
    conn.execute(update(vms).where(vms.c.node == node).values(observed_seq=0))


def set_vm_state(conn: Connection, uuid: str, state: VmState, now: datetime) -> None:
    """Set vm_state of a VM that no task holds (used when settling a late outcome)."""
    transition(conn, uuid, now, held_by=None, task_state=None, vm_state=state)


def usage_by_node(conn: Connection) -> dict[str, tuple[int, int, int]]:
    """Per node: (vCPUs of running VMs, memory of running VMs, number of VMs)."""
    running = (vms.c.vm_state == VmState.ACTIVE.value) | (vms.c.vm_state == VmState.PAUSED.value)
    rows = conn.execute(
        select(
            vms.c.node,
            func.sum(case((running, vms.c.vcpus), else_=0)),
            func.sum(case((running, vms.c.memory_mb), else_=0)),
            func.count(),
        )
        .where(vms.c.node.is_not(None))
        .group_by(vms.c.node)
    ).all()
    return {r[0]: (int(r[1] or 0), int(r[2] or 0), int(r[3])) for r in rows}


def set_meta(conn: Connection, uuid: str, now: datetime, **values: Any) -> None:
    """Write other columns than the states (those change only through transition())."""
    if _STATE_COLUMNS & values.keys():
        raise ValueError("vm_state, task_state and task_id change only through transition()")
    conn.execute(update(vms).where(vms.c.uuid == uuid).values(updated_at=now, **values))


def move_owner(
    conn: Connection,
    uuid: str,
    *,
    source: str,
    target: str,
    epoch: int,
    previous_node: str | None,
    now: datetime,
) -> bool:
    """Give the VM to `target` with the next epoch, if it is still `source`'s at `epoch`
    (compare-and-swap: the owner and the epoch change together, or not at all).

    What the VM's observed state is now is what `target` last reported of it (reports
    carry only changes, so the new owner may have reported it before it owned it); if it
    has not, the state is unknown until it does (`_observe_owner`). Its volumes in local
    pools go with it (a migration carried them; an HA restart makes them anew on
    `target`)."""
    result = conn.execute(
        update(vms)
        .where(vms.c.uuid == uuid, vms.c.node == source, vms.c.epoch == epoch)
        .values(node=target, epoch=epoch + 1, previous_node=previous_node, updated_at=now)
    )
    if result.rowcount != 1:
        return False
    _observe_owner(conn, uuid, target)
    volumes.follow_vm(conn, uuid, target, now)
    return True


def _observe_owner(conn: Connection, uuid: str, owner: str) -> None:
    """The observed state of a VM just given to `owner`: `owner`'s report of it, read only
    now that the row is locked (the caller's update): a report of `owner` that commits
    after this read applies itself once this transaction has ended
    (`host_vms.observe_arrived` waits for the lock), and one that committed before is seen
    here."""
    seen = conn.execute(
        select(host_vms.c.power, host_vms.c.seq, host_vms.c.changed_at).where(
            host_vms.c.node == owner, host_vms.c.uuid == uuid
        )
    ).first()
    observed: dict[str, Any] = (
        {"observed_power": seen[0], "observed_seq": seen[1], "observed_at": seen[2]}
        if seen is not None
        # Report sequences are per host: the new owner's start a new order.
        else {"observed_power": PowerState.UNKNOWN.value, "observed_seq": 0}
    )
    conn.execute(update(vms).where(vms.c.uuid == uuid).values(**observed))


def resize_owner(
    conn: Connection,
    uuid: str,
    *,
    source: str,
    dest: str,
    epoch: int,
    flavor: FlavorRef,
    now: datetime,
) -> bool:
    """A resize (or its revert) gives the VM its new size and owner: `dest` (the next epoch,
    unless `dest` is `source`: the same host keeps the VM and its epoch) at `flavor`'s vCPUs
    and memory, if it is still `source`'s at `epoch` (compare-and-swap). Its volumes are
    swapped by the caller (volumes.swap_for_resize): nothing follows the VM here."""
    values: dict[str, Any] = {
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "flavor": None if flavor.custom else flavor.stored(),
        "flavor_id": flavor.id,
        "updated_at": now,
    }
    if dest != source:
        values |= {"node": dest, "epoch": epoch + 1, "previous_node": None}
    result = conn.execute(
        update(vms).where(vms.c.uuid == uuid, vms.c.node == source, vms.c.epoch == epoch)
        .values(**values)
    )  # fmt: skip
    if result.rowcount != 1:
        return False
    if dest != source:
        _observe_owner(conn, uuid, dest)
    return True


def _inventory_current(conn: Connection, node: str) -> bool:
    """Whether `node`'s stored report is a whole inventory of its current session."""
    incarnation = conn.execute(
        select(nodes.c.inventory_incarnation).where(nodes.c.name == node)
    ).scalar_one_or_none()
    return incarnation is not None


def using_flavor(conn: Connection, flavor_id: str, limit: int = 5) -> tuple[int, list[str]]:
    """How many VMs were given the flavor (as their current size), and the first names."""
    where = vms.c.flavor_id == flavor_id
    total = conn.execute(select(func.count()).select_from(vms).where(where)).scalar_one()
    names = conn.execute(select(vms.c.name).where(where).order_by(vms.c.name).limit(limit))
    return int(total), [r[0] for r in names]


def flavor_use_counts(conn: Connection, flavor_ids: list[str]) -> dict[str, int]:
    """How many VMs each of these flavors gave their current size (absent: none)."""
    if not flavor_ids:
        return {}
    rows = conn.execute(
        select(vms.c.flavor_id, func.count())
        .where(vms.c.flavor_id.in_(flavor_ids), vms.c.hidden.is_(False))
        .group_by(vms.c.flavor_id)
    ).all()
    return {r[0]: int(r[1]) for r in rows}


def observe_power_now(conn: Connection, uuid: str, power: PowerState, now: datetime) -> None:
    """Record a power state known without a host report (e.g. its node was fenced)."""
    conn.execute(
        update(vms).where(vms.c.uuid == uuid).values(observed_power=power.value, observed_at=now)
    )


def set_autostart(conn: Connection, uuid: str, value: bool, now: datetime) -> None:
    conn.execute(update(vms).where(vms.c.uuid == uuid).values(autostart=value, updated_at=now))


def all_vms(conn: Connection) -> list[Vm]:
    return [_vm(r) for r in conn.execute(select(vms).order_by(vms.c.name)).all()]


_VIEW_COLUMNS = (
    vms.c.uuid, vms.c.name, vms.c.node, vms.c.vcpus, vms.c.memory_mb, vms.c.epoch,
    vms.c.vm_state, vms.c.task_state, vms.c.task_id, vms.c.desired_power, vms.c.updated_at,
    vms.c.ha, vms.c.autostart,
)  # fmt: skip


def views(conn: Connection) -> list[VmView]:
    """Every VM as the state reconciler classifies it, by name: only the columns it reads,
    as the driver returns them (a pass reads every VM; this is a sixth of `all_vms`)."""
    found: list[VmView] = []
    query = select(*_VIEW_COLUMNS).order_by(vms.c.name)
    for (
        uuid, name, node, vcpus, memory_mb, epoch, vm_state, task_state, task_id, desired,
        updated_at, ha, autostart,
    ) in raw_rows(conn, query):  # fmt: skip
        power = _DESIRED[desired]
        view = VmView(
            uuid, name, node, vcpus, memory_mb, epoch, _VM_STATES[vm_state],
            _TASK_STATES[task_state] if task_state else None, task_id, power,
            raw_utc(updated_at), ha_policy(ha, power), bool(autostart),
        )  # fmt: skip
        found.append(view)
    return found


def follow_host(conn: Connection, vm: Vm, now: datetime, **values: Any) -> bool:
    """Let the record follow what its host reports (state reconciliation), only if no task
    took the VM and the record has not changed since `vm` was read (compare-and-swap).
    `values` may hold a new `vm_state` (as a VmState or its value)."""
    new_state = values.pop("vm_state", None)
    return transition(
        conn, vm.uuid, now, held_by=None, task_state=None,
        vm_state=None if new_state is None else VmState(new_state),
        expect_vm_state=vm.vm_state,
        unchanged={
            "desired_power": vm.desired_power.value, "vcpus": vm.vcpus,
            "memory_mb": vm.memory_mb,
        },
        **values,
    )  # fmt: skip
