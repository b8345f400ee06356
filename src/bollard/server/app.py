"""The FastAPI app: the REST API under /api/v1, /healthz, /metrics and the agent endpoint.

The assembly builds the `ApiServices` the routers use and hands them here with the hooks the
app's lifespan runs (start the background loops; stop them and release what the server
holds)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Response, WebSocket
from starlette.routing import BaseRoute

from bollard import __version__
from bollard.domain.protocol import AGENT_PATH
from bollard.server.api import (
    cell_vms,
    commands,
    console,
    console_vnc,
    errors,
    event_stream,
    events,
    flavors,
    ha,
    images,
    node_maintenance,
    node_shutdown,
    node_sriov,
    nodes,
    placement,
    pools,
    power,
    reconcile,
    records,
    responses,
    servers,
    settings,
    status,
    tasks,
    tokens,
    users,
    vm_batch,
    vms,
    volumes,
    whoami,
)
from bollard.server.api.access_log import AccessLog
from bollard.server.api.authn import API_PREFIX, Authentication
from bollard.server.api.deps import ApiServices, require_identity
from bollard.server.api.errors_db import DatabaseUnreachable
from bollard.server.api.flat_routes import flattened
from bollard.server.api.limits import DEFAULT_MAX_BODY, BodyLimit
from bollard.server.consoles import Consoles
from bollard.server.metrics import CONTENT_TYPE
from bollard.server.web.assets import mount_console
from bollard.server.web.novnc import mount_novnc

Hook = Callable[[], Awaitable[None]]
AgentEndpoint = Callable[[WebSocket], Awaitable[None]]


def create_app(
    services: ApiServices,
    *,
    agent_endpoint: AgentEndpoint,
    consoles: Consoles,
    render_metrics: Callable[[], bytes],
    on_start: Hook,
    on_stop: Hook,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    novnc_dir: Path | None = None,
) -> FastAPI:
    """`on_start` runs once the event loop runs, before the first request; `on_stop` once
    the server stops taking requests. `agent_endpoint` serves an agent's WebSocket session;
    `render_metrics` the Prometheus exposition. A request body over `max_body_bytes` is
    refused (413) before it is read; every request is written to the access log."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await on_start()
        yield
        await on_stop()

    app = FastAPI(
        title="Bollard",
        version=__version__,
        description="Virtual-machine cluster manager. Every endpoint under /api/v1 needs "
        "`Authorization: Bearer <token>` (the admin token or a user's API token; the user's "
        "role decides what it may call).",
        lifespan=lifespan,
    )
    app.state.services = services
    errors.install(app)
    # The last added is the outermost: the access log sees every answer, 401 and 413 included.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, unlimited=images.UNLIMITED_BODIES)
    app.add_middleware(Authentication, services=services)  # 401/403 before the body is read
    # 503 while cut from the database (authentication's look-ups too)
    app.add_middleware(DatabaseUnreachable, clock=services.clock)
    app.add_middleware(AccessLog, clock=services.clock)

    @app.get("/healthz", tags=["status"])
    async def healthz() -> dict[str, str]:
        """Liveness, without authentication."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["status"], dependencies=[Depends(require_identity)])
    async def metrics() -> Response:
        """Prometheus metrics (heartbeat processing, reconciliation passes, agents)."""
        return Response(render_metrics(), media_type=CONTENT_TYPE)

    # The routes under /api/v1 are the same for every app: built once per process.
    app.router.routes.extend(_api_routes())
    responses.install(app)  # every status each operation answers, in the OpenAPI

    @app.websocket(AGENT_PATH)
    async def agent_endpoint_route(ws: WebSocket) -> None:
        await agent_endpoint(ws)

    console_vnc.install(app, consoles)  # /console/vnc and the agents' tunnels (WebSockets)

    mount_console(app)
    if novnc_dir is not None:
        mount_novnc(app, novnc_dir)  # (before /ui whatever the order: see mount_novnc)
    return app


@functools.cache
def _api_routes() -> tuple[BaseRoute, ...]:
    """The REST API's routes (/api/v1 and the image spool's). Building them analyses every
    endpoint's signature (a few hundred ms); an app made again in the same process (every
    test's server) takes the same route objects, which hold nothing of the app's (what they
    serve comes from `request.app.state.services`)."""
    identity = [Depends(require_identity)]
    # A hidden VM (a cell's copy of a VM moving between cells) is 404 on these unless asked
    # for with ?hidden=true.
    visible = [*identity, cell_vms.VisibleDep]
    routes: list[BaseRoute] = []
    for router in (cell_vms.router, cell_vms.placement):
        routes += flattened(router, prefix=API_PREFIX, dependencies=identity)
    for router in (vms.router, console.router, console_vnc.router, placement.router):
        routes += flattened(router, prefix=API_PREFIX, dependencies=visible)
    routes += flattened(vm_batch.router, prefix=API_PREFIX, dependencies=visible)
    for router in (
        status.router,
        servers.router,
        nodes.router,
        tasks.router,
        commands.router,
        settings.router,
        events.router,
        event_stream.router,
        power.router,
        node_maintenance.router,
        node_shutdown.router,
        node_sriov.router,
        reconcile.router,
        users.router,
        tokens.router,
        whoami.router,
        pools.router,
        volumes.router,
        flavors.router,
        ha.router,
        records.router,
    ):
        routes += flattened(router, prefix=API_PREFIX, dependencies=identity)
    routes += images.routes()  # the image spool (admins, and agents with their node token)
    return tuple(routes)
