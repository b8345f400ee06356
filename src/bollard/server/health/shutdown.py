"""A host's clean shutdown or reboot (issue 21): what the server does when an agent says its
host is going down (`host_shutdown` {kind}), when that agent's session ends, and when it
comes back.

The node's shutdown policy (its own, else the setting `ha.shutdown_policy`) and the kind
(poweroff, reboot) give the action (`domain.ha.shutdown_action`):

- **freeze**: recorded (`nodes.shutdown_kind`), nothing else: the node goes suspect and dead
  as its heartbeats stop, but the fence gate (fence_gate.py) never fences a frozen node, so
  nothing of it is recovered. Its VMs wait for it.
- **failover**: once its agent's session has ended, its power status is read until it reads
  off (at most `fencing.timeout` seconds; `QuickFence.fence_if_off`); then the node is dead
  at once and fenced (power off, confirmed off), and its HA VMs are recovered, without the
  `health.dead_after` wait. A host that never reads off in that time follows the usual path.
- **migrate**: the node goes into maintenance (a drain: its VMs move away, and it is never
  fenced while in maintenance); the agent's `host_shutdown_ready` is sent once the drain has
  ended (or failed: the answer says so); the agent exits after it.

The answer (`host_shutdown_ready`) is sent for every action: at once for freeze and failover.

When the node's agent says hello again (without a shutdown under way) and the node is up
(after its rejoin check), the recorded shutdown is cleared (event `node.shutdown_ended`), and
if this shutdown switched maintenance on, it is switched off: the VMs come back (the drain's
unflush). A frozen node's VMs start again through the state reconciler, as crashed VMs do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from bollard.domain.errors import BollardError, Conflict, NotFound
from bollard.domain.ha import ShutdownKind, ShutdownPolicy, shutdown_action
from bollard.domain.models import Node, Task
from bollard.domain.protocol import HostShutdown, HostShutdownReady
from bollard.domain.states import DesiredPower, NodeHealth, SchedulingState, TaskStatus
from bollard.server.clock import Clock, Deadline
from bollard.server.gateway import AgentConnection
from bollard.server.ports import SessionLookup, SettingsReader, TaskWaiter, Touch, UnitOfWork
from bollard.store import events, node_events, nodes, vms

log = logging.getLogger(__name__)

SHUTDOWN = "node.shutdown"
POLICY_SETTING = "ha.shutdown_policy"
ENDED = "node.shutdown_ended"
DRAIN_WAIT = 600.0  # seconds a drain before a shutdown may take (the agent waits as long)
RETURN_WAIT = 120.0  # seconds a returning node has to be up again before it is unfrozen
LOOK_EVERY = 1.0  # seconds between two looks at a task or node another server may change
_DRAINED = (SchedulingState.MAINTENANCE, SchedulingState.FLUSHED)


class FenceIfOff(Protocol):
    """`server/health/quick_fence.py`'s `QuickFence`."""

    async def fence_if_off(self, node: str, *, why: str, wait_off: float) -> bool: ...


class MaintenanceRequests(Protocol):
    """Per-node maintenance (operations/maintenance_ops.py, `bollard node maintenance`)."""

    async def request(self, name: str, on: bool) -> Task:
        """On: the drain task (the one under way if it is draining already); off: the task
        bringing the VMs back. Conflict when it already is so, or busy otherwise."""
        ...


Changed = Callable[[float], Awaitable[None]]  # returns when something changed, or at most then


@dataclass(frozen=True)
class Decision:
    node: str
    kind: ShutdownKind
    policy: ShutdownPolicy
    action: ShutdownPolicy
    again: bool  # this shutdown was recorded already (the agent announced it again)


def _policy(own: str | None, setting: str) -> ShutdownPolicy:
    try:
        return ShutdownPolicy(own or setting)
    except ValueError:
        log.warning("unknown shutdown policy %r: conditional", own or setting)
        return ShutdownPolicy.CONDITIONAL


