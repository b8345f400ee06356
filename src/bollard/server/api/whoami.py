"""/api/v1/whoami: who the caller is and what it may do (the console hides what it may not)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from bollard.domain.policy import POLICY, allowed
from bollard.server.api.deps import IdentityDep

router = APIRouter(tags=["users"])


class WhoAmI(BaseModel):
    actor: str = Field(description="The name events and tasks record for this caller.")
    user: str
    role: str
    token_id: str | None = Field(description="The API token's id (null: the admin token).")
    permissions: list[str] = Field(
        description="Every action of the policy table this caller's role may do."
    )


@router.get("/whoami", response_model=WhoAmI)
async def whoami(me: IdentityDep) -> WhoAmI:
    """The caller's user, role and permissions (any valid token may ask)."""
    return WhoAmI(
        actor=me.actor,
        user=me.user,
        role=me.role.value,
        token_id=me.token_id,
        permissions=sorted(action for action in POLICY if allowed(me.role, action)),
    )
