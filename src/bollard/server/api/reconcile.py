"""/api/v1/reconcile: the differences between the database and the hosts, and their fixes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bollard.domain.drift import ALL_CLASSES, DriftClass
from bollard.domain.errors import NotFound
from bollard.domain.storage_drift import auto_fix
from bollard.server.api.deps import DriftDep, SettingsDep, WorkDep
from bollard.server.api.schemas import Name
from bollard.server.ports import DriftScan, SettingsReader, UnitOfWork
from bollard.store import host_vms, nodes, vms

router = APIRouter(prefix="/reconcile", tags=["reconcile"])

NodeQ = Annotated[Name | None, Query(description="Only differences on this node.")]
VmQ = Annotated[Name | None, Query(description="Only differences of this VM (name or uuid).")]


class ScanOut(BaseModel):
    differences: list[dict[str, Any]] = Field(
        description="Each difference: `class`, `node`, `vm`, `uuid`, `volume`, `pool`, `file` "
        "(the last three for the storage classes), `record`, `host`, `detail`, `data`, and "
        "`auto`: what the server does about it by itself (`fix` or `report`)."
    )
    counts: dict[str, int]
    checked_vms: int
    checked_nodes: int
    checked_volumes: int = Field(
        0, description="Volumes checked against their pools' files (0: not looked at)."
    )
    silent_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts that did not list their pools' files in time: nothing is claimed "
        "about their files.",
    )
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
    values = await work.run(settings.all)
    policies = {c.value: str(values[f"reconcile.auto.{c.value}"]) for c in ALL_CLASSES}
    counts = {c.value: 0 for c in ALL_CLASSES}
    differences = []
    for d in scan.differences:
        counts[d.kind.value] += 1
        auto = "fix" if auto_fix(d, policies[d.kind.value]) else "report"
        differences.append(d.to_dict() | {"auto": auto})
    return ScanOut(
        differences=differences,
        counts=counts,
        checked_vms=scan.vms,
        checked_nodes=scan.nodes,
        # (Not in ports.DriftScan yet: requested, /work/tmp/requests-sreconcile.md.)
        checked_volumes=scan.volumes,
        silent_hosts=list(scan.silent_hosts),
        seconds=round(scan.seconds, 6),
        scanned_in=scan.scanned_in,
        policies=policies,
    )


@router.get("", response_model=ScanOut)
async def scan(
    work: WorkDep, settings: SettingsDep, drift: DriftDep, node: NodeQ = None, vm: VmQ = None
) -> ScanOut:
    """Compare every VM record with what its host reports, and every host's VMs with the
    records, now; and every volume record with its pool's files on the hosts (asked now),
    and every file with the records; and which VM holds each SR-IOV VF with the VM its host
    says uses it. The differences by class (stale, orphan, power, spec, pending, lost,
    resize, volume-missing, volume-orphan, volume-stuck, volume-size, vf-unrecorded,
    vf-conflict, vf-mismatch, vf-leaked)."""
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
