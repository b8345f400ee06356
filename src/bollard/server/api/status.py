"""/api/v1/status"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from bollard import __version__
from bollard.domain.states import TaskState, VmState
from bollard.domain.status import derive_status
from bollard.server.api.deps import DbKindDep, NodeOpsDep, WaiterDep, WorkDep
from bollard.server.api.schemas import Counts, StatusOut, VmCounts
from bollard.server.api.servers import read_servers, server_counts
from bollard.store import nodes, vms

router = APIRouter(tags=["status"])


@router.get("/status", response_model=StatusOut)
async def status(
    work: WorkDep, waiter: WaiterDep, db_kind: DbKindDep, node_ops: NodeOpsDep
) -> StatusOut:
    maintenance = await node_ops.maintenance()

    def tx() -> StatusOut:
        with work.read() as conn:
            all_nodes = nodes.list_all(conn)
            counts = vms.counts_by_state(conn)
            listing = read_servers(conn, None)
        by_status: Counter[str] = Counter()
        for vm_state, task_state, n in counts:
            task = TaskState(task_state) if task_state else None
            by_status[derive_status(VmState(vm_state), task).value] += n
        return StatusOut(
            version=__version__,
            database=db_kind,
            nodes=Counts(total=len(all_nodes), connected=sum(n.connected for n in all_nodes)),
            vms=VmCounts(total=sum(by_status.values()), by_status=dict(by_status)),
            tasks_running=len(waiter.running_ids()),
            maintenance=maintenance,
            servers=server_counts(listing),
        )

    return await work.run(tx)
