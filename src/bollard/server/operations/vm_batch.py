"""Creating many VMs at once (`POST /vms/batch`, `bollard vm create --count`), as Nova's
min/max count: NAME-1 .. NAME-COUNT, each placed as a single create places one
(`VmOperations.place_in`: the same scheduler, claims, MACs, SR-IOV VFs and disks), all of
them and their create tasks in one write transaction. All or nothing: a name taken or a VM
that does not fit refuses the whole batch, and nothing is created; the tasks are launched
once the transaction has committed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from bollard.domain.errors import AlreadyExists, InsufficientCapacity, InvalidInput
from bollard.domain.models import Task, Vm
from bollard.server.operations.vm_ops import NewVm, VmOperations
from bollard.store import vms

MIN_COUNT = 2
MAX_COUNT = 100
MAX_NAME = 63  # schemas.Name: a VM's name has at most this many characters


def batch_names(name: str, count: int) -> list[str]:
    """NAME-1 .. NAME-COUNT; InvalidInput when `count` is out of range or the longest name
    would be over the limit of a VM name."""
    if not MIN_COUNT <= count <= MAX_COUNT:
        raise InvalidInput(f"count: {count} is not between {MIN_COUNT} and {MAX_COUNT}")
    longest = f"{name}-{count}"
    if len(longest) > MAX_NAME:
        raise InvalidInput(
            f"name: {longest!r} would be {len(longest)} characters long; a VM name has at most "
            f"{MAX_NAME} (shorten the name to {MAX_NAME - len(longest) + len(name)})"
        )
    return [f"{name}-{i}" for i in range(1, count + 1)]


def refuse_fixed_macs(new: NewVm) -> None:
    """A given MAC belongs to one VM: refused in a batch (InvalidInput)."""
    fixed = [nic.mac for nic in new.nics if nic.mac]
    if fixed:
        raise InvalidInput(
            f"nics: a given MAC ({', '.join(fixed)}) cannot be shared by the VMs of a batch; "
            "leave the MAC out and each VM gets a free one"
        )


async def create_batch(ops: VmOperations, new: NewVm, count: int) -> list[tuple[Vm, Task]]:
    """Create `count` VMs like `new` (named `new.name`-1 .. -COUNT) and their create tasks,
    all or none (see the module docstring). AlreadyExists names the VMs whose names are
    taken; InsufficientCapacity says how many of them fit and why the next did not."""
    refuse_fixed_macs(new)
    batch = [replace(new, name=name) for name in batch_names(new.name, count)]

    def place_all(conn: Connection, now: datetime) -> list[tuple[Vm, Task]]:
        taken = [n.name for n in batch if vms.name_taken(conn, n.name)]
        if len(taken) == 1:
            raise AlreadyExists(f"a VM named {taken[0]!r} already exists: nothing was created")
        if taken:
            raise AlreadyExists(f"VMs named {', '.join(taken)} already exist: nothing was created")
        made: list[tuple[Vm, Task]] = []
        for one in batch:
            try:
                made.append(ops.place_in(conn, one, now))
            except InsufficientCapacity as exc:
                raise InsufficientCapacity(
                    f"only {len(made)} of {count} VMs fit ({one.name} does not): "
                    f"{exc.message}; nothing was created"
                ) from None
        return made

    return await ops.create_together(place_all)
