"""What a task step may do, and nothing else: send a command, ask a host, read or write
through the store (in a transaction the context opens), record an event, progress or a
result, start other tasks through the engine and wait for them, wait with a deadline.

A step never sees the server: the engine hands it a `StepContext` built from the task and
the `StepServices` the assembly wired (each a small port, see ports.py).

Its writes (`write`, and the record of a command it sends) are fenced: each first holds the
task for the id this process runs it under (ownership.py), TaskTakenOver when another server
has taken it over. Each then makes the task's pending writes (`later`: the engine's marks and
a step's own, which need no transaction of their own) before its own, in the same
transaction; a transaction that fails gives them back, to be made by the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from bollard.domain.errors import CommandFailed, NotFound, StepFailed
from bollard.domain.models import Task, TaskStep, Vm
from bollard.domain.protocol import InspectResult, Progress
from bollard.domain.reconcile import NEVER_RECEIVED
from bollard.domain.states import CommandType
from bollard.power import PowerDriver
from bollard.server import sriov_nics
from bollard.server.clock import Clock, Deadline
from bollard.server.ports import (
    CommandPort,
    HaRecovery,
    HostInspector,
    NodeKick,
    PowerDrivers,
    SessionLookup,
    SettingsReader,
    TaskLauncher,
    TaskWaiter,
    Touch,
    UnitOfWork,
    VmRequests,
)
from bollard.server.tasks.ownership import Holding, TaskTakenOver, hold
from bollard.server.tasks.params import TaskParams
from bollard.store import commands as command_rows
from bollard.store import events, steps, tasks, tasks_hot, vms

log = logging.getLogger(__name__)

ParamsT = TypeVar("ParamsT", bound=TaskParams)
R = TypeVar("R")
Write = Callable[[Connection], None]


@dataclass(frozen=True)
class Timeouts:
    """The server's defaults steps fall back on (seconds)."""

    command: float  # a command's deadline when the step names none
    shutdown: float  # a graceful shutdown's grace before the VM is forced off
    heartbeat_interval: float


@dataclass(frozen=True)
class StepServices:
    """Everything steps may use, wired once by the assembly."""

    work: UnitOfWork
    clock: Clock
    settings: SettingsReader
    commands: CommandPort
    sessions: SessionLookup
    inspector: HostInspector
    requests: VmRequests
    recovery: HaRecovery
    power: PowerDrivers
    kick_state: NodeKick  # the state reconciler: look at a node now
    touch: Touch  # wake the event-log followers
    timeouts: Timeouts