_WHAT = {
    ShutdownPolicy.FREEZE: "freeze: it is not fenced and nothing of it is recovered; its VMs "
    "wait for it",
    ShutdownPolicy.FAILOVER: "failover: once it reads powered off it is fenced and its HA VMs "
    "are recovered elsewhere",
    ShutdownPolicy.MIGRATE: "migrate: maintenance on, its VMs move away before it goes down",
}


def _failover_kind(record: Node, setting: str) -> str | None:
    """The recorded shutdown's kind when it means failover for the node, else None."""
    try:
        kind = ShutdownKind(record.shutdown_kind or "")
    except ValueError:
        return None
    action = shutdown_action(_policy(record.shutdown_policy, setting), kind)
    return kind.value if action is ShutdownPolicy.FAILOVER else None


MOVED = "migrate succeeded"  # a drain's outcome for a VM that moved (tasks/flows/drain.py)


def _drain_summary(result: dict[str, Any], most: int = 5) -> str:
    """ "3 of 3 VMs moved", and what became of the others (at most ``most`` named)."""
    progress = result.get("progress") or {}
    outcomes: dict[str, str] = progress.get("outcomes") or {}
    if not outcomes:
        return "no VM to move"
    moved = sum(1 for outcome in outcomes.values() if outcome == MOVED)
    others = [f"{name}: {outcome}" for name, outcome in sorted(outcomes.items())
              if outcome != MOVED]  # fmt: skip
    more = f"; and {len(others) - most} more" if len(others) > most else ""
    text = f"{moved} of {len(outcomes)} VMs moved"
    return text + ("; " + "; ".join(others[:most]) + more if others else "")


