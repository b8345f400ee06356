"""Runs commands from the server through the hypervisor driver.

Each command runs as its own asyncio task; commands for the same VM are serialised by a
per-VM lock. A command id seen before is not executed again: if it finished, its recorded
answer is sent again; if it is still running, its answer will be sent when it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bollard.agent.drivers.base import HypervisorDriver, VmSpec
from bollard.agent.journal import CommandJournal, MemoryJournal
from bollard.domain.errors import DriverError
from bollard.domain.protocol import Answer, AnswerError, Command
from bollard.domain.states import CommandType

log = logging.getLogger(__name__)

AnswerSender = Callable[[Answer], Coroutine[Any, Any, None]]


class _BadArgs(Exception):
    pass


class _ShutdownArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: float = 60.0


class Executor:
    def __init__(
        self,
        driver: HypervisorDriver,
        send: AnswerSender,
        on_state_change: Callable[[], None] = lambda: None,
        journal: CommandJournal | None = None,
    ) -> None:
        self.driver = driver
        self.journal: CommandJournal = journal if journal is not None else MemoryJournal()
        self._send = send
        self._on_state_change = on_state_change
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._resends: set[asyncio.Task[None]] = set()
        self._vm_locks: dict[str, asyncio.Lock] = {}
        self._vm_lock_users: dict[str, int] = {}

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, command: Command) -> None:
        """Start ``command`` (or answer it again if it already ran); never blocks."""
        previous = self.journal.answer_for(command.id)
        if previous is not None:
            log.info("command %s already done; answering again", command.id)
            task = asyncio.create_task(self._send(previous))
            self._resends.add(task)
            task.add_done_callback(self._resends.discard)
            return
        if command.id in self._inflight:
            log.info("command %s is already running; its answer will follow", command.id)
            return
        self.journal.record_received(command)
        task = asyncio.create_task(self._run(command), name=f"command-{command.id}")
        self._inflight[command.id] = task
        task.add_done_callback(lambda _t: self._inflight.pop(command.id, None))

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel running commands and wait (up to ``timeout``) for them to end."""
        tasks = [*self._inflight.values(), *self._resends]
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("%d command task(s) did not stop within %.1fs", len(pending), timeout)

    @contextlib.asynccontextmanager
    async def _vm_lock(self, uuid: str) -> AsyncIterator[None]:
        lock = self._vm_locks.setdefault(uuid, asyncio.Lock())
        self._vm_lock_users[uuid] = self._vm_lock_users.get(uuid, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._vm_lock_users[uuid] -= 1
            if not self._vm_lock_users[uuid]:
                del self._vm_lock_users[uuid]
                del self._vm_locks[uuid]

    async def _run(self, command: Command) -> None:
        log.info(
            "command %s: %s vm=%s epoch=%s",
            command.id,
            command.command.value,
            command.vm_uuid,
            command.epoch,
        )
        if command.vm_uuid is None:
            answer = _failure(command, "invalid-input", "command has no vm_uuid")
        else:
            async with self._vm_lock(command.vm_uuid):
                answer = await self._execute(command, command.vm_uuid)
        self.journal.record_answer(command, answer)
        if answer.ok:
            log.info("command %s: ok", command.id)
        else:
            assert answer.error is not None
            log.warning(
                "command %s: failed: %s: %s", command.id, answer.error.code, answer.error.message
            )
        await self._send(answer)
        # Every command type may change a VM's state: let the server see it now.
        self._on_state_change()

    async def _execute(self, command: Command, uuid: str) -> Answer:
        try:
            if command.timeout > 0:
                async with asyncio.timeout(command.timeout):
                    result = await self._dispatch(command, uuid)
            else:
                result = await self._dispatch(command, uuid)
        except DriverError as exc:
            return _failure(command, exc.code, exc.message)
        except _BadArgs as exc:
            return _failure(command, "invalid-input", str(exc))
        except TimeoutError:
            return _failure(command, "timed-out", f"not done within {command.timeout:g}s")
        except Exception as exc:
            log.exception("command %s: unexpected error", command.id)
            return _failure(command, "internal", f"{type(exc).__name__}: {exc}")
        return Answer(command_id=command.id, ok=True, result=result)

    async def _dispatch(self, command: Command, uuid: str) -> dict[str, Any]:
        driver = self.driver
        kind = command.command
        if kind == CommandType.DEFINE:
            report = await driver.define(_define_spec(command, uuid))
        elif kind == CommandType.START:
            report = await driver.start(uuid)
        elif kind == CommandType.SHUTDOWN:
            report = await driver.shutdown(uuid, _parse(_ShutdownArgs, command.args).timeout)
        elif kind == CommandType.STOP:
            report = await driver.stop(uuid)
        elif kind == CommandType.RESTART:
            report = await driver.restart(uuid)
        elif kind == CommandType.UNDEFINE:
            await driver.undefine(uuid)
            return {}
        else:  # a CommandType added to the domain but not handled here yet
            raise _BadArgs(f"command {kind.value!r} is not supported by this agent")
        return {"vm": report.model_dump(mode="json")}


def _parse(model: type[_ShutdownArgs], args: dict[str, Any]) -> _ShutdownArgs:
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise _BadArgs(_brief(exc)) from None


def _define_spec(command: Command, uuid: str) -> VmSpec:
    try:
        return VmSpec.model_validate(
            {
                "name": command.args.get("name"),
                "vcpus": command.args.get("vcpus"),
                "memory_mb": command.args.get("memory_mb"),
                "uuid": uuid,
                "epoch": command.epoch,
            }
        )
    except ValidationError as exc:
        raise _BadArgs(_brief(exc)) from None


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}" for err in exc.errors()
    )


def _failure(command: Command, code: str, message: str) -> Answer:
    return Answer(command_id=command.id, ok=False, error=AnswerError(code=code, message=message))
