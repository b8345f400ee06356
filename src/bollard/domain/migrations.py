"""Migration records: every move of a VM between hosts (a migration, an HA restart) and every
resize, as Nova keeps them, with a whitelisted status table.

A resize's record also holds the source's resources while the VM waits in VERIFY_RESIZE
(`source_hold`, as Nova's Placement holds them with a migration consumer): the source keeps
its copy of the VM, stopped, and its disks, until the resize is confirmed (all of it goes)
or reverted (the VM returns to it, at its old size).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bollard.domain.flavors import FlavorRef


class MigrationType(StrEnum):
    MIGRATION = "migration"  # a shutdown migration (or a stopped VM's)
    LIVE = "live-migration"
    RESIZE = "resize"
    EVACUATION = "evacuation"  # an HA restart after a fence


class MigrationStatus(StrEnum):
    # migrations (and HA restarts)
    RUNNING = "running"
    COMPLETED = "completed"
    # resizes
    PRE_MIGRATING = "pre-migrating"  # claimed at the destination, nothing moved yet
    MIGRATING = "migrating"  # the guest is off and its disks are being copied
    POST_MIGRATING = "post-migrating"  # copied; being defined (and started) at the destination
    FINISHED = "finished"  # VERIFY_RESIZE: runs at the destination, the source keeps its copy
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    # every type
    FAILED = "failed"  # ended without effect (rolled back)
    ERROR = "error"  # ended in a state that needs a look (see its error)

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset(
    {
        MigrationStatus.COMPLETED,
        MigrationStatus.CONFIRMED,
        MigrationStatus.REVERTED,
        MigrationStatus.FAILED,
        MigrationStatus.ERROR,
    }
)
_FAILING = frozenset({MigrationStatus.FAILED, MigrationStatus.ERROR})
# A finished resize with an error (its confirm or revert failed) is still finished: confirm
# or revert may be asked again.

MIGRATION_TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    MigrationStatus.RUNNING: frozenset({MigrationStatus.COMPLETED}) | _FAILING,
    MigrationStatus.PRE_MIGRATING: frozenset({MigrationStatus.MIGRATING}) | _FAILING,
    MigrationStatus.MIGRATING: frozenset({MigrationStatus.POST_MIGRATING}) | _FAILING,
    MigrationStatus.POST_MIGRATING: frozenset({MigrationStatus.FINISHED}) | _FAILING,
    MigrationStatus.FINISHED: frozenset(
        {MigrationStatus.CONFIRMING, MigrationStatus.REVERTING, MigrationStatus.CONFIRMED}
    ),
    # A confirm or revert that fails before it changed anything leaves the resize finished.
    MigrationStatus.CONFIRMING: frozenset(
        {MigrationStatus.CONFIRMED, MigrationStatus.FINISHED, MigrationStatus.ERROR}
    ),
    MigrationStatus.REVERTING: frozenset(
        {MigrationStatus.REVERTED, MigrationStatus.FINISHED, MigrationStatus.ERROR}
    ),
    MigrationStatus.COMPLETED: frozenset(),
    MigrationStatus.CONFIRMED: frozenset(),
    MigrationStatus.REVERTED: frozenset(),
    MigrationStatus.FAILED: frozenset(),
    MigrationStatus.ERROR: frozenset(),
}


def migration_allowed(src: MigrationStatus, dst: MigrationStatus) -> bool:
    return src is dst or dst in MIGRATION_TRANSITIONS[src]


@dataclass(frozen=True)
class Hold:
    """Resources a node keeps allocated for a migration record."""

    node: str
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class Migration:
    id: str
    vm_uuid: str
    vm_name: str
    type: MigrationType
    source: str | None
    dest: str | None
    status: MigrationStatus
    task_id: str | None
    old_flavor: FlavorRef | None
    new_flavor: FlavorRef | None
    source_hold: Hold | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def same_node(self) -> bool:
        return self.source is not None and self.source == self.dest
