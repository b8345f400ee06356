"""The policy table, the route table that maps every API route to an action, and the
authentication middleware's refusals (before a request's body is read)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from starlette.routing import WebSocketRoute

from bollard.cells.assembly import PROXIED_METHODS, prepare_api
from bollard.cells.config import ApiConfig
from bollard.domain import actors
from bollard.domain.policy import (
    POLICY,
    ROLES,
    ApiToken,
    Identity,
    Role,
    TokenState,
    allowed,
    describe_roles,
    refusal,
)
from bollard.domain.protocol import AGENT_PATH
from bollard.server.api.authn import (
    ROUTE_ACTIONS,
    WEBSOCKET_AUTH,
    Authentication,
    RouteActions,
    protected,
)
from bollard.server.api.deps import ACTION_KEY, IDENTITY_KEY, ApiServices
from bollard.server.assembly import prepare
from bollard.server.auth import hash_token
from bollard.server.clock import SystemClock
from bollard.server.config import ServerConfig

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app as the server builds it (every router, every middleware)."""
    data = tmp_path_factory.mktemp("server")
    runtime = prepare(ServerConfig(data_dir=data, db_url=f"sqlite:///{data / 'b.db'}"))
    yield runtime.app()
    runtime.db.dispose()


def _http_routes(app: FastAPI) -> set[str]:
    found = set()
    for route in iter_route_contexts(app.routes):
        path, methods = route.path_format, route.methods
        if path is None or methods is None or not protected(path):
            continue
        found |= {f"{method} {path}" for method in methods if method != "HEAD"}
    return found


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app of the API server in front of cells (bollard/cells/)."""
    data = tmp_path_factory.mktemp("api")
    runtime = prepare_api(ApiConfig(data_dir=data, db_url=f"sqlite:///{data / 'a.db'}"))
    yield runtime.app()
    runtime.db.dispose()


def test_every_api_route_needs_an_action_of_the_policy_table(
    app: FastAPI, api_app: FastAPI
) -> None:
    routes = _http_routes(app)
    assert len(routes) > 40
    # The API server's own routes; the rest it sends to the cells, which check them again.
    own = _http_routes(api_app) - {f"{m} /api/v1/{{path}}" for m in PROXIED_METHODS}
    assert "POST /api/v1/cells" in own
    unmapped = sorted((routes | own) - ROUTE_ACTIONS.keys())
    assert unmapped == [], f"routes without an action in api/authn.py ROUTE_ACTIONS: {unmapped}"
    stale = sorted(ROUTE_ACTIONS.keys() - routes - own)
    assert stale == [], f"ROUTE_ACTIONS names routes the app does not have: {stale}"
    assert set(ROUTE_ACTIONS.values()) <= POLICY.keys()


def test_every_websocket_route_says_how_it_authenticates(app: FastAPI) -> None:
    """The middleware checks HTTP requests only: each WebSocket route authenticates its own
    callers (node tokens, console tickets) and is listed, with how, in WEBSOCKET_AUTH."""
    sockets = {r.path for r in app.routes if isinstance(r, APIWebSocketRoute | WebSocketRoute)}
    assert AGENT_PATH in sockets and "/console/vnc" in sockets
    assert sockets == WEBSOCKET_AUTH.keys(), "a WebSocket route missing from WEBSOCKET_AUTH?"
    # The console's route is outside /api/v1: a browser cannot send an Authorization header
    # with a WebSocket, its ticket is the credential (tests/api/test_console_vnc.py).
    assert not protected("/console/vnc")
    assert "ticket" in WEBSOCKET_AUTH["/console/vnc"]


def test_each_request_finds_its_routes_action() -> None:
    table = RouteActions(ROUTE_ACTIONS)
    assert table.action("POST", "/api/v1/vms") == "vm.create"
    assert table.action("GET", "/api/v1/vms/web1") == "read"
    assert table.action("GET", "/api/v1/vms/web1/console") == "vm.console"
    assert table.action("POST", "/api/v1/nodes/n1/power/off") == "node.power"
    assert table.action("PUT", "/api/v1/settings/migration.timeout") == "settings.write"
    assert table.action("POST", "/api/v1/tokens/abc/revoke") == "token.own"
    assert table.action("GET", "/api/v1/vms/a/b/c") is None  # no route: the router says 404
    assert table.action("HEAD", "/api/v1/vms") is None
    with pytest.raises(ValueError, match="not an action"):
        RouteActions({"GET /x": "no.such.action"})


def test_roles_are_ordered_and_each_row_allows_the_roles_above() -> None:
    assert [r.rank for r in ROLES] == [0, 1, 2]
    assert Role.ADMIN.covers(Role.OPERATOR) and not Role.READER.covers(Role.OPERATOR)
    for action, roles in POLICY.items():
        assert Role.ADMIN in roles, action
        for role in roles:
            assert all(r in roles for r in ROLES if r.covers(role)), action


def test_a_reader_only_reads_and_an_operator_manages_no_users_settings_or_others_tokens() -> None:
    assert [a for a in POLICY if allowed(Role.READER, a)] == ["read"]
    denied = {a for a in POLICY if not allowed(Role.OPERATOR, a)}
    assert denied == {
        "settings.write",
        "user.manage",
        "token.manage",
        "pool.manage",
        "flavor.manage",
        "cell.manage",
        "cell.member",
        "image.manage",
        "node.sriov",  # an SR-IOV VF's trust, spoof check and MAC (issue 22)
    }
    for action in (
        "vm.create", "vm.power", "vm.resize", "node.flush", "node.delete", "token.own"
    ):  # fmt: skip
        assert allowed(Role.OPERATOR, action)


def test_a_refusal_names_the_permission_the_roles_and_the_callers_role() -> None:
    reader = Identity(actor="rita", user="rita", role=Role.READER, token_id="t-1")
    assert describe_roles("vm.create") == "operator or admin"
    assert refusal(reader, "vm.create", "POST /api/v1/vms") == (
        "POST /api/v1/vms needs permission vm.create (role operator or admin); "
        "token 't-1' of user 'rita' has role reader"
    )


def _token(**fields: Any) -> ApiToken:
    values: dict[str, Any] = {
        "id": "t-1", "user": "olga", "user_role": Role.OPERATOR, "role": None,
        "description": None, "created_at": NOW, "expires_at": None, "revoked_at": None,
        "last_used_at": None,
    }  # fmt: skip
    values.update(fields)
    return ApiToken(**values)


def test_a_token_never_has_more_than_its_user_and_knows_its_state() -> None:
    assert _token().effective_role is Role.OPERATOR
    assert _token(role=Role.READER).effective_role is Role.READER
    assert _token(role=Role.ADMIN).effective_role is Role.OPERATOR  # capped by its user
    assert _token().state(NOW) is TokenState.ACTIVE
    assert _token(expires_at=NOW).state(NOW) is TokenState.EXPIRED
    assert _token(expires_at=NOW + timedelta(seconds=1)).state(NOW) is TokenState.ACTIVE
    revoked = _token(revoked_at=NOW, expires_at=NOW - timedelta(days=1))
    assert revoked.state(NOW) is TokenState.REVOKED
    assert _token().identity() == Identity("olga", "olga", Role.OPERATOR, "t-1")


# -- the middleware, as an ASGI app -----------------------------------------------------------


class _NoDatabase:
    """A unit of work that must not be used (the admin token needs no database read)."""

    async def run(self, fn: Any, *args: Any) -> Any:
        raise AssertionError("the database was asked")


class _Call:
    def __init__(self, headers: dict[str, str], method: str = "POST", path: str = "/api/v1/vms"):
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self.sent: list[dict[str, Any]] = []
        self.body_read = False
        self.reached: tuple[Any, str] | None = None

    async def receive(self) -> dict[str, Any]:
        self.body_read = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def inner(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached = (scope.get(IDENTITY_KEY), actors.current())

    def run(self, middleware_for: Any) -> None:
        asyncio.run(middleware_for(self.inner)(self.scope, self.receive, self.send))

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


def _middleware(work: Any = None) -> Any:
    services = SimpleNamespace(
        work=work or _NoDatabase(), clock=SystemClock(), admin_token_hash=hash_token("root")
    )
    return lambda inner: Authentication(inner, services=cast(ApiServices, services))


@pytest.mark.parametrize("header", [None, "Basic cm9vdA==", "Bearer ", "Bearer"])
def test_no_token_is_refused_without_reading_the_body(header: str | None) -> None:
    headers = {"Content-Length": str(500 * 1024 * 1024)}
    if header is not None:
        headers["Authorization"] = header
    call = _Call(headers)
    call.run(_middleware())
    assert call.status == 401
    assert not call.body_read and call.reached is None
    assert call.headers[b"www-authenticate"] == b"Bearer"
    assert call.headers[b"connection"] == b"close"  # the server need not read it either
    assert b"missing token" in call.sent[1]["body"]


def test_the_admin_token_acts_as_admin_without_a_database_read() -> None:
    call = _Call({"Authorization": "Bearer root"})
    call.run(_middleware())
    assert call.reached is not None
    identity, actor = call.reached
    assert identity == Identity("admin", "admin", Role.ADMIN, None)
    assert actor == "admin"
    assert call.scope["bollard.actor"] == "admin"  # for the access log
    assert actors.current() == actors.SYSTEM  # restored after the call


class _Tokens:
    """A unit of work whose lookup answers one identity (or refusal) for any token."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    async def run(self, fn: Any, *args: Any) -> Identity:
        return self.identity


