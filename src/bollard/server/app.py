"""Assembly of the server: database preparation, the FastAPI app, the agent endpoint."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Response, WebSocket

from bollard import __version__
from bollard.domain.protocol import AGENT_PATH
from bollard.server.api import (
    commands,
    console,
    errors,
    events,
    nodes,
    power,
    reconcile,
    settings,
    status,
    tasks,
    vms,
)
from bollard.server.api.deps import require_admin
from bollard.server.auth import bootstrap_admin_token
from bollard.server.clock import Clock
from bollard.server.config import ServerConfig
from bollard.server.metrics import CONTENT_TYPE
from bollard.server.runtime import Runtime
from bollard.store import migrate
from bollard.store.db import Database

log = logging.getLogger(__name__)


def prepare(config: ServerConfig, clock: Clock | None = None) -> Runtime:
    """Open the database, bring its schema up to date (refusing a newer one), make sure an
    admin token exists, and close what a previous run left open."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.db_url)
    revision = migrate.upgrade(db)
    log.info("database %s at schema revision %s", db.kind, revision)
    runtime = Runtime(config, db, clock)
    runtime.admin_token_hash = bootstrap_admin_token(db, config.data_dir, runtime.clock)
    runtime.recover_after_restart()
    return runtime


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start_background()
        yield
        await runtime.stop_background()
        await runtime.gateway.close_all()
        await runtime.runner.shutdown()
        runtime.db.dispose()

    app = FastAPI(
        title="Bollard",
        version=__version__,
        description="Virtual-machine cluster manager. Every endpoint under /api/v1 needs "
        "`Authorization: Bearer <admin token>`.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    errors.install(app)

    @app.get("/healthz", tags=["status"])
    async def healthz() -> dict[str, str]:
        """Liveness, without authentication."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["status"], dependencies=[Depends(require_admin)])
    async def metrics() -> Response:
        """Prometheus metrics (heartbeat processing, reconciliation passes, agents)."""
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_admin)])
    for router in (
        status.router,
        nodes.router,
        vms.router,
        console.router,
        tasks.router,
        commands.router,
        settings.router,
        events.router,
        power.router,
        reconcile.router,
    ):
        api.include_router(router)
    app.include_router(api)

    @app.websocket(AGENT_PATH)
    async def agent_endpoint(ws: WebSocket) -> None:
        await runtime.gateway.handle(ws)

    return app
