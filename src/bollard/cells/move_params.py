"""The parameters of the API server's tasks that move a VM between cells."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bollard.server.tasks.params import TaskParams


class MoveParams(TaskParams):
    """A cross-cell move: the VM as its source cell had it when it was asked (`record`: what
    the target cell is given, at the new size for a resize), where it goes, and how it was."""

    migration_id: str
    kind: Literal["resize", "migrate"]
    vm: str
    uuid: str
    source_cell: str
    source_node: str
    target_cell: str
    target_node: str
    was_running: bool
    record: dict[str, Any] = Field(description="POST /vms/import of the target cell")
    grow_root_mb: int | None = None  # a resize whose flavor's root disk is larger
    image: str  # the disks' image: in the source's spool, the API store, the target's spool


class MoveEndParams(TaskParams):
    """Confirm or revert a cross-cell move that waits in VERIFY_RESIZE."""

    migration_id: str
    vm: str
    uuid: str
    source_cell: str
    target_cell: str
    was_running: bool
    image: str
