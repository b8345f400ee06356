"""/api/v1/reconcile: the differences between the database and the hosts, and their fixes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bollard.domain.drift import ALL_CLASSES, DriftClass
from bollard.domain.errors import NotFound
from bollard.server.api.deps import DriftDep, SettingsDep, WorkDep
from bollard.server.api.schemas import Name
from bollard.server.ports import DriftScan, SettingsReader, UnitOfWork
from bollard.store import host_vms, nodes, vms

router = APIRouter(prefix="/reconcile", tags=["reconcile"])

NodeQ = Annotated[Name | None, Query(description="Only differences on this node.")]
VmQ = Annotated[Name | None, Query(description="Only differences of this VM (name or uuid).")]


class ScanOut(BaseModel):
    differences: list[dict[str, Any]]
    counts: dict[str, int]
    checked_vms: int
    checked_nodes: int
    seconds: float = Field(description="How long the detection pass took.")
    scanned_in: str = Field(
        description="Where it read and classified: `thread` (of the server) or `process` "
        "(the scan worker; see `bollard server --reconcile-scan`)."
    )
    policies: dict[str, str] = Field(description="reconcile.auto.<class> in force.")


class FixRequest(BaseModel):
    classes: list[DriftClass] = Field(min_length=1, description="The classes to fix.")
    node: Name | None = None
    vm: Name | None = None


class FixOut(BaseModel):
    fixed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    remaining: ScanOut


async def _check_node(work: UnitOfWork, node: str | None) -> None:
    if node is None:
        return

    def tx() -> None:
        with work.read() as conn:
            nodes.get(conn, node)

    await work.run(tx)


async def _out(work: UnitOfWork, settings: SettingsReader, scan: DriftScan) -> ScanOut:
    policies = await work.run(settings.all)
    counts = {c.value: 0 for c in ALL_CLASSES}
    for d in scan.differences:
        counts[d.kind.value] += 1
    return ScanOut(
        differences=[d.to_dict() for d in scan.differences],
        counts=counts,
        checked_vms=scan.vms,
        checked_nodes=scan.nodes,
        seconds=round(scan.seconds, 6),
        scanned_in=scan.scanned_in,
        policies={c.value: str(policies[f"reconcile.auto.{c.value}"]) for c in ALL_CLASSES},
    )


@router.get("", response_model=ScanOut)
async def scan(
    work: WorkDep, settings: SettingsDep, drift: DriftDep, node: NodeQ = None, vm: VmQ = None
) -> ScanOut:
    """Compare every VM record with what its host reports, and every host's VMs with the
    records, now; the differences by class (stale, orphan, power, spec, pending, lost)."""
    await _check_node(work, node)
    result = await drift.scan(node=node, vm=vm)
    if vm is not None and not result.differences:
        await _check_vm_known(work, vm)
    return await _out(work, settings, result)


async def _check_vm_known(work: UnitOfWork, vm: str) -> None:
    """A VM that is neither in the database nor on any host is a typo, not 'no difference'."""

    def tx() -> bool:
        with work.read() as conn:
            if vms.find_by_uuid(conn, vm) is not None:
                return True
            try:
                vms.get(conn, vm)
                return True
            except NotFound:
                return any(e.name == vm or e.uuid == vm for e in host_vms.all_entries(conn))

    if not await work.run(tx):
        raise NotFound(f"no VM {vm!r} in the database or on any host")


@router.post("/fix", response_model=FixOut)
async def fix(body: FixRequest, work: WorkDep, settings: SettingsDep, drift: DriftDep) -> FixOut:
    """Fix the differences of the given classes (optionally on one node or of one VM).
    Every fix is recorded as a `reconcile.fixed` or `reconcile.fix_failed` event."""
    await _check_node(work, body.node)
    report, after = await drift.fix(set(body.classes), node=body.node, vm=body.vm)
    out = report.to_dict()
    return FixOut(
        fixed=out["fixed"], failed=out["failed"], remaining=await _out(work, settings, after)
    )
