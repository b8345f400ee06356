"""The statements of `vms.transition`, built once (building a statement and its cache key at
each call cost about four times its execution; see store/tasks_hot.py): the read of a VM's
states, and the guarded update for each shape of its guards: whether a task holds the VM
(task_id IS NULL or = :w_held), whether it has a task_state (IS NULL or = :w_task_state),
and the `unchanged` columns (each IS NULL or = :w_u_<column>). The columns written are the
parameters' own: SQLAlchemy compiles the SET clause of a statement once for each set of
them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, select, update

from bollard.store.tables import vms

STATES = select(vms.c.vm_state, vms.c.task_state, vms.c.task_id).where(
    vms.c.uuid == bindparam("w_uuid")
)
COLUMNS = frozenset(vms.c.keys())
# (no task holds the VM, it has no task_state, the unchanged columns with whether each is NULL)
Shape = tuple[bool, bool, tuple[tuple[str, bool], ...]]


def _guard(column: ColumnElement[Any], name: str, null: bool) -> ColumnElement[bool]:
    """column IS NULL, or column = :name."""
    return column.is_(None) if null else column == bindparam(name)


def _build(shape: Shape) -> Update:
    free, no_task_state, unchanged = shape
    return update(vms).where(
        vms.c.uuid == bindparam("w_uuid"),
        _guard(vms.c.task_id, "w_held", free),
        vms.c.vm_state == bindparam("w_vm_state"),
        _guard(vms.c.task_state, "w_task_state", no_task_state),
        *(_guard(vms.c[column], f"w_u_{column}", null) for column, null in unchanged),
    )


# The shapes without `unchanged` (every task's) at once, the others (a few call sites' own
# sets of columns, fixed in code) as first used.
_MOVES: dict[Shape, Update] = {
    (a, b, ()): _build((a, b, ())) for a in (False, True) for b in (False, True)
}


def move(shape: Shape) -> Update:
    """The guarded update of this shape."""
    found = _MOVES.get(shape)
    if found is None:
        found = _MOVES[shape] = _build(shape)
    return found
