"""Small adapters the assembly wires with: components built before the ones they call get
these, which reach the others once they exist."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from bollard.domain.errors import BollardError
from bollard.domain.models import Task, Vm
from bollard.domain.operations import PowerOp
from bollard.server.clock import Clock
from bollard.server.cluster.bus import PgBus, libpq_dsn
from bollard.server.cluster.membership import Membership
from bollard.server.cluster.relay import Relay, SessionDirectory
from bollard.server.consoles import Consoles
from bollard.server.dispatch import Dispatcher
from bollard.server.gateway import AgentConnection, Gateway
from bollard.server.images import ImageSpool
from bollard.server.inspect import Inspector
from bollard.server.ports import UnitOfWork
from bollard.server.tasks.engine import TaskEngine
from bollard.server.tasks.flows.drain import FlushFlow, UnflushFlow
from bollard.server.tasks.flows.fence import FenceFlow, RecoverFlow
from bollard.server.tasks.flows.ha import HaRestartFlow
from bollard.server.tasks.flows.ha_relocate import HaRelocateFlow
from bollard.server.tasks.flows.migrate import MigrateFlow
from bollard.server.tasks.flows.resize_end import FLOWS as RESIZE_FLOWS
from bollard.server.tasks.flows.vf_set import FLOWS as VF_FLOWS
from bollard.server.tasks.flows.vm_images import flows as image_flows
from bollard.server.tasks.flows.vm_power import FLOWS
from bollard.server.tasks.flows.volume_copies import FLOWS as VOLUME_COPY_FLOWS
from bollard.server.tasks.flows.volumes import FLOWS as VOLUME_FLOWS
from bollard.server.tasks.runner import TaskRunner
from bollard.store import migrate, servers
from bollard.store.db import Database

log = logging.getLogger(__name__)


class VmRequestsLater:
    """`ports.VmRequests` for the task steps and the state reconciler, which are built
    before the operations they call."""

    def __init__(
        self,
        power: Callable[..., Awaitable[tuple[Vm, Task]]],
        migrate: Callable[[str, str], Awaitable[tuple[Vm, Task]]],
    ) -> None:
        self._power = power
        self._migrate = migrate

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]:
        return await self._power(name, op, **params)

    async def migrate(self, name: str, *, mode: str) -> tuple[Vm, Task]:
        return await self._migrate(name, mode)


class LauncherLater:
    """The task engine as a `ports.TaskLauncher` for what is built before it."""

    def __init__(self, engine: Callable[[], TaskEngine]) -> None:
        self._engine = engine

    def create_in(
        self,
        conn: Connection,
        *,
        id: str,
        type: str,
        vm_uuid: str | None,
        vm_name: str | None,
        node: str | None,
        params: BaseModel | dict[str, Any],
    ) -> Task:
        return self._engine().create_in(
            conn, id=id, type=type, vm_uuid=vm_uuid, vm_name=vm_name, node=node, params=params
        )

    def launch(self, task_id: str) -> None:
        self._engine().launch(task_id)


def relay_for(
    db: Database,
    db_url: str,
    clock: Clock,
    work: UnitOfWork,
    gateway: Gateway,
    *,
    me: Callable[[], str],
) -> tuple[PgBus | None, Relay | None]:
    """On PostgreSQL, the bus and the relay through which this server reaches the agents its
    peers hold (cluster/relay.py), its sessions announced to them; on SQLite, neither."""
    if db.kind == "sqlite":
        return None, None
    bus = PgBus(libpq_dsn(db_url), clock=clock)
    directory = SessionDirectory(work=work, me=me)
    relay = Relay(bus=bus, clock=clock, work=work, me=me, local=gateway, directory=directory)
    relay.subscribe()

    def opened(link: AgentConnection) -> None:
        relay.soon(relay.announce_session(link.node, True))

    async def lost(link: AgentConnection) -> None:
        relay.soon(relay.announce_session(link.node, False))

    gateway.on_session_opened.append(opened)
    gateway.on_session_lost.append(lost)
    return bus, relay


def register_flows(engine: TaskEngine, images: ImageSpool) -> None:
    """Every kind of task the server runs."""
    for flow in (
        *FLOWS,
        *VOLUME_FLOWS,
        *VOLUME_COPY_FLOWS,
        MigrateFlow(),
        *RESIZE_FLOWS,
        FenceFlow(),
        RecoverFlow(),
        HaRestartFlow(),
        HaRelocateFlow(),
        FlushFlow(),
        UnflushFlow(),
        *image_flows(images),
        *VF_FLOWS,
    ):
        engine.register(flow)


def answer_relay(
    relay: Relay,
    dispatcher: Dispatcher,
    inspector: Inspector,
    runner: TaskRunner,
    consoles: Consoles,
) -> None:
    """What the relay hears from peers goes to whom it concerns here."""
    relay.on_command_ended = dispatcher.on_ended_elsewhere
    relay.on_task_ended = runner.ended_elsewhere
    relay.on_inspect_result = inspector.on_relayed
    relay.on_tunnel_refused = consoles.on_refused_relayed


class PeerUrls:
    """The live servers' URLs for the agents' welcome, read at most once a renewal period
    (the last list read when the database does not answer)."""

    def __init__(self, membership: Membership, clock: Clock) -> None:
        self.membership = membership
        self.clock = clock
        self._urls: list[str] = []
        self._read = float("-inf")  # monotonic: when _urls was read

    async def read(self) -> list[str]:
        if self.clock.monotonic() - self._read >= self.membership.tick:
            try:
                self._urls = [p.url for p in await self.membership.peers()]
            except SQLAlchemyError as exc:
                log.warning("cannot read the list of servers: %s", str(exc).splitlines()[0])
            self._read = self.clock.monotonic()
        return self._urls


def join_checked(membership: Membership, db: Database) -> None:
    """Join, then check the schema again: a contract step run between this server's upgrade
    and its join (the older schema it needs removed) makes it leave at once."""
    membership.join_blocking()
    try:
        migrate.check_compatible(db)
    except BollardError:
        membership.leave_blocking()
        raise
    if db.kind != "sqlite":
        with db.read() as conn:
            others = [s.name for s in servers.live(conn, servers.db_now(conn))
                      if s.id != membership.id]  # fmt: skip
        if others:
            log.info("beside the servers %s on this database", ", ".join(others))
