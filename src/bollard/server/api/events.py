"""/api/v1/events: the event log (task and step transitions, decisions, state changes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.models import Event
from bollard.server.api.deps import ClockDep, EventsDep, WorkDep
from bollard.server.api.params import INT32_MAX, EventId, Text
from bollard.server.api.schemas import Name
from bollard.server.clock import Deadline
from bollard.store import events, nodes, vms

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
    actor: str | None = None  # who caused it: a user or token name, or "system"

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
            actor=e.actor,
        )


class EventPage(BaseModel):
    items: list[EventOut]
    last_id: int  # pass as `after` to get what comes next
    more: bool = Field(
        default=False,
        description="Whether more events matched than `limit`: older ones before these "
        "(without `after`), or newer ones after them (with `after`).",
    )


def _resolve(conn: Connection, vm: str | None, node: str | None) -> str | None:
    """The `vm` filter to apply: the uuid of the VM of that name now (so an earlier VM of the
    same name is left out), else as given when some event names it (a deleted VM, a uuid);
    NotFound for a VM or node no event and no record has ever named."""
    if (
        node is not None
        and not nodes.find_many(conn, {node})
        and not events.last(conn, 1, node=node)
    ):
        raise NotFound(f"no node named {node!r}")
    if vm is None:
        return None
    if vms.name_taken(conn, vm):
        return vms.get(conn, vm).uuid
    if vms.find_by_uuid(conn, vm) is not None or events.last(conn, 1, vm=vm):
        return vm
    raise NotFound(f"no VM named {vm!r}")


@router.get("", response_model=EventPage)
async def list_events(
    work: WorkDep,
    clock: ClockDep,
    feed: EventsDep,
    vm: Annotated[Name | None, Query(description="Only events of this VM (name or uuid).")] = None,
    node: Annotated[Name | None, Query(description="Only events of this node.")] = None,
    task: Annotated[Name | None, Query(description="Only events of this task.")] = None,
    actor: Annotated[
        Text | None,
        Query(description="Only events caused by this actor (a user, a token or `system`)."),
    ] = None,
    after: EventId = None,
    before: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT32_MAX,
            description="Without `after`: the newest events older than this id (paging back).",
        ),
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
    """Events, oldest first. To follow: pass the answer's `last_id` as `after`, with `wait`.
    To page back: pass the first item's id as `before`. 422 with both `after` and `before`."""
    if after is not None and before is not None:
        raise InvalidInput("after and before: give one of them, not both")

    def resolve() -> str | None:
        with work.read() as conn:
            return _resolve(conn, vm, node)

    match_vm = await work.run(resolve)

    def read() -> list[Event]:
        # One more than asked for, to tell whether there are more.
        with work.read() as conn:
            filters = {"vm": match_vm, "node": node, "task_id": task, "actor": actor}
            if after is None:
                return events.last(conn, limit + 1, before=before, **filters)
            return events.after(conn, after, limit=limit + 1, **filters)

    deadline = Deadline.after(clock, wait)
    found = await work.run(read)
    while not found and after is not None and (remaining := deadline.remaining()) > 0:
        await feed.changed(remaining)
        found = await work.run(read)
    more = len(found) > limit
    if more:  # the newest `limit` without `after`, the next `limit` with it
        found = found[1:] if after is None else found[:limit]
    last_id = found[-1].id if found else (after or 0)
    return EventPage(items=[EventOut.of(e) for e in found], last_id=last_id, more=more)
