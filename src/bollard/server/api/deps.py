"""What the routers are given: the `ApiServices` the assembly built (held by the app), one
dependency for each part a router uses, and the caller's identity (authenticated and
authorized before the body was read, by the middleware of api/authn.py).

Every dependency here is `async def` although none awaits: FastAPI runs a plain `def`
dependency in a worker thread, a thread hop per dependency per request (several for each
call, a tenth of a simple read's server time); these only pick an attribute and never block."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bollard.domain.errors import Unauthorized
from bollard.domain.policy import Forbidden, Identity, Role
from bollard.server.clock import Clock
from bollard.server.images import ImageSpool
from bollard.server.operations.cell_ops import CellOperations
from bollard.server.operations.flavor_ops import FlavorOperations
from bollard.server.operations.image_ops import ImageOperations
from bollard.server.operations.maintenance_ops import MaintenanceOperations
from bollard.server.operations.migrate_ops import MigrateOperations
from bollard.server.operations.node_admin import NodeAdmin
from bollard.server.operations.node_ops import NodeOperations
from bollard.server.operations.pool_ops import PoolOperations
from bollard.server.operations.resize_ops import ResizeOperations
from bollard.server.operations.sriov_ops import SriovOperations
from bollard.server.operations.vm_ops import VmOperations
from bollard.server.operations.volume_ops import VolumeOperations
from bollard.server.ports import (
    DriftReconciler,
    EventFeed,
    HostInspector,
    Kick,
    SettingsStore,
    TaskCanceller,
    TaskWaiter,
    UnitOfWork,
)

_bearer = HTTPBearer(
    auto_error=False,
    description="The admin token (`<data-dir>/admin.token`) or a user's API token "
    "(`bollard token create`).",
)
# Where the authentication middleware leaves the caller's Identity and the action (policy)
# its call was allowed as, in the ASGI scope.
IDENTITY_KEY = "bollard.identity"
ACTION_KEY = "bollard.action"
MISSING_TOKEN = "missing token: send `Authorization: Bearer <token>`"


@dataclass(frozen=True)
class CoreServices:
    """What the authentication middleware and the routers of users, tokens and whoami use:
    also all an API server in front of cells has (bollard/cells/)."""

    work: UnitOfWork  # reads through the store, in a transaction off the event loop
    clock: Clock
    settings: SettingsStore
    events: EventFeed  # the event log's followers
    admin_token_hash: str


@dataclass(frozen=True)
class ApiServices(CoreServices):
    """Everything the routers use, built and wired once by the assembly."""

    vm_ops: VmOperations
    migrate_ops: MigrateOperations
    node_ops: NodeOperations
    node_admin: NodeAdmin  # node deletion, agent token rotation
    maintenance_ops: MaintenanceOperations  # per-node maintenance on/off
    pool_ops: PoolOperations
    volume_ops: VolumeOperations
    flavor_ops: FlavorOperations
    resize_ops: ResizeOperations
    cell_ops: CellOperations  # what an API server in front of cells asks of its cells
    canceller: TaskCanceller
    waiter: TaskWaiter
    inspector: HostInspector  # a VM's console, asked of its host
    drift: DriftReconciler  # the state reconciler: scan and fix
    kick_commands: Kick  # the command reconciler, after its settings changed
    db_kind: str  # "sqlite" or "postgresql", shown by /status
    heartbeat_interval: float  # seconds (a VM is UNKNOWN once its host is silent for long)
    images: ImageSpool  # the cell's image spool (api/images.py)
    image_ops: ImageOperations  # VMs exported to the spool, or made from it
    node_for_token: Callable[[str], Awaitable[str | None]]  # an agent's node, by its token
    sriov_ops: SriovOperations  # SR-IOV VF settings (api/node_sriov.py)
    server_id: Callable[[], str]  # this server's id in `servers` (new when it joins again)


async def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


ServicesDep = Annotated[ApiServices, Depends(services)]


async def core_services(request: Request) -> CoreServices:
    found: CoreServices = request.app.state.services
    return found


CoreDep = Annotated[CoreServices, Depends(core_services)]


async def require_identity(
    request: Request,
    _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The caller, as the middleware authenticated it (`_creds` only declares the bearer
    scheme in the OpenAPI document). Fails closed: without the middleware's identity it is
    401, and a caller that is not admin is refused a route the policy table does not map."""
    identity = request.scope.get(IDENTITY_KEY)
    if not isinstance(identity, Identity):
        raise Unauthorized(MISSING_TOKEN)
    if identity.role is not Role.ADMIN and request.scope.get(ACTION_KEY) is None:
        raise Forbidden(
            f"{request.method} {request.url.path} has no permission in the policy table: "
            f"only an admin may call it; {identity.describe()} has role {identity.role.value}"
        )
    return identity