class HostShutdowns:
    """`on_host_shutdown` handles the agents' `host_shutdown` messages; `on_session_lost` and
    `on_session_opened` are the gateway's callbacks."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        settings: SettingsReader,
        sessions: SessionLookup,
        quick_fence: FenceIfOff,
        maintenance: MaintenanceRequests,
        waiter: TaskWaiter,
        changed: Changed,
        touch: Touch,
    ) -> None:
        self.work = work
        self.clock = clock
        self.settings = settings
        self.sessions = sessions
        self.quick_fence = quick_fence
        self.maintenance = maintenance
        self.waiter = waiter
        self.changed = changed
        self.touch = touch
        self._jobs: dict[str, asyncio.Task[None]] = {}  # "<what>:<node>" -> its job
        self._closing = False

    def _spawn(self, key: str, work: Coroutine[Any, Any, None], *, replace: bool = False) -> None:
        """Run ``work`` as a job of its own, unless a job under ``key`` still runs (with
        ``replace``: that one is cancelled)."""
        running = self._jobs.get(key)
        if running is not None and not running.done():
            if not replace:
                work.close()
                return
            running.cancel()
        job = asyncio.get_running_loop().create_task(self._guarded(key, work), name=key)
        self._jobs[key] = job

    async def _guarded(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:  # a job of its own: nothing else would see the failure
            log.exception("%s failed", key)
        finally:
            if self._jobs.get(key) is asyncio.current_task():
                del self._jobs[key]

    async def close(self) -> None:
        """Stop the jobs under way (the server is stopping)."""
        self._closing = True
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=5.0)

    # -- host_shutdown ---------------------------------------------------------------------

    async def on_host_shutdown(self, session: AgentConnection, msg: HostShutdown) -> None:
        """Record it and act (the answer comes from a job for migrate: the session's other
        messages are not held up by the drain)."""
        setting = await self.work.run(self.settings.get, POLICY_SETTING)
        decision = await self.work.run(self._record, session.node, msg.kind, str(setting))
        self.touch()
        if decision.action is ShutdownPolicy.MIGRATE:
            self._spawn(f"shutdown-drain:{session.node}", self._drain_then_answer(decision))
            return
        message = _WHAT[decision.action].partition(": ")[2]
        await self._answer(decision.node, True, decision.action, message)

    def _record(self, node: str, kind: ShutdownKind, setting: str) -> Decision:
        now = self.clock.now()
        with self.work.write() as conn:
            record = nodes.get(conn, node)
            policy = _policy(record.shutdown_policy, setting)
            action = shutdown_action(policy, kind)
            again = record.shutdown_kind == kind.value
            if not again:
                nodes.record_shutdown(conn, node, kind.value, now)
                source = "its own" if record.shutdown_policy else "the setting ha.shutdown_policy"
                events.add(
                    conn, SHUTDOWN,
                    f"node {node}: its host is shutting down cleanly ({kind.value}); shutdown "
                    f"policy {policy.value} ({source}): {_WHAT[action]}",
                    now, node=node,
                    data={
                        "kind": kind.value, "policy": policy.value, "action": action.value,
                        # Whether maintenance is this shutdown's to end when the node returns.
                        "maintenance_set": action is ShutdownPolicy.MIGRATE
                        and not record.maintenance,
                    },
                )  # fmt: skip
                log.warning("node %s: clean %s, policy %s: %s", node, kind.value, policy.value,
                            action.value)  # fmt: skip
            return Decision(node, kind, policy, action, again)

    async def _answer(self, node: str, ok: bool, action: ShutdownPolicy, message: str) -> None:
        """Send host_shutdown_ready to the node's current session (a reconnected agent
        waits on its new one)."""
        session = self.sessions.session(node)
        if session is None:
            log.warning("node %s: its agent left before host_shutdown_ready (%s)", node, message)
            return
        try:
            await session.send(HostShutdownReady(ok=ok, action=action.value, message=message))
        except ConnectionError as exc:
            log.warning("node %s: host_shutdown_ready not sent: %s", node, exc)

    async def _drain_then_answer(self, decision: Decision) -> None:
        node = decision.node
        try:
            ok, message = await self._drain(node)
        except BollardError as exc:
            ok, message = False, f"maintenance could not start: {exc.message}"
        await self.work.run(self._note_drain, node, ok, message)
        self.touch()
        await self._answer(node, ok, decision.action, message)

    async def _drain(self, node: str) -> tuple[bool, str]:
        """Maintenance on, and the drain's outcome once it ended (or at DRAIN_WAIT)."""
        try:
            task_id = (await self.maintenance.request(node, True)).id
        except Conflict:
            record = await self.work.run(self._node, node)
            if record.maintenance and record.scheduling in _DRAINED:
                return True, f"node {node} is in maintenance already: drained, no VM to move"
            raise
        deadline = Deadline.after(self.clock, DRAIN_WAIT)
        while True:
            done = await self.waiter.wait(task_id, min(deadline.remaining(), LOOK_EVERY * 5))
            if done.state.ended:
                break
            if deadline.passed:
                return False, f"the drain (task {task_id}) still runs after {DRAIN_WAIT:.0f} s"
            if not self.waiter.is_running(task_id):
                await self.changed(min(LOOK_EVERY, deadline.remaining()))  # run elsewhere
        if done.state is not TaskStatus.SUCCEEDED:
            return False, f"the drain (task {task_id}) {done.state.value}: {done.error or '?'}"
        left = await self.work.run(self._left_on, node)
        summary = _drain_summary(done.result)
        if left:
            return True, f"drained (task {task_id}: {summary}); still on it: {', '.join(left)}"
        return True, f"drained (task {task_id}: {summary})"

    def _node(self, node: str) -> Node:
        with self.work.read() as conn:
            return nodes.get(conn, node)

    def _left_on(self, node: str) -> list[str]:
        """VMs meant to run that are still on the node (those HA leaves alone stay)."""
        with self.work.read() as conn:
            owned = vms.on_node(conn, node)
        return sorted(v.name for v in owned if v.desired_power is DesiredPower.RUNNING)

    def _note_drain(self, node: str, ok: bool, message: str) -> None:
        with self.work.write() as conn:
            kind = "node.shutdown_ready" if ok else "node.shutdown_drain_failed"
            events.add(conn, kind, f"node {node}: {message}; its host may go down",
                       self.clock.now(), node=node)  # fmt: skip

    # -- the agent has left -----------------------------------------------------------------

    async def on_session_lost(self, session: AgentConnection) -> None:
        if self._closing:
            return
        self._spawn(f"shutdown-failover:{session.node}", self._failover(session.node))

    async def _failover(self, node: str) -> None:
        record = await self.work.run(self._away, node)
        if record is None or not record.shutdown_kind:
            return  # (most sessions end without a shutdown: one read, no more)
        setting = await self.work.run(self.settings.get, POLICY_SETTING)
        kind = _failover_kind(record, str(setting))
        if kind is None:
            return
        wait = float(await self.work.run(self.settings.get, "fencing.timeout"))
        why = f"its host shut down cleanly ({kind}) and its power reads off"
        if await self.quick_fence.fence_if_off(node, why=why, wait_off=wait):
            return
        await self.work.run(
            self._note, node, "node.shutdown_not_off",
            f"node {node}: its host announced a clean {kind}, but its power was not seen off "
            f"within {wait:g} s of its agent's exit (still on, unreadable, or no power driver): "
            "the usual wait for a dead node",
        )  # fmt: skip

    def _away(self, node: str) -> Node | None:
        """The node's record while its agent is away (None: back already, or no such node)."""
        with self.work.read() as conn:
            try:
                record = nodes.get(conn, node)
            except NotFound:
                return None
        return None if record.connected else record

    # -- the agent is back ------------------------------------------------------------------

    def on_session_opened(self, session: AgentConnection) -> None:
        if self._closing or session.shutting_down:
            return  # still shutting down: the agent reconnected to wait for its answer
        self._spawn(
            f"shutdown-return:{session.node}",
            self._returned(session.node, session.incarnation),
            replace=True,  # an older session's look is over
        )

    async def _returned(self, node: str, incarnation: str) -> None:
        deadline = Deadline.after(self.clock, RETURN_WAIT)
        while True:
            state = await self.work.run(self._return_state, node, incarnation)
            if state != "waiting":
                break
            if deadline.passed:
                log.warning("node %s: back after a clean shutdown, but not up within %.0f s; "
                            "its shutdown stays recorded", node, RETURN_WAIT)  # fmt: skip
                return
            await self.changed(min(LOOK_EVERY, deadline.remaining()))
        if state != "up":
            return
        if await self.work.run(self._clear, node):
            try:
                await self.maintenance.request(node, False)
            except BollardError as exc:
                await self.work.run(
                    self._note, node, "node.shutdown_maintenance_kept",
                    f"node {node}: maintenance set by its clean shutdown could not be switched "
                    f"off: {exc.message} (`bollard node maintenance {node} off`)",
                )  # fmt: skip
        self.touch()

    def _return_state(self, node: str, incarnation: str) -> str:
        """none (no shutdown recorded), gone (this session is over), waiting (not up yet), up."""
        with self.work.read() as conn:
            try:
                record = nodes.get(conn, node)
            except NotFound:
                return "none"
        if not record.shutdown_kind:
            return "none"
        if not record.connected or record.agent_incarnation != incarnation:
            return "gone"
        return "up" if record.health is NodeHealth.UP else "waiting"

    def _clear(self, node: str) -> bool:
        """Clear the recorded shutdown; whether maintenance is to be switched off (this
        shutdown switched it on, and it still is)."""
        now = self.clock.now()
        with self.work.write() as conn:
            record = nodes.get(conn, node)
            if not record.shutdown_kind:
                return False
            announced = node_events.latest(conn, node, SHUTDOWN)
            ours = bool(announced is not None and announced.data.get("maintenance_set"))
            nodes.record_shutdown(conn, node, None, now)
            maintenance_off = ours and record.maintenance
            then = "; maintenance it set goes off: its VMs come back" if maintenance_off else ""
            data = {"kind": record.shutdown_kind, "maintenance_off": maintenance_off}
            message = f"node {node} is back after its clean {record.shutdown_kind}{then}"
            events.add(conn, ENDED, message, now, node=node, data=data)
            log.warning("node %s is back after its clean %s", node, record.shutdown_kind)
            return maintenance_off

    def _note(self, node: str, kind: str, message: str) -> None:
        with self.work.write() as conn:
            events.add(conn, kind, message, self.clock.now(), node=node)
        log.warning(message)
