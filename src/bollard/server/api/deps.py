"""Dependencies shared by the routers: the runtime and the admin-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bollard.domain.errors import Unauthorized
from bollard.server.auth import same_hash
from bollard.server.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="The admin token (`<data-dir>/admin.token`).")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def require_admin(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing token: send `Authorization: Bearer <token>`")
    rt: Runtime = request.app.state.runtime
    if not same_hash(creds.credentials, rt.admin_token_hash):
        raise Unauthorized("invalid token")


RuntimeDep = Annotated[Runtime, Depends(runtime)]
