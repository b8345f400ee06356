"""/api/v1/commands: every command sent to an agent, with both states and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import Connection

from bollard.domain.commands import CommandState
from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.models import CommandRecord
from bollard.server.api.deps import WorkDep
from bollard.server.api.params import Id
from bollard.server.api.schemas import Name
from bollard.store import commands, vms
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/commands", tags=["commands"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


class TransitionOut(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str
    note: str | None


class CommandOut(BaseModel):
    id: str
    node: str
    type: str
    args: dict[str, Any]
    vm_uuid: str | None
    epoch: int
    task_id: str | None
    state: str
    agent_state: str | None
    answer: dict[str, Any] | None
    error: str | None
    attempts: int
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    history: list[TransitionOut] | None = None

    @classmethod
    def of(cls, c: CommandRecord, *, with_history: bool = False) -> CommandOut:
        return cls(
            id=c.id,
            node=c.node,
            type=c.type,
            args=c.args,
            vm_uuid=c.vm_uuid,
            epoch=c.epoch,
            task_id=c.task_id,
            state=c.state,
            agent_state=c.agent_state,
            answer=c.answer,
            error=c.error,
            attempts=c.attempts,
            deadline=c.deadline,
            created_at=c.created_at,
            updated_at=c.updated_at,
            history=[
                TransitionOut(at=h.at, from_state=h.from_state, to_state=h.to_state, note=h.note)
                for h in c.history
            ]
            if with_history
            else None,
        )


class CommandPage(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None
    total: int


@router.get("", response_model=CommandPage, response_model_exclude_none=False)
async def list_commands(
    work: WorkDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    node: Annotated[Name | None, Query(description="Only commands sent to this node.")] = None,
    vm: Annotated[
        Name | None, Query(description="Only commands about this VM (name or uuid).")
    ] = None,
    state: Annotated[
        list[str] | None,
        Query(description="Only commands in these server states (repeat or comma-separate)."),
    ] = None,
    order: Annotated[
        Literal["oldest", "newest"],
        Query(description="oldest (first created first, the default) or newest first."),
    ] = "oldest",
) -> CommandPage:
    """Commands in the order they were created; `order=newest&limit=N` gives the newest N."""
    states = [part.strip().upper() for s in state or [] for part in s.split(",") if part.strip()]
    unknown = [s for s in states if s not in CommandState.__members__]
    if unknown:
        raise InvalidInput(
            f"state: unknown {', '.join(unknown)}; one of {', '.join(CommandState.__members__)}"
        )

    def tx() -> CommandPage:
        with work.read() as conn:
            vm_uuid = None
            if vm is not None:
                found = vms.find_by_uuid(conn, vm)
                vm_uuid = found.uuid if found else _uuid_of_name(conn, vm)
            page = commands.list_page(
                conn,
                limit=limit,
                cursor=cursor,
                node=node,
                vm_uuid=vm_uuid,
                states=states or None,
                newest_first=order == "newest",
            )
        return CommandPage(
            items=[CommandOut.of(c) for c in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


def _uuid_of_name(conn: Connection, name: str) -> str:
    try:
        return vms.get(conn, name).uuid
    except NotFound:
        # Commands outlive their VM (a deleted VM's commands are still listed by uuid).
        return name


@router.get("/{command_id}", response_model=CommandOut)
async def show_command(command_id: Id, work: WorkDep) -> CommandOut:
    """One command: both states, the answer, times, attempts and every transition."""

    def tx() -> CommandOut:
        with work.read() as conn:
            return CommandOut.of(
                commands.get(conn, command_id, with_history=True), with_history=True
            )

    return await work.run(tx)
