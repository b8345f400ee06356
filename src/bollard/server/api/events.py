"""/api/v1/events: the event log (task and step transitions, decisions, state changes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from bollard.domain.models import Event
from bollard.server.api.deps import ClockDep, EventsDep, WorkDep
from bollard.server.clock import Deadline
from bollard.store import events

router = APIRouter(prefix="/events", tags=["events"])

MAX_WAIT = 60.0


class EventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    vm: str | None
    vm_uuid: str | None
    node: str | None
    task_id: str | None
    message: str
    data: dict[str, Any]

    @classmethod
    def of(cls, e: Event) -> EventOut:
        return cls(
            id=e.id,
            at=e.at,
            kind=e.kind,
            vm=e.vm_name,
            vm_uuid=e.vm_uuid,
            node=e.node,
            task_id=e.task_id,
            message=e.message,
            data=e.data,
        )


class EventPage(BaseModel):
    items: list[EventOut]
    last_id: int  # pass as `after` to get what comes next


@router.get("", response_model=EventPage)
async def list_events(
    work: WorkDep,
    clock: ClockDep,
    feed: EventsDep,
    vm: Annotated[str | None, Query(description="Only events of this VM (name or uuid).")] = None,
    node: Annotated[str | None, Query(description="Only events of this node.")] = None,
    task: Annotated[str | None, Query(description="Only events of this task.")] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Events after this id; default: the newest `limit`.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT,
            description="With `after`: wait up to this many seconds for new events.",
        ),
    ] = 0,
) -> EventPage:
    """Events, oldest first. To follow: pass the answer's `last_id` as `after`, with `wait`."""

    def read() -> list[Event]:
        with work.read() as conn:
            if after is None:
                return events.last(conn, limit, vm=vm, node=node, task_id=task)
            return events.after(conn, after, limit=limit, vm=vm, node=node, task_id=task)

    deadline = Deadline.after(clock, wait)
    found = await work.run(read)
    while not found and after is not None and (remaining := deadline.remaining()) > 0:
        await feed.changed(remaining)
        found = await work.run(read)
    last_id = found[-1].id if found else (after or 0)
    return EventPage(items=[EventOut.of(e) for e in found], last_id=last_id)