IdentityDep = Annotated[Identity, Depends(require_identity)]


async def _work(s: CoreDep) -> UnitOfWork:
    return s.work


async def _clock(s: CoreDep) -> Clock:
    return s.clock


async def _settings(s: CoreDep) -> SettingsStore:
    return s.settings


async def _vm_ops(s: ServicesDep) -> VmOperations:
    return s.vm_ops


async def _migrate_ops(s: ServicesDep) -> MigrateOperations:
    return s.migrate_ops


async def _node_ops(s: ServicesDep) -> NodeOperations:
    return s.node_ops


async def _node_admin(s: ServicesDep) -> NodeAdmin:
    return s.node_admin


async def _maintenance_ops(s: ServicesDep) -> MaintenanceOperations:
    return s.maintenance_ops


async def _pool_ops(s: ServicesDep) -> PoolOperations:
    return s.pool_ops


async def _volume_ops(s: ServicesDep) -> VolumeOperations:
    return s.volume_ops


async def _flavor_ops(s: ServicesDep) -> FlavorOperations:
    return s.flavor_ops


async def _resize_ops(s: ServicesDep) -> ResizeOperations:
    return s.resize_ops


async def _cell_ops(s: ServicesDep) -> CellOperations:
    return s.cell_ops


CellOpsDep = Annotated[CellOperations, Depends(_cell_ops)]


async def _canceller(s: ServicesDep) -> TaskCanceller:
    return s.canceller


async def _waiter(s: ServicesDep) -> TaskWaiter:
    return s.waiter


async def _inspector(s: ServicesDep) -> HostInspector:
    return s.inspector


async def _drift(s: ServicesDep) -> DriftReconciler:
    return s.drift


async def _events(s: CoreDep) -> EventFeed:
    return s.events


WorkDep = Annotated[UnitOfWork, Depends(_work)]
ClockDep = Annotated[Clock, Depends(_clock)]
SettingsDep = Annotated[SettingsStore, Depends(_settings)]
VmOpsDep = Annotated[VmOperations, Depends(_vm_ops)]
MigrateOpsDep = Annotated[MigrateOperations, Depends(_migrate_ops)]
NodeOpsDep = Annotated[NodeOperations, Depends(_node_ops)]
NodeAdminDep = Annotated[NodeAdmin, Depends(_node_admin)]
MaintenanceOpsDep = Annotated[MaintenanceOperations, Depends(_maintenance_ops)]
PoolOpsDep = Annotated[PoolOperations, Depends(_pool_ops)]
VolumeOpsDep = Annotated[VolumeOperations, Depends(_volume_ops)]
FlavorOpsDep = Annotated[FlavorOperations, Depends(_flavor_ops)]
ResizeOpsDep = Annotated[ResizeOperations, Depends(_resize_ops)]
CancellerDep = Annotated[TaskCanceller, Depends(_canceller)]
WaiterDep = Annotated[TaskWaiter, Depends(_waiter)]
InspectorDep = Annotated[HostInspector, Depends(_inspector)]
DriftDep = Annotated[DriftReconciler, Depends(_drift)]
EventsDep = Annotated[EventFeed, Depends(_events)]


async def _kick_commands(s: ServicesDep) -> Kick:
    return s.kick_commands


async def _db_kind(s: ServicesDep) -> str:
    return s.db_kind


KickCommandsDep = Annotated[Kick, Depends(_kick_commands)]
DbKindDep = Annotated[str, Depends(_db_kind)]
