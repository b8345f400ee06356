"""/api/v1/vms/{name}/migrate/candidates: where the scheduler would send a VM, and why not
elsewhere (the console's migrate target picker, `bollard vm candidates`)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bollard.server.api.deps import MigrateOpsDep
from bollard.server.api.schemas import Name

router = APIRouter(prefix="/vms", tags=["vms"])


class Candidate(BaseModel):
    node: str
    score: float | None = Field(description="The selector's score (for the selector's order).")


class Rejection(BaseModel):
    node: str
    reason: str


class CandidatesOut(BaseModel):
    vm: str
    selector: str = Field(description="The selector that ranked the nodes.")
    chosen: str | None = Field(description="The node a migration without --to would take.")
    ranking: list[Candidate] = Field(description="Nodes that can take the VM, best first.")
    rejected: list[Rejection] = Field(description="Nodes that cannot, with why.")


@router.get("/{name}/migrate/candidates", response_model=CandidatesOut)
async def migrate_candidates(name: Name, migrate_ops: MigrateOpsDep) -> CandidatesOut:
    """The scheduler's view of a migration of this VM now, without starting one. 409 when the
    VM is on no node."""
    decision = await migrate_ops.candidates(name)
    return CandidatesOut(
        vm=name,
        selector=decision.selector.value,
        chosen=decision.chosen,
        ranking=[Candidate(node=n, score=s) for n, s in decision.ranking],
        rejected=[Rejection(node=n, reason=r) for n, r in sorted(decision.rejected.items())],
    )
