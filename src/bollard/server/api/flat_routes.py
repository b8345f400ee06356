"""The API's routes as one flat list, as `include_router` made them before FastAPI 0.129.

Since 0.129 FastAPI keeps an included router as one lazy route that resolves its children
at each request: a request to /api/v1/... walked two levels of included routers, each
matched twice (once to find the route, once to handle it), some 0.7 ms of CPU a request on
a 2-core machine, about as much as the rest of a `/whoami` (docs/performance.md, "API
reads, third pass"). `flattened` makes each endpoint of a router a route of its own, with
the prefix and the dependencies it would get from being included, through the public
constructors of FastAPI's routes and the attributes they keep; the OpenAPI document and
the answers are the same (tests/unit/test_flat_routes.py compares both ways of building
the routes).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, params
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute


def flattened(
    router: APIRouter, *, prefix: str = "", dependencies: Sequence[params.Depends] = ()
) -> list[BaseRoute]:
    """`router`'s routes as the routes of a router including it with `prefix` and
    `dependencies` would be (the included router's own prefix and dependencies are already
    in each route). TypeError for a route of another kind (a nested included router, a
    mount): those are not flattened here."""
    routes: list[BaseRoute] = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            routes.append(_api_route(route, prefix, dependencies))
        elif isinstance(route, APIWebSocketRoute):
            routes.append(
                APIWebSocketRoute(
                    prefix + route.path,
                    route.endpoint,
                    name=route.name,
                    dependencies=[*dependencies, *route.dependencies],
                )
            )
        else:
            raise TypeError(f"{route!r}: only API and WebSocket routes are flattened")
    return routes


def _api_route(route: APIRoute, prefix: str, dependencies: Sequence[params.Depends]) -> APIRoute:
    return APIRoute(
        prefix + route.path,
        route.endpoint,
        response_model=route.response_model,
        status_code=route.status_code,
        tags=route.tags,
        dependencies=[*dependencies, *route.dependencies],
        summary=route.summary,
        description=route.description,
        response_description=route.response_description,
        responses=route.responses,
        deprecated=route.deprecated,
        methods=route.methods,
        operation_id=route.operation_id,
        response_model_include=route.response_model_include,
        response_model_exclude=route.response_model_exclude,
        response_model_by_alias=route.response_model_by_alias,
        response_model_exclude_unset=route.response_model_exclude_unset,
        response_model_exclude_defaults=route.response_model_exclude_defaults,
        response_model_exclude_none=route.response_model_exclude_none,
        include_in_schema=route.include_in_schema,
        response_class=route.response_class,
        name=route.name,
        callbacks=route.callbacks,
        openapi_extra=route.openapi_extra,
        generate_unique_id_function=route.generate_unique_id_function,
    )
