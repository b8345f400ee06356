"""/api/v1/tasks"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from bollard.domain.states import TaskStatus
from bollard.server.api.deps import CancellerDep, EventsDep, WaiterDep, WorkDep
from bollard.server.api.params import Id
from bollard.server.api.schemas import Name, TaskOut, TaskPage
from bollard.store import tasks
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/tasks", tags=["tasks"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
MAX_WAIT = 60.0


def _states(state: list[TaskStatus] | None, active: bool) -> list[TaskStatus] | None:
    wanted = list(state) if state else None
    if active:
        unended = [s for s in TaskStatus if not s.ended]
        wanted = [s for s in (wanted or unended) if s in unended]
    return wanted


@router.get("", response_model=TaskPage)
async def list_tasks(
    work: WorkDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    vm: Annotated[
        Name | None,
        Query(
            description="Only the tasks of this VM: the VM of that name now (not an earlier "
            "one of the same name), or a VM's uuid (a deleted VM's too). 404 if no VM ever "
            "had it."
        ),
    ] = None,
    order: Annotated[
        Literal["oldest", "newest"],
        Query(description="oldest (first created first, the default) or newest first."),
    ] = "oldest",
    state: Annotated[
        list[TaskStatus] | None,
        Query(description="Only tasks in these states (repeat the parameter for several)."),
    ] = None,
    active: Annotated[
        bool,
        Query(description="Only tasks not ended yet (pending, running, rolling_back)."),
    ] = False,
) -> TaskPage:
    """Tasks in the order they were created; `order=newest&limit=N` gives the newest N."""

    def tx() -> TaskPage:
        with work.read() as conn:
            vm_uuid, vm_name = tasks.resolve_vm(conn, vm) if vm is not None else (None, None)
            page = tasks.list_page(
                conn,
                limit=limit,
                cursor=cursor,
                vm_uuid=vm_uuid,
                vm_name=vm_name,
                newest_first=order == "newest",
                states=_states(state, active),
            )
        return TaskPage(
            items=[TaskOut.of(t) for t in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{task_id}", response_model=TaskOut)
async def show_task(task_id: Id, work: WorkDep) -> TaskOut:
    """One task with its steps: state, result, times and errors of each (and of its undo)."""

    def tx() -> TaskOut:
        with work.read() as conn:
            return TaskOut.of(tasks.get(conn, task_id, with_steps=True), with_steps=True)

    return await work.run(tx)


@router.post("/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(
    task_id: Id, work: WorkDep, canceller: CancellerDep, events: EventsDep
) -> TaskOut:
    """Ask a running task to stop: it stops before its next step (a migration in flight is
    aborted on its host) and rolls back what it did."""
    task = await work.run(canceller.request_cancel, task_id)
    await canceller.cancel_inflight(task_id)
    events.touch()
    return TaskOut.of(task)


@router.get("/{task_id}/wait", response_model=TaskOut)
async def wait_task(
    task_id: Id,
    waiter: WaiterDep,
    timeout: Annotated[
        float, Query(gt=0, le=MAX_WAIT, description="Seconds to wait at most.")
    ] = 30,
) -> TaskOut:
    """The task as soon as it has ended, or as it stands once `timeout` seconds have passed."""
    task = await waiter.wait(task_id, timeout)
    return TaskOut.of(task, with_steps=True)
