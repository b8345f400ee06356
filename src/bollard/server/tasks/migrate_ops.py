"""Requests to migrate, move or unmigrate a VM: choose the target, take the VM, create the task.

`migrate` is a temporary move: the VM remembers the node it came from (its first one, over
several migrations) and `unmigrate` sends it back there. `move` is for good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput, InvalidState
from bollard.domain.ids import new_id
from bollard.domain.models import Task, Vm
from bollard.domain.scheduler import (
    Decision,
    NodeFacts,
    PlacementRequest,
    check_target,
    decision_error,
    parse_selector,
    select_target,
)
from bollard.domain.states import TaskState, VmState
from bollard.store import nodes, tasks, vms

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

METHODS = ("default", "live", "shutdown")
MODES = ("migrate", "move", "unmigrate")
_MIGRATABLE = frozenset({VmState.ACTIVE, VmState.STOPPED})


def node_facts(conn: Connection) -> list[NodeFacts]:
    usage = vms.usage_by_node(conn)
    facts = []
    for n in nodes.list_all(conn):
        running_vcpus, running_mem, count = usage.get(n.name, (0, 0, 0))
        facts.append(
            NodeFacts(
                name=n.name,
                connected=n.connected,
                health=n.health,
                scheduling=n.scheduling,
                vcpus=n.vcpus,
                memory_mb=n.memory_mb,
                provisioned_vcpus=n.allocated_vcpus,
                provisioned_memory_mb=n.allocated_memory_mb,
                running_vcpus=running_vcpus,
                running_memory_mb=running_mem,
                vm_count=count,
                load=n.load,
            )
        )
    return facts


class MigrateOperations:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def request(
        self,
        name: str,
        *,
        mode: str,
        to: str | None = None,
        method: str | None = None,
        force_live: bool = False,
    ) -> tuple[Vm, Task]:
        settings = await self.rt.db_call(self.rt.settings.all)
        vm, task = await self.rt.db_call(self._tx, name, mode, to, method, force_live, settings)
        self.rt.engine.launch(task.id)
        return vm, task

    def _tx(
        self,
        name: str,
        mode: str,
        to: str | None,
        method: str | None,
        force_live: bool,
        settings: dict[str, Any],
    ) -> tuple[Vm, Task]:
        if mode not in MODES:
            raise InvalidInput(f"mode: one of {', '.join(MODES)}")
        if method is not None and method not in METHODS:
            raise InvalidInput(f"method: one of {', '.join(METHODS)}")
        with self.rt.db.write() as conn:
            vm = vms.get(conn, name)
            if mode == "unmigrate":
                if vm.previous_node is None:
                    raise InvalidState(f"VM {name} has not been migrated: it has no previous node")
                to = vm.previous_node
            decision = self._choose(conn, vm, to, settings)
            if decision.chosen is None:
                raise decision_error(decision)
            chosen_method = method or vm.migration_method
            params = {
                "mode": mode,
                "source": vm.node,
                "target": decision.chosen,
                "method": chosen_method,
                "force_live": force_live,
                "was_running": vm.vm_state is VmState.ACTIVE,
                "epoch": vm.epoch,
                "vcpus": vm.vcpus,
                "memory_mb": vm.memory_mb,
            }
            task_id = new_id()
            vms.begin_task(
                conn, vm, TaskState.MIGRATING, task_id, self.rt.clock.now(), allowed=_MIGRATABLE
            )
            self.rt.engine.create_in(
                conn,
                id=task_id,
                type="migrate",
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                node=vm.node,
                params=params,
            )
            tasks.set_result(conn, task_id, {"placement": decision.to_record()})
            return vms.get_by_uuid(conn, vm.uuid), tasks.get(conn, task_id)

    def _choose(
        self, conn: Connection, vm: Vm, to: str | None, settings: dict[str, Any]
    ) -> Decision:
        selector = parse_selector(vm.node_selector) if vm.node_selector else None
        request = PlacementRequest(
            vcpus=vm.vcpus,
            memory_mb=vm.memory_mb,
            exclude=frozenset({vm.node}) if vm.node else frozenset(),
            node_limit=vm.node_limit,
            selector=selector,
            current_node=vm.node,
        )
        options: dict[str, Any] = {
            "vcpu_allocation_ratio": float(settings["scheduler.vcpu_allocation_ratio"]),
            "default_selector": parse_selector(str(settings["scheduler.selector"])),
        }
        facts = node_facts(conn)
        if to is not None:
            return check_target(facts, request, to, **options)
        return select_target(facts, request, **options)
