"""/api/v1/status"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from bollard import __version__
from bollard.domain.states import TaskState, VmState
from bollard.domain.status import derive_status
from bollard.server.api.deps import DbKindDep, WaiterDep, WorkDep
from bollard.server.api.schemas import Counts, StatusOut, VmCounts
from bollard.server.api.servers import read_servers, server_counts
from bollard.server.operations.node_ops import MAINTENANCE
from bollard.server.settings import stored_value
from bollard.store import nodes, vms
from bollard.store import settings as stored_settings

router = APIRouter(tags=["status"])


@router.get("/status", response_model=StatusOut)
async def status(work: WorkDep, waiter: WaiterDep, db_kind: DbKindDep) -> StatusOut:
    # One pass through the thread pool: maintenance mode is read in the same transaction
    # (as `NodeOperations.maintenance` reads it: the stored setting, no cache).
    def tx() -> StatusOut:
        with work.read() as conn:
            maintenance = bool(stored_value(MAINTENANCE, stored_settings.get(conn, MAINTENANCE)))
            node_count, connected = nodes.counts(conn)
            counts = vms.counts_by_state(conn)
            listing = read_servers(conn, None, agents=False)
        by_status: Counter[str] = Counter()
        for vm_state, task_state, n in counts:
            task = TaskState(task_state) if task_state else None
            by_status[derive_status(VmState(vm_state), task).value] += n
        return StatusOut(
            version=__version__,
            database=db_kind,
            nodes=Counts(total=node_count, connected=connected),
            vms=VmCounts(total=sum(by_status.values()), by_status=dict(by_status)),
            tasks_running=len(waiter.running_ids()),
            maintenance=maintenance,
            servers=server_counts(listing),
        )

    return await work.run(tx)
