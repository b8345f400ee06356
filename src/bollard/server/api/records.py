"""/api/v1/migrations (migration records) and /api/v1/vms/{name}/actions (instance actions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from bollard.domain import actions
from bollard.domain.errors import NotFound
from bollard.server.api.deps import WorkDep
from bollard.server.api.record_schemas import (
    ActionList,
    ActionOut,
    MigrationOut,
    MigrationPage,
)
from bollard.server.api.schemas import Name
from bollard.store import migrations_log, tasks, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(tags=["records"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
RequestId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,68}$")]


@router.get("/migrations", response_model=MigrationPage)
async def list_migrations(
    work: WorkDep,
    vm: Annotated[Name | None, Query(description="Only this VM's.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> MigrationPage:
    """Every migration, HA restart (evacuation) and resize, newest first."""

    def tx() -> MigrationPage:
        with work.read() as conn:
            uuid = vms.get(conn, vm).uuid if vm is not None else None
            return MigrationPage.of(
                migrations_log.list_page(conn, limit=limit, cursor=cursor, vm_uuid=uuid)
            )

    return await work.run(tx)


@router.get("/migrations/{migration_id}", response_model=MigrationOut)
async def show_migration(
    migration_id: Annotated[str, Path(max_length=36)], work: WorkDep
) -> MigrationOut:
    def tx() -> MigrationOut:
        with work.read() as conn:
            return MigrationOut.of(migrations_log.get(conn, migration_id))

    return await work.run(tx)


@router.get("/vms/{name}/actions", response_model=ActionList)
async def list_actions(name: Name, work: WorkDep) -> ActionList:
    """The VM's actions (its operations), newest first: request id, actor, start, finish,
    result."""

    def tx() -> ActionList:
        with work.read() as conn:
            vm = vms.get(conn, name)
            found = tasks.of_vm(conn, vm.uuid)
        items = [ActionOut.of(actions.of_task(t)) for t in found]
        return ActionList(items=items, total=len(items))

    return await work.run(tx)


@router.get("/vms/{name}/actions/{request_id}", response_model=ActionOut)
async def show_action(name: Name, request_id: RequestId, work: WorkDep) -> ActionOut:
    """One action with its events (the steps it went through)."""

    def tx() -> ActionOut:
        with work.read() as conn:
            vm = vms.get(conn, name)
            found = tasks.of_request(conn, vm.uuid, request_id)
            if not found:
                raise NotFound(f"VM {name} has no action of request {request_id}")
            task = tasks.get(conn, found[-1].id, with_steps=True)
        return ActionOut.of(actions.of_task(task, with_events=True), with_events=True)

    return await work.run(tx)
