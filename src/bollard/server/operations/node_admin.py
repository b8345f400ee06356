"""Removing a node from the cluster, and rotating its agent's token.

Deleting a node removes its row, and with it its agent token (the agent is refused from then
on, at its next connection) and what its host reported; its live session on this server is
closed. It is refused, with or without `force`, while the database says the node owns VMs
or while a task involving it (flush, fence, recovery, a migration to or from it) has not
ended: move or delete those VMs first. Without `force` it is also refused while its agent is
connected or its host still reports VMs (leftovers the database does not place on it);
`force` deletes it anyway, closing the session and forgetting what the host reported (those
VMs keep running on the host, out of Bollard's sight). Commands still open to it end.

Rotating the token stores a new one's hash: the old token is refused from then on. The
session connected now authenticated before the rotation and is kept (so a planned rotation
does not make the node look dead and get fenced), unless `disconnect` asks to close it at
once (a leaked token). Either way the agent's next connection needs the new token: write it
to the agent's token file, then restart the agent (it reads the file when it starts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.exc import IntegrityError

from bollard.domain.errors import Conflict
from bollard.domain.models import Task
from bollard.server.auth import hash_token, new_token
from bollard.server.clock import Clock
from bollard.server.gateway import CLOSE_UNAUTHORIZED
from bollard.server.ports import Touch, UnitOfWork
from bollard.store import events, host_vms, nodes, tasks, vms

log = logging.getLogger(__name__)

# Task params that name a node besides the task's own (migrations, HA restarts, creation).
_NODE_PARAMS = ("node", "source", "target", "from")
_SHOWN = 10  # names listed in a refusal at most


class ClosableSession(Protocol):
    async def close(self, code: int, reason: str) -> None: ...


class LiveSessions(Protocol):
    """The agents' sessions open on this server (the gateway)."""

    def session(self, node: str) -> ClosableSession | None: ...


class OpenCommands(Protocol):
    async def abandon_node(self, node: str, reason: str) -> int:
        """End the node's open commands (and tell whoever waits for them); how many."""
        ...


@dataclass(frozen=True)
class NodeDeleted:
    name: str
    forced: bool
    session_closed: bool  # its agent's session on this server was closed
    forgotten_vms: list[str] = field(default_factory=list)  # what its host still reported
    commands_ended: int = 0


@dataclass(frozen=True)
class TokenRotated:
    node: str
    token: str  # shown once; only its hash is stored
    session: str  # "none" (not connected here), "kept" or "closed"


class NodeAdmin:
    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        sessions: LiveSessions,
        commands: OpenCommands,
        touch: Touch,
    ) -> None:
        self._work = work
        self._clock = clock
        self._sessions = sessions
        self._commands = commands
        self._touch = touch

    # -- deletion ---------------------------------------------------------------------------

    async def delete(self, name: str, *, force: bool = False) -> NodeDeleted:
        """Delete the node (see the module docstring for when it is refused)."""
        live = self._sessions.session(name) is not None
        forgotten = await self._work.run(self._delete, name, force, live)
        # Its token is gone: a session (also one opened meanwhile) is closed and cannot return.
        session = self._sessions.session(name)
        if session is not None:
            await session.close(CLOSE_UNAUTHORIZED, "node deleted")
            log.info("node %s deleted: its agent's session was closed", name)
        ended = await self._commands.abandon_node(name, f"node {name} was deleted")
        self._touch()
        return NodeDeleted(
            name=name,
            forced=force,
            session_closed=session is not None,
            forgotten_vms=forgotten,
            commands_ended=ended,
        )

    def _delete(self, name: str, force: bool, live: bool) -> list[str]:
        now = self._clock.now()
        try:
            with self._work.write() as conn:
                node = nodes.get(conn, name)
                owned = sorted(vm.name for vm in vms.on_node(conn, name))
                if owned:
                    raise Conflict(
                        f"node {name} still owns VMs {_names(owned)}: move them (vm migrate, "
                        "vm move, node flush) or delete them first (--force does not override "
                        "this)"
                    )
                busy = [
                    f"{t.id} ({t.type})"
                    for t in tasks.unfinished(conn, include_rolling_back=True)
                    if _involves(t, name)
                ]
                if busy:
                    raise Conflict(
                        f"node {name} is part of unfinished tasks {_names(busy)}: wait for them "
                        "or cancel them first"
                    )
                reported = sorted(h.name for h in host_vms.on_node(conn, name))
                problems = []
                if live or node.connected:
                    problems.append("its agent is connected")
                if reported:
                    problems.append(f"its host still reports VMs {_names(reported)}")
                if problems and not force:
                    raise Conflict(
                        f"node {name} not deleted: {' and '.join(problems)}; stop its agent "
                        "(and remove those VMs from the host), or use --force"
                    )
                nodes.delete_node(conn, name)
                forced = f" (forced: {' and '.join(problems)})" if problems else ""
                events.add(
                    conn, "node.deleted", f"node {name} deleted{forced}", now, node=name,
                    data={"forced": bool(problems), "forgotten_vms": reported},
                )  # fmt: skip
        except IntegrityError as exc:  # a VM was placed on it meanwhile (the foreign key)
            raise Conflict(f"node {name} got a VM while it was being deleted; try again") from exc
        return reported

    # -- the agent's token ------------------------------------------------------------------

    async def rotate_token(self, name: str, *, disconnect: bool = False) -> TokenRotated:
        """A new agent token for the node (see the module docstring for its session)."""
        token = new_token()
        session = self._sessions.session(name)
        outcome = "none" if session is None else "closed" if disconnect else "kept"
        await self._work.run(self._rotate, name, hash_token(token), outcome)
        if session is not None and disconnect:
            await session.close(CLOSE_UNAUTHORIZED, "agent token rotated")
            log.info("node %s: agent token rotated; its session was closed", name)
        self._touch()
        return TokenRotated(node=name, token=token, session=outcome)

    def _rotate(self, name: str, token_hash: str, session: str) -> None:
        now = self._clock.now()
        with self._work.write() as conn:
            nodes.set_token_hash(conn, name, token_hash, now)
            events.add(
                conn, "node.token_rotated",
                f"node {name}: agent token rotated (the old one is refused; session {session})",
                now, node=name, data={"session": session},
            )  # fmt: skip


def _involves(task: Task, node: str) -> bool:
    if task.node == node:
        return True
    return any(task.params.get(key) == node for key in _NODE_PARAMS)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
