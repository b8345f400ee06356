"""Moves of VMs between cells, as the API server is asked for them: a resize or a shutdown
migration whose target is in another cell, then its confirm or revert.

A move is asked for like any resize or migration (`POST /vms/{name}/resize|migrate`): with
`to` naming a node of another cell, or without `to` when the caller may move VMs between
cells and the cross-cell weigher (weigher.py) prefers another cell's node. Who may is a
setting (`policy.vm_resize_cross_cell`, `policy.vm_migrate_cross_cell`: nobody by default).
While a move is open the API server refuses every other change of the VM (409) and shows its
status as Nova does: RESIZE while it moves, VERIFY_RESIZE once it runs in the target cell,
REVERT_RESIZE while it goes back."""

from __future__ import annotations

import logging
from typing import Any, Literal

from sqlalchemy import Connection

from bollard.cells.directory import CellClient, CellDirectory
from bollard.cells.move_params import MoveEndParams, MoveParams
from bollard.cells.routing import Routes
from bollard.cells.weigher import Weigher
from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.flavors import FlavorRef
from bollard.domain.ids import new_id
from bollard.domain.migrations import Migration, MigrationStatus, MigrationType
from bollard.domain.policy import Forbidden, Identity, Role
from bollard.server.clock import Clock
from bollard.server.ports import SettingsReader, TaskLauncher, UnitOfWork
from bollard.store import flavors, migrations_log, tasks

log = logging.getLogger(__name__)

MOVING = {
    MigrationStatus.PRE_MIGRATING: ("RESIZE", "resize_prep"),
    MigrationStatus.MIGRATING: ("RESIZE", "resize_migrating"),
    MigrationStatus.POST_MIGRATING: ("RESIZE", "resize_finish"),
    MigrationStatus.FINISHED: ("VERIFY_RESIZE", None),
    MigrationStatus.CONFIRMING: ("VERIFY_RESIZE", "resize_confirming"),
    MigrationStatus.REVERTING: ("REVERT_RESIZE", "resize_reverting"),
}
# A NIC as the target cell's copy of the VM takes it (POST /vms/import).
_NIC_FIELDS = ("mac", "network", "bridge", "model", "sriov", "mode")
# What a VM waiting in VERIFY_RESIZE after a move may still be asked (besides reads).
_ALLOWED_OPEN = ("resize/confirm", "resize/revert", "console", "console/vnc")


def may_move(role: Role, lowest: str) -> bool:
    """Whether `role` may move VMs between cells when the setting names `lowest`."""
    if lowest == "nobody":
        return False
    return role.covers(Role(lowest))


