"""A node that comes back: it destroys the VMs it no longer owns before it takes new work.

On the first heartbeat of every agent session, each VM the host reports is checked against
the database: a copy whose VM now belongs to another node with a newer epoch is stale (the
VM was restarted or moved elsewhere while this host was away) and is destroyed at once, with
the newer epoch (agents refuse older ones). A node that was dead, fenced or fence_failed
becomes `up` only once that is done; until then it is not a target for anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bollard.domain.errors import BollardError
from bollard.domain.protocol import Heartbeat
from bollard.domain.states import CommandType, NodeHealth
from bollard.server.clock import Clock
from bollard.server.gateway import AgentConnection
from bollard.server.ports import CommandPort, HaRecovery, Touch, UnitOfWork
from bollard.store import events, migrations_log, nodes, vms

log = logging.getLogger(__name__)

_AWAY = (NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCED, NodeHealth.FENCE_FAILED)
_FENCED = (NodeHealth.FENCED, NodeHealth.FENCE_FAILED)


class Rejoiner:
    """`first_report` is handed the first full report of every agent session."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        commands: CommandPort,
        recovery: HaRecovery,
        launch: Callable[[str], None],
        touch: Touch,
    ) -> None:
        self.work = work
        self.clock = clock
        self.commands = commands
        self.recovery = recovery
        self.launch = launch
        self.touch = touch
        self._jobs: set[asyncio.Task[None]] = set()

    def first_report(self, session: AgentConnection, msg: Heartbeat) -> None:
        job = asyncio.get_running_loop().create_task(self._rejoin(session, msg))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _stale(
        self, node: str, msg: Heartbeat
    ) -> tuple[NodeHealth, list[tuple[str, str, int, str | None]]]:
        with self.work.read() as conn:
            health = nodes.get(conn, node).health
            stale = []
            known = vms.find_many(conn, [report.uuid for report in msg.vms])
            # A resize keeps the source's copy until it is confirmed or reverted, and its
            # tasks remove the copies they leave: an open resize's copies are not stale.
            resizes = migrations_log.open_for_vms(conn, list(known))
            for report in msg.vms:
                vm = known.get(report.uuid)
                if vm is not None and vm.node != node and vm.epoch > report.epoch:
                    resize = resizes.get(vm.uuid)
                    if resize is not None and node in (resize.source, resize.dest):
                        continue
                    stale.append((vm.uuid, vm.name, vm.epoch, vm.node))
        return health, stale

    async def _rejoin(self, session: AgentConnection, msg: Heartbeat) -> None:
        node = session.node
        fenced = (NodeHealth.FENCING, NodeHealth.FENCED)
        if session.prior_health in fenced and session.boot_id == session.prior_boot_id:
            # Fenced, yet the same boot: its host was never power-cycled (or is off while a
            # stray agent runs). It is not trusted with work until it boots again.
            await self.work.run(
                self._note, node, "node.rejoin_refused",
                f"node {node} reconnected after its fence without rebooting (same boot id); "
                "it stays fenced until its host is powered on again",
            )  # fmt: skip
            return
        health, stale = await self.work.run(self._stale, node, msg)
        destroyed, failed = [], []
        for uuid, name, epoch, owner in stale:
            try:
                await self.commands.call(
                    node, CommandType.UNDEFINE, {"force": True}, vm_uuid=uuid, epoch=epoch
                )
                destroyed.append(f"{name} (owned by {owner})")
            except BollardError as exc:
                failed.append(f"{name}: {exc.message}")
                log.error(
                    "node %s: could not destroy stale copy of %s: %s", node, name, exc.message
                )
        if failed:
            message = "stale copies could not be destroyed: " + "; ".join(failed)
            await self.work.run(self._note, node, "node.rejoin_failed", message)
            return  # stays out of service; the next session tries again
        await self.work.run(
            self._up, node, health, destroyed, session.incarnation, session.prior_health
        )
        # A node is back in service: HA VMs that found no room before may fit now.
        for task_id in await self.work.run(self._restart_deferred):
            self.launch(task_id)
        self.touch()

    def _restart_deferred(self) -> list[str]:
        with self.work.write() as conn:
            return self.recovery.restart_deferred_in(conn)

    def _up(
        self,
        node: str,
        was: NodeHealth,
        destroyed: list[str],
        incarnation: str,
        prior: NodeHealth | None,
    ) -> None:
        """Bring the node up after this session's check (``was``: its health the check
        read; ``prior``: before the session began), unless the session is over or the node
        was fenced after the session began: a fence confirmed meanwhile is not this
        session's to undo (a fenced host's next session is checked on its own, boot id
        included)."""
        now = self.clock.now()
        with self.work.write() as conn:
            record = nodes.get(conn, node)
            if not record.connected or record.agent_incarnation != incarnation:
                return  # this session has ended or another replaced it: that one decides
            current = record.health
            if current is NodeHealth.FENCING:
                return  # a fence is under way: it decides
            if current in _FENCED and current is not prior:
                return  # fenced since this session began: not this session's to undo
            if current is not NodeHealth.UP and nodes.set_health(
                conn, node, NodeHealth.UP, now, expect=current
            ):
                what = f"node {node}: {current} -> up"
                if was in _AWAY:
                    what = f"node {node} rejoined after being {was}"
                if destroyed:
                    what += f"; destroyed {len(destroyed)} stale VM copies: " + ", ".join(destroyed)
                events.add(conn, "node.up", what, now, node=node, data={"destroyed": destroyed})
                log.warning(what)
            elif destroyed:
                events.add(conn, "node.stale_destroyed",
                           f"node {node}: destroyed stale VM copies: " + ", ".join(destroyed),
                           now, node=node)  # fmt: skip

    def _note(self, node: str, kind: str, message: str) -> None:
        with self.work.write() as conn:
            events.add(conn, kind, message, self.clock.now(), node=node)
