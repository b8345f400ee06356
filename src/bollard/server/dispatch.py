"""The command dispatcher: every command is written to the database before it is sent, and
its caller waits for the answer with a deadline.

States follow the whitelisted table of bollard.domain.commands: CREATED is written first,
then SENT (before the bytes leave, so an answer can never arrive for an unsent command), then
COMPLETED | FAILED on the answer, TIMED_OUT at the deadline, INTERRUPTED when the session is
lost. Recovering interrupted and timed-out commands is the command reconciler's job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bollard.domain.commands import CommandState
from bollard.domain.errors import CommandFailed, CommandTimedOut, NodeUnavailable
from bollard.domain.ids import new_id
from bollard.domain.protocol import Answer, Command, Progress
from bollard.domain.states import CommandType
from bollard.store import commands

if TYPE_CHECKING:
    from bollard.server.gateway import AgentSession
    from bollard.server.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    node: str
    future: asyncio.Future[Answer]
    progress: list[Progress] = field(default_factory=list)


class Dispatcher:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._pending: dict[str, _Pending] = {}

    async def call(
        self,
        node: str,
        command: CommandType,
        args: dict[str, Any] | None = None,
        *,
        vm_uuid: str | None = None,
        epoch: int = 0,
        task_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a command to a node's agent and return the answer's result.

        Raises NodeUnavailable (not connected, or the session was lost), CommandFailed
        (the agent reported a failure) or CommandTimedOut.
        """
        timeout = timeout if timeout is not None else self.rt.config.command_timeout
        cid = new_id()
        now = self.rt.clock.now()
        args = dict(args or {})
        await self.rt.db_call(
            self._create, cid, node, command, args, vm_uuid, epoch, task_id, now, timeout
        )
        session = self.rt.gateway.session(node)
        if session is None:
            await self._finish(cid, CommandState.FAILED, error="node not connected")
            raise NodeUnavailable(f"node {node!r} is not connected")
        loop = asyncio.get_running_loop()
        pending = _Pending(node=node, future=loop.create_future())
        self._pending[cid] = pending
        try:
            await self._finish(cid, CommandState.SENT, attempts=1)
            msg = Command(
                id=cid, command=command, args=args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout
            )
            try:
                await session.send(msg)
            except (RuntimeError, OSError) as exc:
                await self._finish(cid, CommandState.INTERRUPTED, error=f"send failed: {exc}")
                raise NodeUnavailable(f"node {node!r}: the command could not be sent") from exc
            try:
                answer = await asyncio.wait_for(asyncio.shield(pending.future), timeout)
            except TimeoutError:
                await self._finish(cid, CommandState.TIMED_OUT, error="no answer before deadline")
                raise CommandTimedOut(
                    f"{command} on node {node!r} got no answer within {timeout:g} s (command {cid})"
                ) from None
        finally:
            self._pending.pop(cid, None)
        if not answer.ok:
            err = answer.error
            code = err.code if err else "failed"
            message = err.message if err else "the agent reported a failure"
            raise CommandFailed(f"{command} on node {node!r} failed: {message}", code=code)
        return answer.result

    def _create(
        self,
        cid: str,
        node: str,
        command: CommandType,
        args: dict[str, Any],
        vm_uuid: str | None,
        epoch: int,
        task_id: str | None,
        now: Any,
        timeout: float,
    ) -> None:
        with self.rt.db.write() as conn:
            commands.create(
                conn,
                id=cid,
                node=node,
                type=command.value,
                args=args,
                vm_uuid=vm_uuid,
                epoch=epoch,
                task_id=task_id,
                deadline=now + timedelta(seconds=timeout),
                now=now,
            )

    async def _finish(self, cid: str, state: CommandState, **values: Any) -> bool:
        def tx() -> bool:
            with self.rt.db.write() as conn:
                return commands.transition(conn, cid, state, self.rt.clock.now(), **values)

        return await self.rt.db_call(tx)

    async def on_answer(self, node: str, answer: Answer) -> None:
        state = CommandState.COMPLETED if answer.ok else CommandState.FAILED
        stored = await self._finish(
            answer.command_id,
            state,
            answer=answer.model_dump(mode="json"),
            agent_state=state.value,
            error=answer.error.message if answer.error else None,
        )
        if not stored:
            log.info("node %s: answer for command %s not applied", node, answer.command_id)
        pending = self._pending.get(answer.command_id)
        if pending is not None and pending.node == node and not pending.future.done():
            pending.future.set_result(answer)

    def on_progress(self, node: str, progress: Progress) -> None:
        pending = self._pending.get(progress.command_id)
        if pending is not None and pending.node == node:
            pending.progress.append(progress)

    async def on_session_lost(self, session: AgentSession) -> None:
        """Commands in flight on a lost session are INTERRUPTED; their callers are told."""
        for cid, pending in list(self._pending.items()):
            if pending.node != session.node or pending.future.done():
                continue
            await self._finish(cid, CommandState.INTERRUPTED, error="agent session lost")
            pending.future.set_exception(
                NodeUnavailable(f"node {session.node!r} disconnected while running {cid}")
            )