class Moves:
    def __init__(
        self, *, work: UnitOfWork, clock: Clock, directory: CellDirectory, routes: Routes,
        launcher: TaskLauncher, settings: SettingsReader, weigher: Weigher,
    ) -> None:  # fmt: skip
        self._work = work
        self._clock = clock
        self._cells = directory
        self._routes = routes
        self._launcher = launcher
        self._settings = settings
        self._weigher = weigher

    # -- what is open -----------------------------------------------------------------------

    def open_record(self, conn: Connection, name: str) -> Migration | None:
        for record in migrations_log.open_by_name(conn, name):
            if record.status in MOVING:
                return record
        return None

    async def find(self, name: str) -> Migration | None:
        def read() -> Migration | None:
            with self._work.read() as conn:
                return self.open_record(conn, name)

        return await self._work.run(read)

    async def open_names(self) -> dict[str, Migration]:
        def read() -> dict[str, Migration]:
            with self._work.read() as conn:
                return {r.vm_name: r for r in migrations_log.open_all(conn) if r.status in MOVING}

        return await self._work.run(read)

    async def guard(self, name: str, method: str, tail: str) -> Migration | None:
        """The VM's open move (None: none); Conflict for a change it does not allow."""
        record = await self.find(name)
        if record is None or method == "GET" or tail in _ALLOWED_OPEN:
            return record
        if record.status is MigrationStatus.FINISHED:
            raise Conflict(
                f"VM {name} waits in VERIFY_RESIZE after a move between cells: confirm or "
                f"revert it first (`bollard vm resize {name} --confirm` or `--revert`)"
            )
        raise Conflict(f"VM {name} is moving between cells (migration {record.id}, "
                       f"{record.status.value})")  # fmt: skip

    @staticmethod
    def overlay(vm: dict[str, Any], record: Migration | None) -> dict[str, Any]:
        """The VM as a move shows it: the status and task state of where the move is, and the
        move as its resize."""
        if record is None or record.status not in MOVING or "status" not in vm:
            return vm
        status, task_state = MOVING[record.status]
        vm["status"] = status
        vm["task_state"] = task_state
        vm["resize"] = {
            "migration_id": record.id, "source": record.source, "dest": record.dest,
            "old_flavor": None if record.old_flavor is None else record.old_flavor.stored(),
            "new_flavor": None if record.new_flavor is None else record.new_flavor.stored(),
            "status": record.status.value, "cross_cell": True,
        }  # fmt: skip
        return vm

    # -- asking -----------------------------------------------------------------------------

    async def resize(
        self, name: str, body: dict[str, Any], identity: Identity | None
    ) -> tuple[dict[str, Any], MoveParams] | None:
        """A cross-cell resize if the target is in another cell (None: the VM's cell resizes
        it itself)."""
        flavor_name = body.get("flavor")
        if not isinstance(flavor_name, str):
            return None  # the cell says what is wrong
        client, vm = await self._vm(name, identity)
        allowed = await self._allowed("policy.vm_resize_cross_cell", identity)
        target = await self._target(client, vm, body.get("to"), allowed, identity, flavor_name)
        if target is None:
            return None
        self._check(allowed, identity, "resize", "vm:resize:cross_cell", name, target[0])
        flavor = await self._flavor(flavor_name)
        return await self._start(vm, client, target, "resize", flavor, identity)

    async def migrate(
        self, name: str, body: dict[str, Any], identity: Identity | None
    ) -> tuple[dict[str, Any], MoveParams] | None:
        client, vm = await self._vm(name, identity)
        allowed = await self._allowed("policy.vm_migrate_cross_cell", identity)
        method = body.get("method")
        if body.get("to") is None and (method != "shutdown" or not allowed):
            return None  # a migration within the cell
        target = await self._target(client, vm, body.get("to"), allowed, identity, None)
        if target is None:
            return None
        if method != "shutdown" or body.get("force_live"):
            raise InvalidInput(
                f"to: {body.get('to') or target[1]} is in cell {target[0]}: a VM moves between "
                "cells by shutdown only (--method shutdown)"
            )
        self._check(allowed, identity, "migrate", "vm:migrate:cross_cell", name, target[0])
        return await self._start(vm, client, target, "migrate", None, identity)

    async def _allowed(self, key: str, identity: Identity | None) -> bool:
        role = Role.ADMIN if identity is None else identity.role
        return may_move(role, str(await self._work.run(self._settings.get, key)))

    def _check(
        self, allowed: bool, identity: Identity | None, what: str, permission: str,
        name: str, cell: str,
    ) -> None:  # fmt: skip
        if allowed:
            return
        who = "the API server" if identity is None else identity.describe()
        raise Forbidden(
            f"{what} of VM {name} into cell {cell} needs permission {permission} (setting "
            f"policy.vm_{what}_cross_cell); {who} does not have it"
        )

    async def _vm(self, name: str, identity: Identity | None) -> tuple[CellClient, dict[str, Any]]:
        client = await self._routes.vm(name, identity)
        vm: dict[str, Any] = await client.json("GET", f"/vms/{name}", identity=identity)
        return client, vm

    async def _flavor(self, name: str) -> FlavorRef:
        def read() -> FlavorRef:
            with self._work.read() as conn:
                return flavors.get(conn, name).ref()

        return await self._work.run(read)

    async def _target(
        self, client: CellClient, vm: dict[str, Any], to: Any, allowed: bool,
        identity: Identity | None, flavor: str | None,
    ) -> tuple[str, str] | None:  # fmt: skip
        """(cell, node) of a target in another cell; None: the VM's own cell."""
        if isinstance(to, str) and to:
            cell = await self._routes.node(to, identity)
            return None if cell.name == client.name else (cell.name, to)
        if not allowed:
            return None
        size = vm
        if flavor is not None:
            ref = await self._flavor(flavor)
            size = {**vm, "vcpus": ref.vcpus, "memory_mb": ref.memory_mb}
        best = await self._weigher.best(client.name, size, exclude=vm.get("node"))
        if best is None or best[0] == client.name:
            return None
        return best

    async def _start(
        self, vm: dict[str, Any], client: CellClient, target: tuple[str, str],
        kind: Literal["resize", "migrate"],
        flavor: FlavorRef | None, identity: Identity | None,
    ) -> tuple[dict[str, Any], MoveParams]:  # fmt: skip
        name = str(vm["name"])
        if vm.get("task_state") or vm.get("status") not in ("ACTIVE", "SHUTOFF"):
            raise Conflict(
                f"VM {name} is {vm.get('status')} ({vm.get('task_state') or 'no task'}): only "
                "an ACTIVE or SHUTOFF VM with no task moves between cells"
            )
        disks = [d for d in vm.get("disks", []) if d.get("device")]
        root = next((d for d in disks if d["device"] == "vda"), None)
        grow = None
        if flavor is not None and flavor.disk_mb:
            if root is not None and flavor.disk_mb < int(root["size_mb"]):
                raise InvalidInput(
                    f"flavor: {flavor.name}'s root disk ({flavor.disk_mb} MiB) is smaller than "
                    f"VM {name}'s ({root['size_mb']} MiB): a disk never shrinks"
                )
            if root is not None and flavor.disk_mb > int(root["size_mb"]):
                grow = flavor.disk_mb
        old = FlavorRef.of(vm["flavor"]) if vm.get("flavor") else FlavorRef(
            None, None, int(vm["vcpus"]), int(vm["memory_mb"]), 0
        )  # fmt: skip
        size = flavor or old
        cell, node = target
        migration_id = new_id()
        record = {
            "name": name, "uuid": vm["uuid"], "vcpus": size.vcpus, "memory_mb": size.memory_mb,
            "node": node, "flavor": None if flavor is None and not vm.get("flavor") else (
                size.stored()),
            # SR-IOV NICs keep their physical network and mode: the target cell claims VFs
            # of its node for them with the copy (the source cell's go with its copy).
            "nics": [{k: n[k] for k in _NIC_FIELDS if n.get(k)} for n in vm.get("nics", [])],
            "disks": [{"device": d["device"], "size_mb": d["size_mb"], "pool": d["pool"],
                       "format": d.get("format") or "qcow2"} for d in disks],
            "ha": vm.get("ha"), "ha_priority": vm.get("ha_priority", 0),
            "on_lost": vm.get("on_lost", "none"),
            "migration_method": vm.get("migration_method", "default"),
        }  # fmt: skip
        params = MoveParams(
            migration_id=migration_id, kind=kind,
            vm=name, uuid=str(vm["uuid"]), source_cell=client.name,
            source_node=str(vm.get("node") or ""), target_cell=cell, target_node=node,
            was_running=vm.get("status") == "ACTIVE", record=record, grow_root_mb=grow,
            image=f"move-{migration_id}",
        )  # fmt: skip

        def tx() -> dict[str, Any]:
            with self._work.write() as conn:
                if self.open_record(conn, name) is not None:
                    raise Conflict(f"VM {name} is moving between cells already")
                now = self._clock.now()
                migrations_log.create(
                    conn, id=migration_id, vm_uuid=params.uuid, vm_name=name,
                    type=MigrationType.RESIZE if kind == "resize" else MigrationType.MIGRATION,
                    source=params.source_node, dest=node,
                    status=MigrationStatus.PRE_MIGRATING, task_id=migration_id, now=now,
                    old_flavor=old, new_flavor=size,
                )  # fmt: skip
                task = self._launcher.create_in(
                    conn, id=migration_id, type="cross_cell_move", vm_uuid=params.uuid,
                    vm_name=name, node=None, params=params,
                )  # fmt: skip
                return {"id": task.id, "type": task.type, "state": task.state.value}

        task = await self._work.run(tx)
        self._launcher.launch(migration_id)
        log.info("VM %s moves from cell %s to %s (%s, task %s)", name, client.name, cell, node,
                 migration_id)  # fmt: skip
        return task, params

    async def end(self, name: str, how: str) -> dict[str, Any] | None:
        """Confirm (`how` confirm) or revert a move that waits in VERIFY_RESIZE; None: the VM
        has no such move (its cell's own resize, if any, is the cell's)."""

        def tx() -> dict[str, Any] | None:
            with self._work.write() as conn:
                record = self.open_record(conn, name)
                if record is None:
                    return None
                if record.status is not MigrationStatus.FINISHED:
                    raise Conflict(f"VM {name}'s move between cells is {record.status.value}")
                move = migrations_log_task_params(conn, record)
                status = (
                    MigrationStatus.CONFIRMING if how == "confirm" else MigrationStatus.REVERTING
                )
                task_id = new_id()
                migrations_log.set_status(conn, record.id, status, self._clock.now())
                params = MoveEndParams(
                    migration_id=record.id, vm=name, uuid=record.vm_uuid,
                    source_cell=move.source_cell, target_cell=move.target_cell,
                    was_running=move.was_running, image=move.image,
                )  # fmt: skip
                task = self._launcher.create_in(
                    conn, id=task_id, type=f"cross_cell_{how}", vm_uuid=record.vm_uuid,
                    vm_name=name, node=None, params=params,
                )  # fmt: skip
                return {"id": task.id, "type": task.type, "state": task.state.value}

        task = await self._work.run(tx)
        if task is not None:
            self._launcher.launch(task["id"])
        return task


def migrations_log_task_params(conn: Connection, record: Migration) -> MoveParams:
    """The parameters of the move that made `record` (its task has the record's id)."""
    task = tasks.get(conn, record.id)
    return MoveParams.model_validate(task.params)
