"""The assembly: the one place that builds the server's components and wires them.

Every component takes what it uses as explicit constructor arguments, typed by the small
protocols of ports.py (or plain callables: a kick, a launch); this module is the only one
that knows them all, and nothing in `bollard.server` imports it (the entry point, main.py,
and tests do). Where two components need each other (the dispatcher and the command
reconciler, the task engine and the operations whose tasks it runs) one side gets a callable
that reaches the other once both exist: the cycle is visible here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI

from bollard.domain.protocol import (
    Answer,
    Heartbeat,
    HostShutdown,
    InspectResult,
    Progress,
    QueryResult,
    StorageReport,
    TunnelRefused,
)
from bollard.domain.servers import ServerRecord
from bollard.durable import private_dir
from bollard.server import scheduling
from bollard.server.agent_records import AgentRecords
from bollard.server.api.access_log import AccessLogFile
from bollard.server.api.deps import ApiServices
from bollard.server.app import create_app
from bollard.server.assembly_parts import (
    LauncherLater,
    PeerUrls,
    VmRequestsLater,
    answer_relay,
    join_checked,
    register_flows,
    relay_for,
)
from bollard.server.auth import bootstrap_admin_token
from bollard.server.clock import Clock, SystemClock
from bollard.server.cluster.fence_requests import FenceRequests
from bollard.server.cluster.leader import Leadership
from bollard.server.cluster.membership import Membership
from bollard.server.cluster.relay import ClusterSessions
from bollard.server.cluster.singletons import DutyWork, Singletons
from bollard.server.config import ServerConfig
from bollard.server.consoles import Consoles
from bollard.server.dispatch import Dispatcher
from bollard.server.events_bus import EventBus
from bollard.server.gateway import SUPPORTED_PROTOCOLS, Gateway
from bollard.server.group_commit import GroupCommit
from bollard.server.health.failback import Failback
from bollard.server.health.fence_gate import FenceGate
from bollard.server.health.fencer import Fencer
from bollard.server.health.monitor import HealthMonitor
from bollard.server.health.power import PowerDriverFactory
from bollard.server.health.quick_fence import QuickFence
from bollard.server.health.rejoin import Rejoiner
from bollard.server.health.shutdown import HostShutdowns
from bollard.server.images import ImageSpool
from bollard.server.inspect import Inspector
from bollard.server.late_outcomes import LateOutcomes
from bollard.server.metrics import ServerMetrics
from bollard.server.operations.cell_ops import CellOperations
from bollard.server.operations.drain_ops import DrainOperations
from bollard.server.operations.flavor_ops import FlavorOperations
from bollard.server.operations.ha_ops import HaOperations
from bollard.server.operations.image_ops import ImageOperations
from bollard.server.operations.maintenance_ops import MaintenanceOperations
from bollard.server.operations.migrate_ops import MigrateOperations
from bollard.server.operations.node_admin import NodeAdmin
from bollard.server.operations.node_ops import NodeOperations
from bollard.server.operations.pool_ops import PoolOperations
from bollard.server.operations.relocate_ops import RelocateOperations
from bollard.server.operations.resize_ops import ResizeOperations
from bollard.server.operations.sriov_ops import SriovOperations
from bollard.server.operations.vm_ops import VmOperations
from bollard.server.operations.volume_ops import VolumeOperations
from bollard.server.ports import UnitOfWork
from bollard.server.reconcile.commands import CommandReconciler
from bollard.server.reconcile.ha_restarts import HaLimits, counted, reset_steady
from bollard.server.reconcile.resize_confirm import AutoConfirm
from bollard.server.reconcile.scanners import Scanners
from bollard.server.reconcile.state import StateReconciler
from bollard.server.reconcile.state_fixes import StateFixer
from bollard.server.reconcile.storage_drift import StorageLooks
from bollard.server.reconcile.storage_fixes import StorageFixer
from bollard.server.reports import Reports
from bollard.server.secrets import SecretBox
from bollard.server.settings import Settings
from bollard.server.storage_query import StorageQueries
from bollard.server.tasks.context import StepServices, Timeouts
from bollard.server.tasks.engine import TaskEngine
from bollard.server.tasks.ownership import TaskTakeover
from bollard.server.tasks.runner import TaskRunner
from bollard.server.unit_of_work import DatabaseWork
from bollard.server.web.novnc import find_novnc, unavailable_message
from bollard.store import commands, migrate, nodes, servers
from bollard.store.db import Database

log = logging.getLogger(__name__)

LOOPS_STOP_WAIT = 5.0  # seconds the background loops have to stop at shutdown


class Assembly:
    """A running server's components, built and wired (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        db: Database,
        *,
        admin_token_hash: str,
        clock: Clock,
        schema_revision: str = "",
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock_ = clock
        self.admin_token_hash = admin_token_hash
        work = self.work = DatabaseWork(db)

        # This server among the servers of its database (server/cluster/). SQLite runs one
        # server (a second is refused). On PostgreSQL several may register; the cluster-wide
        # duties run on the leader only, their writes fenced by its lease (singletons.py).
        sqlite = db.kind == "sqlite"
        # The lease renewals' own threads: a burst of API requests in the shared pool must
        # not delay them (a leader deposed, a member taken for dead, under load).
        self._cluster_calls = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cluster")
        self.membership = Membership(
            work=work,
            clock=clock_,
            name=config.server_name(),
            url=config.public_url(),
            schema_revision=schema_revision,
            ttl=config.lease_ttl,
            single=sqlite,
            local=sqlite,
            protocols=sorted(SUPPORTED_PROTOCOLS),
            executor=self._cluster_calls,
        )
        self.leadership = Leadership(
            work=work,
            clock=clock_,
            holder=self.membership.id,
            ttl=config.lease_ttl,
            executor=self._cluster_calls,
        )
        self.membership.on_rejoined(self._rejoined)
        self.duties = Singletons(
            clock=clock_, leadership=None if sqlite else self.leadership, stop_wait=LOOPS_STOP_WAIT
        )
        duty_work: UnitOfWork = work if sqlite else DutyWork(work, self.leadership)
        self.membership.reap_work = duty_work
        self.peer_urls = PeerUrls(self.membership, clock_)
        self.settings = Settings(work=work, clock=clock_)
        self.secrets = SecretBox(config.data_dir)
        self.access_log = AccessLogFile(config.access_log or config.data_dir / "access.log")
        self.event_bus = EventBus(clock_)
        touch = self.event_bus.touch

        # Agents: their sessions, and the reports they send.
        self.agent_records = AgentRecords(
            work=work, clock=clock_, server_id=lambda: self.membership.id
        )
        self.gateway = Gateway(
            clock=clock_,
            records=self.agent_records,
            heartbeat_interval=config.heartbeat_interval,
            servers=self.peer_urls.read,
        )
        self.metrics = ServerMetrics(lambda: len(self.gateway.sessions))
        # Sending to agents: on PostgreSQL also through the peer holding a node's session.
        self.bus, self.relay = relay_for(db, config.db_url, clock_, work, self.gateway,
                                         me=lambda: self.membership.id)  # fmt: skip
        sessions = self.gateway if self.relay is None else ClusterSessions.of(self.relay)
        # Agents' reports share transactions, in a thread of their own (see group_commit.py).
        self.report_writes = GroupCommit(work, own_thread=True)
        self.runner = TaskRunner(
            work=work,
            clock=clock_,
            on_ended=None if self.relay is None else self.relay.task_ended_soon,
        )

        # Commands and what becomes of them.
        late = LateOutcomes(work=work, clock=clock_)
        self.dispatcher = Dispatcher(
            work=work,
            clock=clock_,
            sessions=sessions,
            report_writes=self.report_writes,
            kick_commands=lambda node: self.command_reconciler.kick(node),
            on_late_outcome=late.on_late_outcome,
            command_timeout=config.command_timeout,
            on_unawaited=None if self.relay is None else self.relay.command_ended_soon,
        )
        self.command_reconciler = CommandReconciler(
            work=work,
            clock=clock_,
            settings=self.settings,
            sessions=self.gateway,
            outcomes=self.dispatcher,
        )
        self.inspector = Inspector(
            work=work,
            clock=clock_,
            sessions=sessions,
            unclaimed=None if self.relay is None else self.relay.inspect_answered,
        )
        self.power = PowerDriverFactory(
            work=work, secrets=self.secrets, sim_fabric_dir=config.sim_fabric_dir
        )

        # Tasks. Steps and the reconcilers reach the operations below through callables.
        requests = VmRequestsLater(
            power=lambda name, op, **params: self.vm_ops.power(name, op, **params),
            migrate=lambda name, mode: self.migrate_ops.request(name, mode=mode),
        )
        self.ha_ops = HaOperations(launcher=LauncherLater(lambda: self.engine), clock=clock_)
        self.images = ImageSpool(config.data_dir / "images")  # VM disks between cells
        self.engine = TaskEngine(
            services=StepServices(
                work=work,
                clock=clock_,
                settings=self.settings,
                commands=self.dispatcher,
                sessions=sessions,
                inspector=self.inspector,
                requests=requests,
                recovery=self.ha_ops,
                power=self.power,
                kick_state=lambda node: self.state_reconciler.kick(node),
                touch=touch,
                timeouts=Timeouts(
                    command=config.command_timeout,
                    shutdown=config.shutdown_timeout,
                    heartbeat_interval=config.heartbeat_interval,
                ),
            ),
            runner=self.runner,
            owner=lambda: self.membership.id,
        )
        # The tasks of servers found gone, taken over (and this server's own, after it
        # joined again under a new id).
        self.task_takeover = TaskTakeover(
            engine=self.engine, clock=clock_, interval=self.membership.tick
        )
        register_flows(self.engine, self.images)

        # Operations, as the API (and steps, and reconcilers) ask for them.
        self.vm_ops = VmOperations(work=work, clock=clock_, launcher=self.engine)
        self.migrate_ops = MigrateOperations(work=work, clock=clock_, launcher=self.engine)
        self.volume_ops = VolumeOperations(work=work, clock=clock_, launcher=self.engine)
        self.flavor_ops = FlavorOperations(work=work, clock=clock_)
        self.sriov_ops = SriovOperations(work=work, launcher=self.engine, touch=touch)
        self.resize_ops = ResizeOperations(work=work, clock=clock_, launcher=self.engine)
        self.image_ops = ImageOperations(
            work=work, clock=clock_, launcher=self.engine, spool=self.images
        )
        self.storage = StorageQueries(work=work, clock=clock_, sessions=self.gateway, touch=touch)
        self.pool_ops = PoolOperations(
            work=work, clock=clock_, touch=touch, kick_monitor=self.storage.kick
        )
        self.drain_ops = DrainOperations(
            work=work, clock=clock_, launcher=self.engine, canceller=self.engine, touch=touch
        )

        # Reconcilers and health.
        storage_looks = StorageLooks(work=duty_work, clock=clock_, storage=self.storage)
        self.state_reconciler = StateReconciler(
            work=duty_work,
            clock=clock_,
            settings=self.settings,
            runner=self.runner,
            scanners=Scanners(db, config.reconcile_scan, clock=clock_),
            metrics=self.metrics,
            touch=touch,
            fixer=StateFixer(
                work=duty_work,
                clock=clock_,
                settings=self.settings,
                requests=requests,
                commands=self.dispatcher,
                recovery=self.ha_ops,
                launch=self.engine.launch,
                runner=self.runner,
                storage=StorageFixer(
                    work=duty_work, clock=clock_, looks=storage_looks, commands=self.dispatcher
                ),
                resizes=self.resize_ops,
                limits=HaLimits(
                    clock=clock_,
                    settings=self.settings,
                    relocations=RelocateOperations(launcher=self.engine, clock=clock_),
                ),
            ),
            heartbeat_interval=config.heartbeat_interval,
            storage=storage_looks,
            server_id=lambda: self.membership.id,
        )
        self.fencer = Fencer(work=duty_work, clock=clock_, launcher=self.engine, waiter=self.runner)
        self.auto_confirm = AutoConfirm(
            work=duty_work, clock=clock_, settings=self.settings, resizes=self.resize_ops
        )
        # Whether a dead node is fenced: not in maintenance, frozen or idle (fence_gate.py).
        self.fence_gate = FenceGate(work=work, clock=clock_)
        self.monitor = HealthMonitor(
            work=duty_work,
            clock=clock_,
            settings=self.settings,
            heartbeat_interval=config.heartbeat_interval,
            touch=touch,
            request_fence=self.fencer.request,
            gate=self.fence_gate,
            own_lease=sqlite,  # (on PostgreSQL the leader's lease decides)
        )
        # Fast failover: an agent's session ends, its host reads off, it is fenced now (by
        # the leader's fencer, asked over the bus when this server does not lead).
        self.fence_requests = fences = FenceRequests(
            local=self.fencer.request, leads=lambda: self.leadership.is_leader, bus=self.bus
        )
        fences.subscribe()
        self.quick_fence = QuickFence(work=work, clock=clock_, settings=self.settings,
                                      power=self.power, gate=self.fence_gate,
                                      request_fence=fences.request, touch=touch)  # fmt: skip
        self.maintenance_ops = MaintenanceOperations(
            work=work,
            clock=clock_,
            launcher=self.engine,
            canceller=self.engine,
            touch=touch,
            kick_monitor=self.monitor.kick,
        )
        self.rejoiner = Rejoiner(
            work=work,
            clock=clock_,
            commands=self.dispatcher,
            recovery=self.ha_ops,
            launch=self.engine.launch,
            touch=touch,
        )
        self.node_ops = NodeOperations(
            work=work,
            clock=clock_,
            settings=self.settings,
            secrets=self.secrets,
            power=self.power,
            drains=self.drain_ops,
            launcher=self.engine,
            touch=touch,
            kick_monitor=self.monitor.kick,
        )
        self.node_admin = NodeAdmin(
            work=work, clock=clock_, sessions=self.gateway, commands=self.dispatcher, touch=touch
        )

        # HA VMs back to the better node of their group (and their restart counts reset).
        self.failback = Failback(
            work=duty_work,
            clock=clock_,
            settings=self.settings,
            heartbeat_interval=config.heartbeat_interval,
            migrations=self.migrate_ops,
            holder=self.monitor.holder if sqlite else None,
            touch=touch,
            target_of=scheduling.failback_target,
            reset_steady=reset_steady,
            counted=counted,
        )

        # What the agents' messages go to.
        reports = Reports(
            clock=clock_,
            report_writes=self.report_writes,
            metrics=self.metrics,
            first_report=self.rejoiner.first_report,
            kick_state=self.state_reconciler.kick,
            store_journal=self.dispatcher.on_journal,
        )
        self.reports = reports
        self.gateway.handle_messages(Heartbeat, reports.on_heartbeat)
        self.gateway.handle_messages(Answer, self.dispatcher.on_answer)
        self.gateway.handle_messages(Progress, self.dispatcher.on_progress)
        self.gateway.handle_messages(QueryResult, self.command_reconciler.on_query_result)
        self.gateway.handle_messages(InspectResult, self.inspector.on_result)
        self.gateway.handle_messages(StorageReport, self.storage.on_report)
        self.gateway.on_session_opened.append(lambda link: self.storage.kick())
        self.gateway.on_session_opened.append(lambda link: self.command_reconciler.kick(link.node))
        self.gateway.on_session_lost.append(self.dispatcher.on_session_lost)
        self.gateway.on_session_lost.append(self.quick_fence.on_session_lost)
        # Clean shutdowns of hosts: their policies (health/shutdown.py).
        self.host_shutdowns = HostShutdowns(
            work=work,
            clock=clock_,
            settings=self.settings,
            sessions=self.gateway,
            quick_fence=self.quick_fence,
            maintenance=self.maintenance_ops,
            waiter=self.runner,
            changed=self.event_bus.changed,
            touch=touch,
        )
        self.gateway.handle_messages(HostShutdown, self.host_shutdowns.on_host_shutdown)
        self.gateway.on_session_lost.append(self.host_shutdowns.on_session_lost)
        self.gateway.on_session_opened.append(self.host_shutdowns.on_session_opened)

        # Graphical consoles: tickets, and tunnels through the agents (server/consoles.py).
        self.consoles = Consoles(
            clock=clock_,
            sessions=sessions,
            work=work,
            touch=touch,
            node_for_token=self.gateway.records.node_for_token,
            local=self.gateway,
            own_url=config.public_url(),
            unclaimed=None if self.relay is None else self.relay.tunnel_refused,
        )
        if self.relay is not None:
            answer_relay(self.relay, self.dispatcher, self.inspector, self.runner, self.consoles)
        self.gateway.handle_messages(TunnelRefused, self.consoles.on_refused)
        self._loops: list[asyncio.Task[None]] = []

    # -- the HTTP side ------------------------------------------------------------------

    def api_services(self) -> ApiServices:
        return ApiServices(
            work=self.work,
            clock=self.clock,
            settings=self.settings,
            vm_ops=self.vm_ops,
            migrate_ops=self.migrate_ops,
            node_ops=self.node_ops,
            node_admin=self.node_admin,
            maintenance_ops=self.maintenance_ops,
            pool_ops=self.pool_ops,
            volume_ops=self.volume_ops,
            flavor_ops=self.flavor_ops,
            resize_ops=self.resize_ops,
            cell_ops=CellOperations(work=self.work, clock=self.clock),
            canceller=self.engine,
            waiter=self.runner,
            inspector=self.inspector,
            drift=self.state_reconciler,
            kick_commands=lambda: self.command_reconciler.kick(None),
            events=self.event_bus,
            admin_token_hash=self.admin_token_hash,
            db_kind=self.db.kind,
            heartbeat_interval=self.config.heartbeat_interval,
            images=self.images,
            image_ops=self.image_ops,
            node_for_token=self.gateway.records.node_for_token,
            sriov_ops=self.sriov_ops,
            server_id=lambda: self.membership.id,
        )

    async def _rejoined(self, record: ServerRecord) -> None:
        """This server joined again under a new id: it tries for the leader's lease as that
        one (the old id's lease, if it held it, expires), and records the agents' sessions it
        still holds under it (the leader's reaper ended them under the old id)."""
        self.leadership.holder = record.id
        nodes_held = await self.agent_records.reclaim(list(self.gateway.sessions.values()))
        if self.relay is not None:
            for node in nodes_held:
                self.relay.soon(self.relay.announce_session(node, True))

    def app(self) -> FastAPI:
        """The FastAPI app serving the REST API and the agents' WebSocket endpoint."""
        return create_app(
            self.api_services(),
            agent_endpoint=self.gateway.handle,
            consoles=self.consoles,
            render_metrics=self.metrics.render,
            on_start=self.start_background,
            on_stop=self.stop,
            max_body_bytes=self.config.max_body_bytes,
            novnc_dir=self._novnc_dir(),
        )

    def _novnc_dir(self) -> Path | None:
        found = find_novnc(self.config.novnc_dir)
        if found is None:
            log.warning("%s", unavailable_message())
        else:
            log.info("web console: noVNC from %s", found)
        return found

    # -- life cycle -----------------------------------------------------------------------

    def recover_after_restart(self) -> None:
        """Close what a previous run of the server left open, before any agent connects:
        every node is disconnected, and commands that were CREATED or SENT become
        INTERRUPTED, for the command reconciler to settle when their agents reconnect.
        Tasks left running are concluded by `start_background`."""
        now = self.clock.now()
        with self.db.write() as conn:
            if self.db.kind == "sqlite":
                nodes.mark_all_disconnected(conn, now)
                interrupted = commands.interrupt_unfinished(conn, now)
            else:  # the sessions of live peers and their commands are theirs
                live = [s.id for s in servers.live(conn, servers.db_now(conn))]
                nodes.disconnect_unheld(conn, live, now)
                held = nodes.session_holders(conn)  # (by live peers only, now)
                interrupted = commands.interrupt_unfinished(conn, now, except_nodes=held)
        if interrupted:
            log.warning("after restart: %d command(s) marked INTERRUPTED", interrupted)

    def join(self) -> None:
        """Register this server in `servers` (before it serves: on SQLite, a second live
        server is refused with ServerConflict; a schema contracted meanwhile, SchemaTooNew)."""
        join_checked(self.membership, self.db)

    async def start_background(self) -> None:
        """Called once the event loop runs: conclude interrupted tasks, start the loops."""
        self.access_log.start()
        if self.membership.record is None:
            await self.membership.join()
        if self.bus is not None and self.relay is not None:
            await self.bus.start()
            self._loops.append(asyncio.create_task(
                self.relay.keep_directory(self.membership.tick), name="session-directory"
            ))  # fmt: skip
        await self.engine.resume_all()
        for name, duty in (
            ("health-monitor", self.monitor.run),
            ("state-reconciler", self.state_reconciler.run),
            ("fencer", self.fencer.run),
            ("resize-auto-confirm", self.auto_confirm.run),
            ("ha-failback", self.failback.run),
        ):
            self.duties.add(name, duty)
        if self.db.kind != "sqlite":
            self.duties.add("server-reaper", self.membership.reap_forever)
        await self.duties.start()
        for name, loop in (
            ("membership", self.membership.run()),
            ("leadership", self.leadership.run()),
            ("command-reconciler", self.command_reconciler.run()),
            ("storage-monitor", self.storage.run()),
            ("task-takeover", self.task_takeover.run()),
        ):
            self._loops.append(asyncio.create_task(loop, name=name))

    async def stop(self) -> None:
        """Stop the loops, close the agents' sessions, stop the tasks, release the database."""
        for loop in self._loops:
            loop.cancel()
        if self._loops:
            await asyncio.wait(self._loops, timeout=LOOPS_STOP_WAIT)
        self._loops.clear()
        await self.duties.stop()
        if self.bus is not None:
            await self.bus.close()
        await self.leadership.resign()
        await self.membership.leave()
        await self.state_reconciler.close()
        await self.quick_fence.close()
        await self.host_shutdowns.close()
        await self.gateway.close_all()
        await self.runner.shutdown()
        await self.report_writes.close()
        await asyncio.to_thread(self._cluster_calls.shutdown, wait=True, cancel_futures=True)
        self.db.dispose()
        self.access_log.stop()


def prepare(config: ServerConfig, clock: Clock | None = None) -> Assembly:
    """Open the database, bring its schema up to date (refusing a newer one), make sure an
    admin token exists, build the server, and close what a previous run left open."""
    private_dir(config.data_dir)
    db = Database(config.db_url)
    schema = migrate.upgrade(db)
    log.info("database %s at schema revision %s", db.kind, schema.revision)
    clock = clock or SystemClock()
    token_hash = bootstrap_admin_token(db, config.data_dir, clock)
    assembly = Assembly(
        config, db, admin_token_hash=token_hash, clock=clock, schema_revision=schema.head
    )
    try:
        assembly.join()
    except BaseException:
        db.dispose()
        raise
    assembly.recover_after_restart()
    return assembly
