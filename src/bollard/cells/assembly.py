"""The API server's assembly: builds its parts, wires them and makes its FastAPI app.

The app serves what a plain server serves under /api/v1, to the same clients (CLI, console):
users, tokens, whoami, flavors and cells from the API database, everything else through the
proxy (proxy.py) from the cells. Authentication, the policy table, request ids, the access
log, the body limit and the errors are the plain server's own (bollard/server/api)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, Request, Response

from bollard import __version__
from bollard.cells import cells_api, flavors_api
from bollard.cells.api_records import ApiRecords
from bollard.cells.api_settings import ApiSettings
from bollard.cells.config import ApiConfig
from bollard.cells.console_proxy import ConsoleRoutes
from bollard.cells.directory import CellDirectory
from bollard.cells.discovery import Discovery
from bollard.cells.event_merge import EventMerge
from bollard.cells.flavor_sync import FlavorSync
from bollard.cells.gather import Gatherer
from bollard.cells.image_store import ImageStore
from bollard.cells.move_confirm import MoveAutoConfirm
from bollard.cells.move_end import ConfirmFlow, RevertFlow
from bollard.cells.move_flow import CellMoves, MoveFlow
from bollard.cells.moves import Moves
from bollard.cells.no_hosts import NoHosts
from bollard.cells.placement import Placement
from bollard.cells.proxy import Proxy
from bollard.cells.routing import Routes
from bollard.cells.services import CellServices
from bollard.cells.weigher import Weigher
from bollard.durable import private_dir
from bollard.server.api import errors, tokens, users, whoami
from bollard.server.api.access_log import AccessLog, AccessLogFile
from bollard.server.api.authn import API_PREFIX, Authentication
from bollard.server.api.console_vnc import CONSOLE_VNC_PATH
from bollard.server.api.deps import require_identity
from bollard.server.api.flat_routes import flattened
from bollard.server.api.limits import BodyLimit
from bollard.server.auth import bootstrap_admin_token
from bollard.server.clock import Clock, SystemClock
from bollard.server.events_bus import EventBus
from bollard.server.operations.flavor_ops import FlavorOperations
from bollard.server.secrets import SecretBox
from bollard.server.settings import Settings
from bollard.server.tasks.context import StepServices, Timeouts
from bollard.server.tasks.engine import TaskEngine
from bollard.server.tasks.runner import TaskRunner
from bollard.server.unit_of_work import DatabaseWork
from bollard.server.web.assets import mount_console
from bollard.server.web.novnc import find_novnc, mount_novnc
from bollard.store import migrate
from bollard.store.db import Database

log = logging.getLogger(__name__)

PROXIED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class ApiAssembly:
    def __init__(
        self, config: ApiConfig, db: Database, *, admin_token_hash: str, clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.db = db
        self.clock = clock
        work = self.work = DatabaseWork(db)
        self.event_bus = EventBus(clock)
        self.directory = CellDirectory(
            work=work, clock=clock, box=SecretBox(config.data_dir),
            deadline=config.cell_deadline, transport=transport,
        )  # fmt: skip
        self.routes = Routes(work=work, clock=clock, directory=self.directory)
        self.flavor_sync = FlavorSync(work=work, directory=self.directory)
        self.placement = Placement(
            work=work, clock=clock, directory=self.directory, routes=self.routes,
            flavor_sync=self.flavor_sync,
        )  # fmt: skip
        settings = Settings(work=work, clock=clock)
        self.runner = TaskRunner(work=work, clock=clock)
        nothing = NoHosts()
        self.engine = TaskEngine(
            services=StepServices(
                work=work, clock=clock, settings=settings, commands=nothing, sessions=nothing,
                inspector=nothing, requests=nothing, recovery=nothing, power=nothing,
                kick_state=lambda node: None, touch=self.event_bus.touch,
                timeouts=Timeouts(command=60.0, shutdown=60.0, heartbeat_interval=5.0),
            ),
            runner=self.runner,
        )  # fmt: skip
        cell_moves = CellMoves(
            directory=self.directory, routes=self.routes,
            store=ImageStore(config.data_dir / "images"), cell_wait=config.move_cell_wait,
        )  # fmt: skip
        for flow in (MoveFlow(cell_moves), ConfirmFlow(cell_moves), RevertFlow(cell_moves)):
            self.engine.register(flow)
        self.moves = Moves(
            work=work, clock=clock, directory=self.directory, routes=self.routes,
            launcher=self.engine, settings=settings,
            weigher=Weigher(work=work, directory=self.directory, settings=settings),
        )  # fmt: skip
        self.auto_confirm = MoveAutoConfirm(
            work=work, clock=clock, directory=self.directory, moves=self.moves,
            interval=config.discover_interval,
        )  # fmt: skip
        records = ApiRecords(work=work, waiter=self.runner)
        self.consoles = ConsoleRoutes(self.directory)
        self.proxy = Proxy(
            directory=self.directory,
            routes=self.routes,
            gatherer=Gatherer(
                work=work, directory=self.directory,
                local={"/tasks": records.tasks_page, "/migrations": records.migrations_page},
            ),
            merge=EventMerge(work=work, clock=clock, feed=self.event_bus, directory=self.directory),
            placement=self.placement,
            moves=self.moves,
            records=records,
            settings=ApiSettings(work=work, settings=settings),
            consoles=self.consoles,
        )  # fmt: skip
        self.discovery = Discovery(
            work=work, clock=clock, directory=self.directory, placement=self.placement,
            flavor_sync=self.flavor_sync, interval=config.discover_interval,
        )  # fmt: skip
        self.services = CellServices(
            work=work,
            clock=clock,
            settings=settings,
            events=self.event_bus,
            admin_token_hash=admin_token_hash,
            directory=self.directory,
            placement=self.placement,
            proxy=self.proxy,
            flavor_sync=self.flavor_sync,
            flavor_ops=FlavorOperations(work=work, clock=clock),
            discover=self.discovery.kick,
            db_kind=db.kind,
        )
        self.access_log = AccessLogFile(config.access_log or config.data_dir / "access.log")
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.access_log.start()
        await self.directory.reload()
        self._loops.append(asyncio.create_task(self.discovery.run(), name="cell-discovery"))
        self._loops.append(asyncio.create_task(self.auto_confirm.run(), name="move-confirm"))
        resumed = await self.engine.resume_all()
        if resumed:
            log.warning("resumed %d moves of VMs between cells", resumed)

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._loops.clear()
        await self.runner.shutdown()
        await self.directory.close()
        self.db.dispose()
        self.access_log.stop()

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        app = FastAPI(
            title="Bollard API server (cells)",
            version=__version__,
            description="The API of a Bollard deployment with cells: the same /api/v1 as a "
            "single server, routed to the cell of each VM and node, plus /api/v1/cells.",
            lifespan=lifespan,
        )
        app.state.services = self.services
        errors.install(app)
        app.add_middleware(BodyLimit, max_bytes=self.config.max_body_bytes)
        app.add_middleware(Authentication, services=self.services)
        app.add_middleware(AccessLog, clock=self.clock)

        @app.get("/healthz", tags=["status"])
        async def healthz() -> dict[str, str]:
            """Liveness, without authentication."""
            return {"status": "ok"}

        identity = [Depends(require_identity)]
        for router in (
            cells_api.router,
            flavors_api.router,
            users.router,
            tokens.router,
            whoami.router,
        ):
            app.router.routes.extend(flattened(router, prefix=API_PREFIX, dependencies=identity))
        proxy = self.proxy

        @app.api_route(
            API_PREFIX + "/{path:path}",
            methods=PROXIED_METHODS,
            include_in_schema=False,
            dependencies=identity,
        )
        async def to_cells(request: Request) -> Response:
            return await proxy.handle(request)

        app.add_api_websocket_route(CONSOLE_VNC_PATH, self.consoles.endpoint)
        mount_console(app)
        novnc = find_novnc(self.config.novnc_dir)
        if novnc is not None:
            mount_novnc(app, novnc)
        return app


def prepare_api(
    config: ApiConfig, clock: Clock | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> ApiAssembly:
    """Open the API database (schema brought up to date), make sure an admin token exists,
    and build the API server."""
    private_dir(config.data_dir)
    db = Database(config.db_url)
    schema = migrate.upgrade(db)
    log.info("API database %s at schema revision %s", db.kind, schema.revision)
    clock = clock or SystemClock()
    token_hash = bootstrap_admin_token(db, config.data_dir, clock)
    return ApiAssembly(config, db, admin_token_hash=token_hash, clock=clock, transport=transport)
