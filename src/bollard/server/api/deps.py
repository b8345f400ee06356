"""What the routers are given: the `ApiServices` the assembly built (held by the app), one
dependency for each part a router uses, and the admin-token check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bollard.domain.errors import Unauthorized
from bollard.server.auth import same_hash
from bollard.server.clock import Clock
from bollard.server.operations.migrate_ops import MigrateOperations
from bollard.server.operations.node_ops import NodeOperations
from bollard.server.operations.vm_ops import VmOperations
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

_bearer = HTTPBearer(auto_error=False, description="The admin token (`<data-dir>/admin.token`).")


@dataclass(frozen=True)
class ApiServices:
    """Everything the routers use, built and wired once by the assembly."""

    work: UnitOfWork  # reads through the store, in a transaction off the event loop
    clock: Clock
    settings: SettingsStore
    vm_ops: VmOperations
    migrate_ops: MigrateOperations
    node_ops: NodeOperations
    canceller: TaskCanceller
    waiter: TaskWaiter
    inspector: HostInspector  # a VM's console, asked of its host
    drift: DriftReconciler  # the state reconciler: scan and fix
    kick_commands: Kick  # the command reconciler, after its settings changed
    events: EventFeed  # the event log's followers
    admin_token_hash: str
    db_kind: str  # "sqlite" or "postgresql", shown by /status
    heartbeat_interval: float  # seconds (a VM is UNKNOWN once its host is silent for long)


def services(request: Request) -> ApiServices:
    found: ApiServices = request.app.state.services
    return found


ServicesDep = Annotated[ApiServices, Depends(services)]


def require_admin(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing token: send `Authorization: Bearer <token>`")
    if not same_hash(creds.credentials, services(request).admin_token_hash):
        raise Unauthorized("invalid token")


def _work(s: ServicesDep) -> UnitOfWork:
    return s.work


def _clock(s: ServicesDep) -> Clock:
    return s.clock


def _settings(s: ServicesDep) -> SettingsStore:
    return s.settings


def _vm_ops(s: ServicesDep) -> VmOperations:
    return s.vm_ops


def _migrate_ops(s: ServicesDep) -> MigrateOperations:
    return s.migrate_ops


def _node_ops(s: ServicesDep) -> NodeOperations:
    return s.node_ops


def _canceller(s: ServicesDep) -> TaskCanceller:
    return s.canceller


def _waiter(s: ServicesDep) -> TaskWaiter:
    return s.waiter


def _inspector(s: ServicesDep) -> HostInspector:
    return s.inspector


def _drift(s: ServicesDep) -> DriftReconciler:
    return s.drift


def _events(s: ServicesDep) -> EventFeed:
    return s.events


WorkDep = Annotated[UnitOfWork, Depends(_work)]
ClockDep = Annotated[Clock, Depends(_clock)]
SettingsDep = Annotated[SettingsStore, Depends(_settings)]
VmOpsDep = Annotated[VmOperations, Depends(_vm_ops)]
MigrateOpsDep = Annotated[MigrateOperations, Depends(_migrate_ops)]
NodeOpsDep = Annotated[NodeOperations, Depends(_node_ops)]
CancellerDep = Annotated[TaskCanceller, Depends(_canceller)]
WaiterDep = Annotated[TaskWaiter, Depends(_waiter)]
InspectorDep = Annotated[HostInspector, Depends(_inspector)]
DriftDep = Annotated[DriftReconciler, Depends(_drift)]
EventsDep = Annotated[EventFeed, Depends(_events)]


def _kick_commands(s: ServicesDep) -> Kick:
    return s.kick_commands


def _db_kind(s: ServicesDep) -> str:
    return s.db_kind


KickCommandsDep = Annotated[Kick, Depends(_kick_commands)]
DbKindDep = Annotated[str, Depends(_db_kind)]
