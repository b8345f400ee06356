"""/api/v1/tokens: API tokens of users.

A token is shown once, when it is created; only its SHA-256 hash is stored. A token may have a
narrower role than its user's, never a wider one, and nobody can create a token with more
power than the call creating it has. Creating and revoking one's own tokens needs `token.own`
(operator, admin); anyone may list their own; other users' tokens need `token.manage`
(admin). A revoked or expired token is refused at once, and stays listed with its state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from bollard.domain.errors import InvalidInput
from bollard.domain.ids import new_id
from bollard.domain.policy import ApiToken, Forbidden, Identity, Role, TokenState, allowed
from bollard.server.api.deps import ClockDep, EventsDep, IdentityDep, WorkDep
from bollard.server.api.params import Id, Text
from bollard.server.api.schemas import Name
from bollard.server.auth import hash_token, new_token
from bollard.store import api_tokens, events, users
from bollard.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/tokens", tags=["tokens"])

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600  # ten years, in seconds
MANAGE = "token.manage"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
UserFilter = Annotated[
    Name | None,
    Query(description="Only this user's (default: yours, or everyone's with token.manage)."),
]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: Name | None = Field(default=None, description="Whose token (default: the caller's).")
    role: Role | None = Field(
        default=None, description="A narrower role than the user's (default: the user's)."
    )
    description: Text | None = Field(default=None, max_length=200, description="What it is for.")
    expires_in: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EXPIRES_IN,
        description="Seconds from now until it expires (default: never).",
    )


class TokenOut(BaseModel):
    id: str
    user: str
    role: Role = Field(description="The role it acts with (its own, or its user's).")
    description: str | None
    state: TokenState
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")

    @classmethod
    def of(cls, token: ApiToken, now: datetime) -> TokenOut:
        return cls(
            id=token.id,
            user=token.user,
            role=token.effective_role,
            description=token.description,
            state=token.state(now),
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown only this once.")


class TokenPage(BaseModel):
    items: list[TokenOut]
    next_cursor: str | None
    total: int


def _others(me: Identity, user: str, what: str) -> None:
    """Tokens of another user need token.manage."""
    if user != me.user:
        me.require(MANAGE, what)


@router.post("", status_code=201, response_model=TokenCreated)
async def create_token(
    body: TokenCreate, me: IdentityDep, work: WorkDep, clock: ClockDep, feed: EventsDep
) -> TokenCreated:
    """Create an API token (shown only in this answer)."""
    user_name = body.user or me.user
    _others(me, user_name, f"creating a token for user {user_name!r}")
    secret = new_token()

    def tx() -> TokenCreated:
        now = clock.now()
        with work.write() as conn:
            user = users.get(conn, user_name)
            if body.role is not None and not user.role.covers(body.role):
                raise InvalidInput(
                    f"role: a token's role may not exceed its user's ({user.name} is "
                    f"{user.role.value}, {body.role.value} asked)"
                )
            role = body.role or user.role
            if not me.role.covers(role):
                raise Forbidden(
                    f"a token with role {role.value} needs that role to create; "
                    f"{me.describe()} has role {me.role.value} (ask for --role {me.role.value})"
                )
            expires = None if body.expires_in is None else now + timedelta(seconds=body.expires_in)
            token = api_tokens.create(
                conn, id=new_id(), user=user.name, token_hash=hash_token(secret),
                role=body.role, description=body.description, expires_at=expires, now=now,
            )  # fmt: skip
            until = f", expires {expires.isoformat(timespec='seconds')}" if expires else ""
            events.add(conn, "token.created",
                       f"API token {token.id} created for user {user.name} "
                       f"(role {token.effective_role.value}{until})", now,
                       data={"token": token.id, "user": user.name,
                             "role": token.effective_role.value})  # fmt: skip
            out = TokenOut.of(token, now)
        return TokenCreated(**out.model_dump(), token=secret)

    created = await work.run(tx)
    feed.touch()
    return created


@router.get("", response_model=TokenPage)
async def list_tokens(
    me: IdentityDep,
    work: WorkDep,
    clock: ClockDep,
    user: UserFilter = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> TokenPage:
    """API tokens (never the tokens themselves), oldest first."""
    if user is None and not allowed(me.role, MANAGE):
        user = me.user
    if user is not None:
        _others(me, user, f"listing the tokens of user {user!r}")

    def tx() -> TokenPage:
        now = clock.now()
        with work.read() as conn:
            if user is not None:
                users.get(conn, user)  # 404 for an unknown user
            page = api_tokens.list_page(conn, limit=limit, cursor=cursor, user=user)
        return TokenPage(
            items=[TokenOut.of(t, now) for t in page.items],
            next_cursor=page.next_cursor,
            total=page.total,
        )

    return await work.run(tx)


@router.post("/{token_id}/revoke", response_model=TokenOut)
async def revoke_token(
    token_id: Id, me: IdentityDep, work: WorkDep, clock: ClockDep, feed: EventsDep
) -> TokenOut:
    """Revoke a token: refused at once from now on (revoking it again changes nothing)."""

    def tx() -> TokenOut:
        now = clock.now()
        with work.write() as conn:
            token = api_tokens.get(conn, token_id)
            _others(me, token.user, f"revoking token {token_id!r} of user {token.user!r}")
            if api_tokens.revoke(conn, token_id, now):
                events.add(conn, "token.revoked",
                           f"API token {token_id} of user {token.user} revoked", now,
                           data={"token": token_id, "user": token.user})  # fmt: skip
            return TokenOut.of(api_tokens.get(conn, token_id), now)

    out = await work.run(tx)
    feed.touch()
    return out
