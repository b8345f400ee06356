"""What a task step sees: its task, the results of earlier steps, and persisted side effects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import Connection

from bollard.domain.commands import CommandState
from bollard.domain.errors import NotFound, StepFailed
from bollard.domain.ids import new_id
from bollard.domain.models import Task, Vm
from bollard.domain.protocol import InspectResult
from bollard.domain.states import CommandType
from bollard.store import events, steps, tasks, vms

if TYPE_CHECKING:
    from bollard.server.runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class StepContext:
    rt: Runtime
    task: Task
    idx: int = 0
    step_name: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    undoing: bool = False  # set while the task rolls back: nothing it sends is cancelled

    @property
    def params(self) -> dict[str, Any]:
        return self.task.params

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.rt.db_call(fn, *args, **kwargs)

    def vm_now(self) -> Vm:
        """The task's VM as the database holds it now (blocking: call through `db`)."""
        assert self.task.vm_uuid is not None
        with self.rt.db.read() as conn:
            vm = vms.find_by_uuid(conn, self.task.vm_uuid)
        if vm is None:
            raise NotFound(f"VM {self.task.vm_name} no longer exists")
        return vm

    async def vm(self) -> Vm:
        return await self.db(self.vm_now)

    def event(self, conn: Connection, kind: str, message: str, **data: Any) -> None:
        events.add(
            conn,
            kind,
            message,
            self.rt.clock.now(),
            vm_uuid=self.task.vm_uuid,
            vm_name=self.task.vm_name,
            node=data.pop("node", None) or self.task.node,
            task_id=self.task.id,
            data=data,
        )

    async def command(
        self,
        key: str,
        node: str,
        command: CommandType,
        args: dict[str, Any] | None = None,
        *,
        vm_uuid: str | None = None,
        epoch: int = 0,
        timeout: float | None = None,
        cancellable: bool = True,
    ) -> dict[str, Any]:
        """Run a command as part of this step, once: the command's id is written with the
        step (in the same transaction as the command row) before it is sent, so a resumed
        step waits for the same command's outcome instead of sending another."""
        timeout = timeout if timeout is not None else self.rt.config.command_timeout
        args = dict(args or {})
        step = await self.db(self._step)
        existing = step.commands.get(key)
        if existing is not None:
            return await self.rt.dispatcher.attach(existing, timeout)
        cid = new_id()

        def tx() -> None:
            with self.rt.db.write() as conn:
                self.rt.dispatcher.create_in(
                    conn, cid, node, command, args,
                    vm_uuid=vm_uuid, epoch=epoch, task_id=self.task.id, timeout=timeout,
                )  # fmt: skip
                steps.record_command(conn, self.task.id, self.idx, key, cid)

        await self.db(tx)
        self.rt.dispatcher.announce(cid)
        if cancellable and not self.undoing and await self.db(self._cancelled):
            self.rt.dispatcher.not_sending(cid)
            # A cancel that came while the command was being written: it is never sent.
            await self.rt.dispatcher.move(
                cid, CommandState.FAILED, note="task cancelled before sending", error="cancelled"
            )
            raise StepFailed("cancelled by the operator before the command was sent")
        return await self.rt.dispatcher.send_and_wait(
            cid, node, command, args, vm_uuid=vm_uuid, epoch=epoch, timeout=timeout
        )

    async def sent_commands(self) -> dict[str, str]:
        """The commands this step has sent so far (call key -> command id)."""
        step = await self.db(self._step)
        return dict(step.commands)

    def _cancelled(self) -> bool:
        with self.rt.db.read() as conn:
            return tasks.get(conn, self.task.id).cancel_requested

    def _step(self) -> Any:
        with self.rt.db.read() as conn:
            return steps.get(conn, self.task.id, self.idx)

    async def inspect(self, node: str, vm_uuid: str) -> InspectResult | None:
        """Ask a host whether it has the VM (None: the host did not answer)."""
        return await self.rt.inspector.inspect(node, vm_uuid)

    async def inspect_all(self, nodes: list[str], vm_uuid: str) -> dict[str, InspectResult | None]:
        answers = await asyncio.gather(*(self.inspect(n, vm_uuid) for n in nodes))
        return dict(zip(nodes, answers, strict=True))
