"""/api/v1/users: who may use the API, each with a role (domain/policy.py).

Creating and deleting users needs `user.manage` (admin); every role may list and show them.
Deleting a user deletes its API tokens with it; the built-in `admin` (the user the admin
token of the first start acts as) cannot be deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.errors import Conflict, InvalidInput
from bollard.domain.policy import RESERVED_NAMES, Role, User
from bollard.server.api.deps import ClockDep, EventsDep, IdentityDep, WorkDep
from bollard.server.api.schemas import Name
from bollard.store import events, users
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/users", tags=["users"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    role: Role = Field(description="reader (every read), operator (VM and node operations) "
                       "or admin (everything).")  # fmt: skip


class UserOut(BaseModel):
    name: str
    role: Role
    builtin: bool = Field(description="The user the admin token of the first start acts as.")
    tokens: int = Field(description="API tokens of the user, in any state.")
    created_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, user: User, tokens: int) -> UserOut:
        return cls(
            name=user.name,
            role=user.role,
            builtin=user.builtin,
            tokens=tokens,
            created_at=user.created_at,
            created_by=user.created_by,
        )


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None
    total: int


class UserDeleted(BaseModel):
    name: str
    tokens_deleted: int = Field(description="API tokens deleted with the user.")


@router.post("", status_code=201, response_model=UserOut)
async def create_user(
    body: UserCreate, me: IdentityDep, work: WorkDep, clock: ClockDep, feed: EventsDep
) -> UserOut:
    """Create a user; give it API tokens with `POST /tokens`."""
    if body.name in RESERVED_NAMES:
        raise InvalidInput(f"name: {body.name!r} is reserved (it names the server's own actions)")

    def tx() -> UserOut:
        now = clock.now()
        with work.write() as conn:
            user = users.create(conn, body.name, body.role, now, created_by=me.actor)
            events.add(conn, "user.created", f"user {user.name} created with role {user.role}",
                       now, data={"user": user.name, "role": user.role.value})  # fmt: skip
        return UserOut.of(user, 0)

    out = await work.run(tx)
    feed.touch()
    return out


@router.get("", response_model=UserPage)
async def list_users(
    work: WorkDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> UserPage:
    def tx() -> UserPage:
        with work.read() as conn:
            page = users.list_page(conn, limit=limit, cursor=cursor)
            counts = users.token_counts(conn, [u.name for u in page.items])
        return UserPage(
            items=[UserOut.of(u, counts.get(u.name, 0)) for u in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.get("/{name}", response_model=UserOut)
async def show_user(name: Name, work: WorkDep) -> UserOut:
    def tx() -> UserOut:
        with work.read() as conn:
            user = users.get(conn, name)
            return UserOut.of(user, users.token_counts(conn, [name]).get(name, 0))

    return await work.run(tx)


@router.delete("/{name}", response_model=UserDeleted)
async def delete_user(name: Name, work: WorkDep, clock: ClockDep, feed: EventsDep) -> UserDeleted:
    """Delete a user and its API tokens (refused at once from then on)."""

    def tx() -> UserDeleted:
        now = clock.now()
        with work.write() as conn:
            if users.get(conn, name).builtin:
                raise Conflict(
                    f"user {name!r} is built in (the admin token of the first start acts as it) "
                    "and cannot be deleted"
                )
            tokens = users.delete_user(conn, name)
            events.add(conn, "user.deleted",
                       f"user {name} deleted with its {tokens} API token(s)", now,
                       data={"user": name, "tokens": tokens})  # fmt: skip
        return UserDeleted(name=name, tokens_deleted=tokens)

    out = await work.run(tx)
    feed.touch()
    return out
