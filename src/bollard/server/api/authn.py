"""Authentication and authorization of API calls, before their bodies are read.

A pure ASGI middleware in front of HTTP requests to /api/v1/* and /metrics (WebSockets
authenticate their own callers, as `WEBSOCKET_AUTH` says, and so do the agents' HTTP routes
under /api/v1/agent/, as `NODE_TOKEN_AUTH` says). It reads the caller's
`Authorization: Bearer` header and nothing else of the request:

- the admin token of the first start (`<data-dir>/admin.token`) acts as the built-in user
  `admin` (role admin): one hash comparison, no database read;
- any other token is looked up by its SHA-256 hash (in a worker thread) and refused at once
  with 401 if it is unknown, expired or revoked;
- a caller whose role is not admin is then checked against the policy table (domain/policy.py)
  through `ROUTE_ACTIONS`, which maps every route to one action: 403 when its role lacks it.

A refused request is answered without reading its body. An allowed one continues with the
caller's `Identity` (and its actor's name, for the access log) in the ASGI scope, and with the
current actor (domain/actors.py) set, so every event and task the call causes names it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bollard.domain import actors
from bollard.domain.errors import Unauthorized
from bollard.domain.policy import (
    ADMIN_TOKEN_IDENTITY,
    POLICY,
    READ,
    Identity,
    Role,
    allowed,
    refusal,
)
from bollard.domain.protocol import AGENT_PATH, AGENT_TUNNEL_PATH
from bollard.server.api.access_log import ACTOR_SCOPE_KEY
from bollard.server.api.console_vnc import CONSOLE_VNC_PATH
from bollard.server.api.deps import ACTION_KEY, IDENTITY_KEY, MISSING_TOKEN, CoreServices
from bollard.server.auth import Authenticator

API_PREFIX = "/api/v1"
PROTECTED = ("/metrics",)  # besides everything under API_PREFIX
AGENT_HTTP_PREFIX = API_PREFIX + "/agent/"  # agents' HTTP routes: not users' (NODE_TOKEN_AUTH)

# Every route of the app -> the action (domain/policy.py) a call of it needs. A route missing
# here is refused to everyone but admins (and tests/unit/test_policy.py fails).
ROUTE_ACTIONS: dict[str, str] = {
    "GET /metrics": READ,
    "GET /api/v1/status": READ,
    "GET /api/v1/servers": READ,
    # nodes
    "GET /api/v1/nodes": READ,
    "POST /api/v1/nodes": "node.enroll",
    "GET /api/v1/nodes/{name}": READ,
    "DELETE /api/v1/nodes/{name}": "node.delete",
    "PATCH /api/v1/nodes/{name}": "node.update",
    "POST /api/v1/nodes/{name}/token": "node.token",
    "PUT /api/v1/nodes/{name}/power": "node.power",
    "POST /api/v1/nodes/{name}/power/{action}": "node.power",
    "POST /api/v1/nodes/{name}/confirm-down": "node.confirm_down",
    "POST /api/v1/nodes/{name}/flush": "node.flush",
    "POST /api/v1/nodes/{name}/unflush": "node.flush",
    "POST /api/v1/nodes/{name}/maintenance": "node.flush",
    "GET /api/v1/nodes/{name}/sriov": READ,
    "PATCH /api/v1/nodes/{name}/sriov/{pf}/vfs/{vf}": "node.sriov",
    "GET /api/v1/cluster/maintenance": READ,
    "PUT /api/v1/cluster/maintenance": "cluster.maintenance",
    # VMs
    "GET /api/v1/vms": READ,
    "POST /api/v1/vms": "vm.create",
    "POST /api/v1/vms/batch": "vm.create",
    "GET /api/v1/vms/{name}": READ,
    "PATCH /api/v1/vms/{name}": "vm.update",
    "DELETE /api/v1/vms/{name}": "vm.delete",
    "POST /api/v1/vms/{name}/start": "vm.power",
    "POST /api/v1/vms/{name}/stop": "vm.power",
    "POST /api/v1/vms/{name}/shutdown": "vm.power",
    "POST /api/v1/vms/{name}/restart": "vm.power",
    "POST /api/v1/vms/{name}/migrate": "vm.migrate",
    "POST /api/v1/vms/{name}/move": "vm.migrate",
    "POST /api/v1/vms/{name}/unmigrate": "vm.migrate",
    "GET /api/v1/vms/{name}/console": "vm.console",
    "POST /api/v1/vms/{name}/console/vnc": "vm.console",
    "GET /api/v1/vms/{name}/migrate/candidates": READ,
    "POST /api/v1/vms/{name}/resize": "vm.resize",
    "POST /api/v1/vms/{name}/resize/confirm": "vm.resize",
    "POST /api/v1/vms/{name}/resize/revert": "vm.resize",
    "POST /api/v1/vms/import": "cell.member",
    "POST /api/v1/vms/{name}/hide": "cell.member",
    "POST /api/v1/vms/{name}/unhide": "cell.member",
    "POST /api/v1/placement/candidates": "cell.member",
    "GET /api/v1/vms/{name}/actions": READ,
    "GET /api/v1/vms/{name}/actions/{request_id}": READ,
    # HA groups and affinity rules (api/ha.py)
    "GET /api/v1/ha/groups": READ,
    "POST /api/v1/ha/groups": "ha.manage",
    "GET /api/v1/ha/groups/{name}": READ,
    "PATCH /api/v1/ha/groups/{name}": "ha.manage",
    "DELETE /api/v1/ha/groups/{name}": "ha.manage",
    "GET /api/v1/ha/rules": READ,
    "POST /api/v1/ha/rules": "ha.manage",
    "GET /api/v1/ha/rules/{name}": READ,
    "PATCH /api/v1/ha/rules/{name}": "ha.manage",
    "DELETE /api/v1/ha/rules/{name}": "ha.manage",
    # flavors and migration records
    "GET /api/v1/flavors": READ,
    "POST /api/v1/flavors": "flavor.manage",
    "GET /api/v1/flavors/{name}": READ,
    "PATCH /api/v1/flavors/{name}": "flavor.manage",
    "PUT /api/v1/flavors/{name}": "flavor.manage",
    "DELETE /api/v1/flavors/{name}": "flavor.manage",
    "GET /api/v1/migrations": READ,
    "GET /api/v1/migrations/{migration_id}": READ,
    # storage
    "GET /api/v1/pools": READ,
    "POST /api/v1/pools": "pool.manage",
    "GET /api/v1/pools/{name}": READ,
    "PATCH /api/v1/pools/{name}": "pool.manage",
    "DELETE /api/v1/pools/{name}": "pool.manage",
    "GET /api/v1/volumes": READ,
    "POST /api/v1/volumes": "volume.manage",
    "GET /api/v1/volumes/{name}": READ,
    "DELETE /api/v1/volumes/{name}": "volume.manage",
    "POST /api/v1/volumes/{name}/grow": "volume.manage",
    "POST /api/v1/volumes/{name}/attach": "volume.manage",
    "POST /api/v1/volumes/{name}/detach": "volume.manage",
    "POST /api/v1/volumes/{name}/copy": "volume.manage",
    "POST /api/v1/volumes/{name}/migrate": "volume.manage",
    "GET /api/v1/volumes/{name}/snapshots": READ,
    "POST /api/v1/volumes/{name}/snapshots": "volume.manage",
    "DELETE /api/v1/volumes/{name}/snapshots/{snapshot}": "volume.manage",
    "POST /api/v1/volumes/{name}/snapshots/{snapshot}/revert": "volume.manage",
    # tasks, commands, events, reconciliation
    "GET /api/v1/tasks": READ,
    "GET /api/v1/tasks/{task_id}": READ,
    "GET /api/v1/tasks/{task_id}/wait": READ,
    "POST /api/v1/tasks/{task_id}/cancel": "task.cancel",
    "GET /api/v1/commands": READ,
    "GET /api/v1/commands/{command_id}": READ,
    "GET /api/v1/events": READ,
    "GET /api/v1/events/stream": READ,
    "GET /api/v1/reconcile": READ,
    "POST /api/v1/reconcile/fix": "reconcile.fix",
    # settings
    "GET /api/v1/settings": READ,
    "GET /api/v1/settings/{key}": READ,
    "PUT /api/v1/settings/{key}": "settings.write",
    # users and API tokens (the routers check whose tokens: token.manage for others')
    "GET /api/v1/users": READ,
    "POST /api/v1/users": "user.manage",
    "GET /api/v1/users/{name}": READ,
    "DELETE /api/v1/users/{name}": "user.manage",
    "GET /api/v1/tokens": READ,
    "POST /api/v1/tokens": "token.own",
    "POST /api/v1/tokens/{token_id}/revoke": "token.own",
    "GET /api/v1/whoami": READ,
    # cells (an API server in front of cells: bollard/cells/)
    "GET /api/v1/cells": READ,
    "POST /api/v1/cells": "cell.manage",
    "GET /api/v1/cells/{name}": READ,
    "PATCH /api/v1/cells/{name}": "cell.manage",
    "DELETE /api/v1/cells/{name}": "cell.manage",
    # a cell's image spool, and VMs exported to it or made from it (api/images.py)
    "GET /api/v1/images/{image}": "image.manage",
    "DELETE /api/v1/images/{image}": "image.manage",
    "GET /api/v1/images/{image}/{disk}": "image.manage",
    "PUT /api/v1/images/{image}/{disk}": "image.manage",
    "POST /api/v1/vms/{name}/export": "image.manage",
    "POST /api/v1/vms/{name}/spawn": "image.manage",
}

# The app's WebSocket routes, which this middleware does not see (it checks HTTP requests
# only): each authenticates its own callers, as said here (tests/unit/test_policy.py checks
# that every WebSocket route of the app is listed).
WEBSOCKET_AUTH: dict[str, str] = {
    AGENT_PATH: "the node's token (the gateway, server/gateway.py)",
    AGENT_TUNNEL_PATH: "the node's token, and only the node asked (server/consoles.py)",
    CONSOLE_VNC_PATH: "a single-use ticket from POST /api/v1/vms/{name}/console/vnc "
    "(action vm.console), in the query (api/console_vnc.py)",
}

# The agents' HTTP routes (under AGENT_HTTP_PREFIX), which this middleware lets through: each
# authenticates its caller by the node's token, as the agents' WebSocket does.
NODE_TOKEN_AUTH: dict[str, str] = {
    "GET /api/v1/agent/images/{image}/{disk}": "the node's token (api/images.py)",
    "PUT /api/v1/agent/images/{image}/{disk}": "the node's token (api/images.py)",
}


@dataclass(frozen=True)
class _Rule:
    method: str
    pattern: re.Pattern[str]
    action: str


class RouteActions:
    """`ROUTE_ACTIONS` compiled: the action a request's method and path need (None: no
    route of the table matches; the router then answers 404 or 405)."""

    def __init__(self, table: dict[str, str]) -> None:
        self._rules: dict[str, list[_Rule]] = {}
        for key, action in table.items():
            method, path = key.split(" ", 1)
            if action not in POLICY:
                raise ValueError(f"{key}: {action!r} is not an action of the policy table")
            rule = _Rule(method, compile_path(path)[0], action)
            self._rules.setdefault(method, []).append(rule)

    def action(self, method: str, path: str) -> str | None:
        for rule in self._rules.get(method, ()):
            if rule.pattern.match(path):
                return rule.action
        return None


def protected(path: str) -> bool:
    if path.startswith(AGENT_HTTP_PREFIX):
        return False  # the agents' routes check node tokens themselves (NODE_TOKEN_AUTH)
    return path in PROTECTED or path == API_PREFIX or path.startswith(API_PREFIX + "/")


class Authentication:
    """The middleware (see the module docstring). `services` gives the database, the clock
    and the admin token's hash."""

    def __init__(
        self, app: ASGIApp, *, services: CoreServices, table: dict[str, str] | None = None
    ) -> None:
        self.app = app
        self.authenticator = Authenticator(
            work=services.work, clock=services.clock, admin_token_hash=services.admin_token_hash
        )
        self.routes = RouteActions(ROUTE_ACTIONS if table is None else table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets pass: each authenticates its own callers (WEBSOCKET_AUTH).
        if scope["type"] != "http" or not protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        try:
            if token is None:
                raise Unauthorized(MISSING_TOKEN)
            identity = on_behalf_of(scope, await self.authenticator.identify(token))
        except Unauthorized as exc:
            await _answer(scope, send, 401, "unauthorized", exc.message, bearer=True)
            return
        scope[ACTOR_SCOPE_KEY] = identity.actor
        if identity.role is not Role.ADMIN:
            action = self.routes.action(scope["method"], scope["path"])
            if action is not None:
                if not allowed(identity.role, action):
                    what = f"{scope['method']} {scope['path']}"
                    await _answer(scope, send, 403, "forbidden", refusal(identity, action, what))
                    return
                scope[ACTION_KEY] = action
        scope[IDENTITY_KEY] = identity
        request_id = _request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with actors.acting_as(identity.actor), actors.serving(request_id):
            await self.app(scope, receive, send_with_id)


# A cell's API server calls the cell with the cell's admin token and names, in these headers,
# the user it acts for: the call then acts as that user, with that role (checked against the
# policy table here again) and its events and tasks name the user. Only the admin token may
# speak for another user, so nothing is gained by sending them with any other token.
ON_BEHALF_OF_HEADER = b"x-bollard-on-behalf-of"
ROLE_HEADER = b"x-bollard-role"
TOKEN_ID_HEADER = b"x-bollard-token-id"


def on_behalf_of(scope: Scope, identity: Identity) -> Identity:
    """The identity the call acts as: the user named by ON_BEHALF_OF_HEADER when the caller
    holds the admin token of the first start, else `identity` (the headers ignored)."""
    if identity != ADMIN_TOKEN_IDENTITY:
        return identity
    named = {n: bytes(v).decode("latin-1").strip() for n, v in scope.get("headers", ())}
    user = named.get(ON_BEHALF_OF_HEADER)
    if not user:
        return identity
    try:
        role = Role(named.get(ROLE_HEADER, ""))
    except ValueError:
        raise Unauthorized(f"{ROLE_HEADER.decode()}: not a role") from None
    return Identity(actor=user, user=user, role=role, token_id=named.get(TOKEN_ID_HEADER) or None)


# Every API call has a request id: the client's X-Request-Id when it is a sane one, else a new
# `req-<uuid>`; answered in the same header, and kept by the tasks the call creates (a VM's
# actions are named by it, as Nova's are).
REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            given = bytes(value).decode("latin-1").strip()
            if _REQUEST_ID.match(given):
                return given
    return f"req-{uuid.uuid4()}"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return None
            return credentials.strip()
    return None


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _answer(
    scope: Scope, send: Send, status: int, code: str, message: str, *, bearer: bool = False
) -> None:
    """An error answer, sent without reading the request's body (and the connection closed
    after it when the request has one, so the server need not read it either)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if bearer:
        headers.append((b"www-authenticate", b"Bearer"))
    if _has_body(scope):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