class StepContext(Generic[ParamsT]):
    def __init__(
        self,
        services: StepServices,
        launcher: TaskLauncher,
        waiter: TaskWaiter,
        task: Task,
        params: ParamsT,
        *,
        holding: Holding | None = None,
    ) -> None:
        """`holding`: the server id(s) the task is driven under (None: owner NULL)."""
        self._services = services
        self._launcher = launcher
        self._waiter = waiter
        self.task = task
        self.params = params
        self.idx = 0
        self.step_name = ""
        self.results: dict[str, dict[str, Any]] = {}
        self.undoing = False  # set while the task rolls back: nothing it sends is cancelled
        self.holding = holding if holding is not None else Holding(task.id, (None,))
        # Writes made with the task's next write transaction, in order (`later`).
        self.pending: deque[Write] = deque()
        # The commands the current step has recorded (call key -> id), when the engine knows
        # them (a step it began from `pending`: none yet); None: read them from its row.
        self.step_commands: dict[str, str] | None = None

    # -- time ---------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self._services.clock

    @property
    def timeouts(self) -> Timeouts:
        return self._services.timeouts

    def deadline(self, seconds: float) -> Deadline:
        return Deadline.after(self.clock, seconds)

    async def pause(self, seconds: float) -> None:
        """Back off between two polls of something that has no event to wait on (a BMC's
        power status, a host that does not answer yet); never to synchronise."""
        await self.clock.sleep(seconds)

    # -- the store ----------------------------------------------------------------------

    async def read(self, fn: Callable[[Connection], R]) -> R:
        """`fn(conn)` in a read transaction, off the event loop."""

        def tx() -> R:
            with self._services.work.read() as conn:
                return fn(conn)

        return await self._services.work.run(tx)

    async def write(self, fn: Callable[[Connection], R]) -> R:
        """`fn(conn)` in a write transaction, off the event loop, once the task is held (a
        task taken over raises TaskTakenOver) and its pending writes made; event-log
        followers are woken once it has committed."""
        try:
            return await self._services.work.run(self.transaction, fn)
        finally:
            self._services.touch()

    def transaction(self, fn: Callable[[Connection], R]) -> R:
        """`write` blocking (in a worker thread): the task held, its pending writes, then
        `fn(conn)`, in one transaction. Pending writes of a transaction that failed are
        given back, first in line for the next one."""
        made: list[Write] = []
        try:
            with self._services.work.write() as conn:
                self.begin_in(conn, made)
                return fn(conn)
        except BaseException:
            self.pending.extendleft(reversed(made))
            raise

    def begin_in(self, conn: Connection, made: list[Write]) -> bool:
        """What every write transaction of the task begins with: hold the task, then make its
        pending writes in order (each appended to `made` once taken from the queue). Whether
        a cancel of the task was requested (as the hold found its row)."""
        cancel = hold(conn, self.holding)
        while True:
            try:
                write = self.pending.popleft()
            except IndexError:
                return cancel
            made.append(write)
            write(conn)

    def later(self, write: Write) -> None:
        """Make `write(conn)` in the task's next write transaction (the step's next write,
        the record of its next command, or the engine's next mark), not in one of its own:
        for what need not be on disk before that (what the task shows it does now)."""
        self.pending.append(write)

    async def setting(self, key: str) -> Any:
        return await self._services.work.run(self._services.settings.get, key)

    def vm_in(self, conn: Connection) -> Vm:
        """The task's VM as the database holds it now."""
        assert self.task.vm_uuid is not None
        vm = vms.find_by_uuid(conn, self.task.vm_uuid)
        if vm is None:
            raise NotFound(f"VM {self.task.vm_name} no longer exists")
        return vm

    async def vm(self) -> Vm:
        return await self.read(self.vm_in)

    def event(self, conn: Connection, kind: str, message: str, **data: Any) -> None:
        """Record an event of this task (in the caller's transaction)."""
        events.add(
            conn,
            kind,
            message,
            self.clock.now(),
            vm_uuid=self.task.vm_uuid,
            vm_name=self.task.vm_name,
            node=data.pop("node", None) or self.task.node,
            task_id=self.task.id,
            data=data,
        )

    async def note(self, kind: str, message: str, **data: Any) -> None:
        """Record an event of this task in a transaction of its own."""
        await self.write(lambda conn: self.event(conn, kind, message, **data))

    async def merge_result(self, values: dict[str, Any]) -> None:
        """Add `values` to the task's result (what `bollard task show` prints)."""

        def tx(conn: Connection) -> None:
            current = tasks.get(conn, self.task.id)
            tasks.set_result(conn, self.task.id, {**current.result, **values})

        await self.write(tx)

    async def result(self) -> dict[str, Any]:
        return await self.read(lambda conn: tasks.get(conn, self.task.id).result)

    async def cancel_requested(self) -> bool:
        return await self.read(lambda conn: tasks.get(conn, self.task.id).cancel_requested)

    # -- hosts --------------------------------------------------------------------------

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
        step waits for the same command's outcome instead of sending another.

        A DEFINE's SR-IOV NICs get the VF their VM holds on `node` (`sriov_nics.with_vfs`),
        read just before the command row is written: every flow's DEFINE gives the host the
        store's claim, never a VF of its own choosing."""
        timeout = timeout if timeout is not None else self.timeouts.command
        commands = self._services.commands
        known = self.step_commands
        existing = (known if known is not None else (await self._step()).commands).get(key)
        if existing is not None:
            try:
                return await commands.attach(existing, timeout)
            except CommandFailed as exc:
                if exc.code != NEVER_RECEIVED:
                    raise
                # Its sender stopped before the agent got it (a server stopped or died; the
                # task was resumed), and the agent tombstoned its id: it never ran and never
                # will, so the step sends it again, under a new id.
                log.info("task %s, step %s: command %s never reached node %s: sent again",
                         self.task.id, self.step_name, existing, node)  # fmt: skip
        task_id, idx = self.task.id, self.idx
        if command is CommandType.DEFINE and args and args.get("nics"):
            args = await self._with_vfs(node, vm_uuid or self.task.vm_uuid or "", args)

        check_cancel = cancellable and not self.undoing
        made: list[Write] = []
        recorded: list[str] = []

        def record(conn: Connection, cid: str) -> None:
            """In the transaction that writes the command: the task held (a task taken over
            sends nothing more), its pending writes, the command's id on the step; and, the
            task's row locked, a cancel requested before it refuses the command (StepFailed,
            nothing written: it is never sent). A cancel requested after waits for this
            transaction, then finds the command and cancels it on its host."""
            if self.begin_in(conn, made) and check_cancel:
                raise StepFailed("cancelled by the operator before the command was sent")
            tasks_hot.record_command(conn, task_id, idx, key, cid, self.step_commands)
            recorded.append(cid)
            if self.step_commands is not None:
                self.step_commands[key] = cid

        try:
            return await commands.call(
                node,
                command,
                args,
                vm_uuid=vm_uuid,
                epoch=epoch,
                task_id=task_id,
                timeout=timeout,
                record=record,
            )
        except BaseException as exc:
            self.step_commands = None  # read them again
            # Pending writes its transaction made are given back unless it committed (a
            # drive cancelled or taken over makes no further write: nothing to give back).
            gone = not isinstance(exc, Exception) or isinstance(exc, TaskTakenOver)
            if made and not gone and not (recorded and await self._committed(recorded[-1])):
                self.pending.extendleft(reversed(made))
            raise

    async def _committed(self, cid: str) -> bool:
        """Whether the transaction that wrote command `cid` committed."""
        return await self.read(lambda conn: command_rows.exists(conn, cid))

    async def _with_vfs(self, node: str, vm_uuid: str, args: dict[str, Any]) -> dict[str, Any]:
        nics = list(args["nics"])
        if not any(n.get("sriov") for n in nics):
            return args
        filled = await self.read(lambda conn: sriov_nics.with_vfs(conn, vm_uuid, node, nics))
        return {**args, "nics": filled}

    def command_progress(self, cid: str) -> Progress | None:
        """The latest progress its host reported for a command this step awaits now."""
        return self._services.commands.progress(cid)

    async def sent_commands(self) -> dict[str, str]:
        """The commands this step has sent so far (call key -> command id)."""
        return dict((await self._step()).commands)

    async def _step(self) -> TaskStep:
        return await self.read(lambda conn: steps.get(conn, self.task.id, self.idx))

    async def inspect(
        self, node: str, vm_uuid: str, *, disks: bool = False
    ) -> InspectResult | None:
        """Ask a host whether it has the VM (None: the host did not answer); with `disks`,
        also which file each of its disks uses now."""
        return await self._services.inspector.inspect(node, vm_uuid, disks=disks)

    async def inspect_all(self, nodes: list[str], vm_uuid: str) -> dict[str, InspectResult | None]:
        answers = await asyncio.gather(*(self.inspect(n, vm_uuid) for n in nodes))
        return dict(zip(nodes, answers, strict=True))

    def connected(self, node: str) -> bool:
        """Whether the node's agent has a session open now."""
        return self._services.sessions.session(node) is not None

    async def abandon_node(self, node: str, reason: str) -> int:
        """The node is off: its open commands end, and whoever waits for them is told."""
        return await self._services.commands.abandon_node(node, reason)

    def kick_state(self, node: str | None) -> None:
        """Ask the state reconciler to look now."""
        self._services.kick_state(node)

    async def power_driver(self, node: str) -> PowerDriver:
        """The node's power (fencing) driver, built from its record."""
        return await self._services.work.run(self._services.power.driver_for, node)

    # -- other tasks --------------------------------------------------------------------

    @property
    def requests(self) -> VmRequests:
        """VM operations as an operator asks for them (each starts a task of its own)."""
        return self._services.requests

    @property
    def recovery(self) -> HaRecovery:
        return self._services.recovery

    def launch(self, task_ids: list[str]) -> None:
        """Hand tasks this step created (in one of its transactions) to the engine."""
        for task_id in task_ids:
            self._launcher.launch(task_id)

    async def wait_task(self, task_id: str, timeout: float) -> Task:
        """The task once it has ended, or as it stands when `timeout` has passed."""
        return await self._waiter.wait(task_id, timeout)
