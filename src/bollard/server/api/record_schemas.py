"""Bodies of the records of what happened to VMs: migration records (/api/v1/migrations),
instance actions (/api/v1/vms/{name}/actions) and a node's allocations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from bollard.domain.actions import Action
from bollard.domain.migrations import Migration
from bollard.domain.models import Page
from bollard.server.api.flavor_schemas import FlavorRefOut


class HoldOut(BaseModel):
    node: str
    vcpus: int
    memory_mb: int


class MigrationOut(BaseModel):
    id: str
    vm: str
    vm_uuid: str
    type: str = Field(description="migration, live-migration, resize or evacuation.")
    source: str | None
    dest: str | None
    status: str
    task_id: str | None
    old_flavor: FlavorRefOut | None
    new_flavor: FlavorRefOut | None
    source_hold: HoldOut | None = Field(
        description="What the source keeps allocated for a revert while a resize waits in "
        "VERIFY_RESIZE."
    )
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, m: Migration) -> MigrationOut:
        hold = m.source_hold
        return cls(
            id=m.id, vm=m.vm_name, vm_uuid=m.vm_uuid, type=m.type.value, source=m.source,
            dest=m.dest, status=m.status.value, task_id=m.task_id,
            old_flavor=FlavorRefOut.of(m.old_flavor) if m.old_flavor else None,
            new_flavor=FlavorRefOut.of(m.new_flavor) if m.new_flavor else None,
            source_hold=HoldOut(node=hold.node, vcpus=hold.vcpus, memory_mb=hold.memory_mb)
            if hold else None,
            error=m.error, created_at=m.created_at, updated_at=m.updated_at,
            finished_at=m.finished_at,
        )  # fmt: skip


class MigrationPage(BaseModel):
    items: list[MigrationOut]
    next_cursor: str | None
    total: int

    @classmethod
    def of(cls, page: Page) -> MigrationPage:
        return cls(
            items=[MigrationOut.of(m) for m in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )


class ActionEventOut(BaseModel):
    event: str = Field(description="The step of the operation.")
    start_time: datetime | None
    finish_time: datetime | None
    result: str = Field(description="success, error, running, pending, skipped or undone.")
    details: str | None


class ActionOut(BaseModel):
    request_id: str = Field(
        description="The API request that asked for it (X-Request-Id); req-<task id> for "
        "the server's own operations and tasks from before request ids."
    )
    action: str
    vm: str | None
    vm_uuid: str
    actor: str | None
    task_id: str
    start_time: datetime
    finish_time: datetime | None
    result: Literal["running", "success", "error"]
    message: str | None
    events: list[ActionEventOut] | None = Field(
        default=None, description="Its steps (when one action is asked for)."
    )

    @classmethod
    def of(cls, a: Action, *, with_events: bool = False) -> ActionOut:
        return cls(
            request_id=a.request_id, action=a.action, vm=a.vm_name, vm_uuid=a.vm_uuid,
            actor=a.actor, task_id=a.task_id, start_time=a.start_time,
            finish_time=a.finish_time, result=a.result,
            message=a.message,
            events=[
                ActionEventOut(event=e.event, start_time=e.start_time,
                               finish_time=e.finish_time, result=e.result, details=e.details)
                for e in a.events
            ] if with_events else None,
        )  # fmt: skip


class ActionList(BaseModel):
    items: list[ActionOut]
    total: int
