"""`flattened` gives the routes `include_router` would give: the same OpenAPI document, the same
answers, the dependencies run in the same order; and the API's routes are all flat."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from bollard.server import app as server_app
from bollard.server.api.flat_routes import flattened


class Thing(BaseModel):
    name: str
    size: int = 0


def _record(label: str):  # type: ignore[no-untyped-def]
    def dependency(connection: HTTPConnection) -> None:
        connection.state.__dict__.setdefault("order", []).append(label)

    return Depends(dependency)


def _sample() -> APIRouter:
    router = APIRouter(prefix="/things", tags=["things"], dependencies=[_record("router")])

    @router.get("", response_model=list[Thing], summary="List the things")
    async def list_things(request: Request) -> list[Thing]:
        return [Thing(name=",".join(request.state.order))]

    @router.post("/{name}", status_code=201, responses={409: {"description": "taken"}})
    async def add(name: str, body: Thing, request: Request) -> Thing:
        """Add a thing."""
        return Thing(name=f"{name}:{','.join(request.state.order)}", size=body.size)

    @router.get(
        "/{name}/hidden",
        include_in_schema=False,
        dependencies=[_record("route")],
    )
    async def hidden(name: str, request: Request, n: Annotated[int, Depends(lambda: 3)]) -> dict:
        return {"name": name, "order": request.state.order, "n": n}

    @router.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    return router


def _included() -> FastAPI:
    app = FastAPI()
    app.include_router(_sample(), prefix="/api/v1", dependencies=[_record("include")])
    return app


def _flat() -> FastAPI:
    app = FastAPI()
    app.router.routes.extend(
        flattened(_sample(), prefix="/api/v1", dependencies=[_record("include")])
    )
    return app


def test_the_openapi_document_is_the_one_include_router_gives() -> None:
    assert _flat().openapi() == _included().openapi()


def test_the_answers_and_the_order_of_dependencies_are_the_same() -> None:
    calls = [
        ("GET", "/api/v1/things", None),
        ("POST", "/api/v1/things/a", {"name": "a", "size": 2}),
        ("POST", "/api/v1/things/a", {"size": "x"}),
        ("GET", "/api/v1/things/a/hidden", None),
        ("GET", "/api/v1/nothing", None),
        ("DELETE", "/api/v1/things", None),
    ]
    answers = []
    for app in (_included(), _flat()):
        client = TestClient(app)
        seen = []
        for method, path, body in calls:
            response = client.request(method, path, json=body)
            seen.append((response.status_code, response.json()))
        with client.websocket_connect("/api/v1/things/ws") as socket:
            seen.append((101, socket.receive_text()))
        answers.append(seen)
    assert answers[0] == answers[1]
    assert answers[1][0] == (200, [{"name": "include,router", "size": 0}])
    assert answers[1][3][1]["order"] == ["include", "router", "route"]
    assert [status for status, _ in answers[1]] == [200, 201, 422, 200, 404, 405, 101]


def test_a_nested_included_router_is_refused() -> None:
    outer, inner = APIRouter(), APIRouter()

    @inner.get("/x")
    async def x() -> None:
        return None

    outer.include_router(inner)
    try:
        flattened(outer)
    except TypeError as exc:
        assert "only API and WebSocket routes" in str(exc)
    else:
        raise AssertionError("a nested included router was flattened")


def test_every_route_of_the_api_is_flat() -> None:
    routes = server_app._api_routes()
    assert len(routes) > 100
    assert all(isinstance(route, APIRoute | APIWebSocketRoute) for route in routes)
    paths = {getattr(route, "path", "") for route in routes}
    assert "/api/v1/vms/{name}" in paths
    assert "/api/v1/whoami" in paths