def test_a_role_without_the_permission_is_refused_before_the_body_is_read() -> None:
    reader = Identity(actor="rita", user="rita", role=Role.READER, token_id="t-9")
    call = _Call({"Authorization": "Bearer other", "Content-Length": "10"})
    call.run(_middleware(_Tokens(reader)))
    assert call.status == 403 and not call.body_read and call.reached is None
    assert b"needs permission vm.create" in call.sent[1]["body"]

    allowed_call = _Call({"Authorization": "Bearer other"}, method="GET", path="/api/v1/vms")
    allowed_call.run(_middleware(_Tokens(reader)))
    assert allowed_call.reached == (reader, "rita")
    assert allowed_call.scope[ACTION_KEY] == "read"


def test_paths_outside_the_api_and_the_agents_websocket_pass_untouched() -> None:
    call = _Call({}, method="GET", path="/healthz")
    call.run(_middleware())
    assert call.reached == (None, actors.SYSTEM) and call.sent == []
    agent = _Call({"Authorization": "Bearer a-node-token"}, method="GET", path=AGENT_PATH)
    agent.scope["type"] = "websocket"  # the gateway checks node tokens itself
    agent.run(_middleware())
    assert agent.reached == (None, actors.SYSTEM) and agent.sent == []
    assert protected("/metrics") and protected("/api/v1") and protected("/api/v1/vms")
    assert not protected("/api/v10") and not protected("/openapi.json")
