"""The small interfaces server components are given, instead of the whole server.

Each component takes what it uses as explicit constructor arguments typed by these protocols
(or by plain callables such as `Kick`); `assembly.py` builds the real implementations and
wires them, and is the only module that knows them all. A protocol here names what a caller
may do, not who does it: the dispatcher is a `CommandPort` to a task step, the gateway a
`SessionLookup` to the inspector.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection

from bollard.domain.commands import CommandState
from bollard.domain.drift import Drift, DriftClass
from bollard.domain.models import Task, Vm
from bollard.domain.operations import PowerOp
from bollard.domain.protocol import InspectResult, Progress
from bollard.domain.states import CommandType
from bollard.power import PowerDriver

P = ParamSpec("P")
R = TypeVar("R")

# Wake a loop now instead of at its next interval (kicks coalesce).
Kick = Callable[[], None]
# The same for a loop that may look at one node first.
NodeKick = Callable[[str | None], None]
# Wake the readers of the event log (`bollard events --follow`) after events were committed.
Touch = Callable[[], None]


class UnitOfWork(Protocol):
    """The database: a transaction to read or to write, and a way to run blocking database
    work off the event loop."""

    def read(self) -> AbstractContextManager[Connection]: ...

    def write(self) -> AbstractContextManager[Connection]: ...

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...


class SettingsReader(Protocol):
    """Cluster settings (blocking: call through `UnitOfWork.run`)."""

    def get(self, key: str) -> Any: ...

    def all(self) -> dict[str, Any]: ...


class AgentLink(Protocol):
    """An open agent session, as a sender sees it."""

    @property
    def node(self) -> str: ...

    async def send(self, msg: BaseModel) -> None:
        """ConnectionError when the session is gone."""
        ...


class SessionLookup(Protocol):
    """Which nodes have an agent session open now."""

    def session(self, node: str) -> AgentLink | None: ...

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool: ...


class CommandPort(Protocol):
    """Commands to agents: written before they are sent, waited for with a deadline."""

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
        record: Callable[[Connection, str], None] | None = None,
        abort_if: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Create, send and wait. `record(conn, command_id)` runs in the transaction that
        writes the command; `abort_if()` (blocking, read-only) is asked once the command is
        written and before it is sent: True ends it FAILED unsent (StepFailed)."""
        ...

    async def attach(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the outcome of a command sent earlier (e.g. before a server restart)."""
        ...

    def progress(self, cid: str) -> Progress | None:
        """The latest progress its agent reported for a command awaited now (None: none)."""
        ...

    async def cancel(self, cid: str, node: str) -> bool: ...

    async def abandon_node(self, node: str, reason: str) -> int:
        """The node is off: end its open commands and tell whoever waits for them."""
        ...


class HostInspector(Protocol):
    """Ask a host what it has of a VM now (read-only; None: no answer)."""

    async def inspect(
        self,
        node: str,
        vm_uuid: str,
        timeout: float = ...,
        *,
        console_lines: int = 0,
        disks: bool = False,
    ) -> InspectResult | None: ...


class TaskLauncher(Protocol):
    """Creating tasks (in the caller's transaction) and handing them to the engine."""

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
    ) -> Task: ...

    def launch(self, task_id: str) -> None: ...


class ResizeRequests(Protocol):
    """Ending resizes as an operator would (the state reconciler, the auto-confirm loop)."""

    async def confirm(self, name: str) -> tuple[Vm, Task]: ...


class TaskWaiter(Protocol):
    """Following tasks that run in this server."""

    async def wait(self, task_id: str, timeout: float) -> Task:
        """The task once ended, or as it stands when `timeout` has passed."""
        ...

    def is_running(self, task_id: str) -> bool: ...

    def running_ids(self) -> frozenset[str]: ...


class TaskCanceller(Protocol):
    def request_cancel(self, task_id: str) -> Task:
        """Blocking: call through `UnitOfWork.run`."""
        ...

    async def cancel_inflight(self, task_id: str) -> int: ...


class VmRequests(Protocol):
    """Operations on VMs as an operator would ask for them (used by drain and the state
    reconciler): each takes the VM for a task and launches it."""

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]: ...

    async def migrate(self, name: str, *, mode: str) -> tuple[Vm, Task]: ...


class HaRecovery(Protocol):
    """HA restart tasks for VMs of fenced nodes (created in the caller's transaction; the
    caller launches the ids it gets)."""

    def restart_in(self, conn: Connection, vm: Vm, *, start: bool = True) -> str: ...

    def recover_node_in(self, conn: Connection, node: str) -> list[str]: ...

    def restart_deferred_in(self, conn: Connection) -> list[str]: ...


class PowerDrivers(Protocol):
    """A node's power (fencing) driver, built from its record (blocking)."""

    def driver_for(self, node: str) -> PowerDriver: ...

    def candidate(
        self,
        node: str,
        driver: str,
        address: str,
        username: str | None,
        password: str | None,
    ) -> PowerDriver:
        """A driver from settings not stored yet (to test them before they are); with
        neither username nor password, the node's stored credentials, if it has any."""
        ...


# -- for the API and the operation services --------------------------------------------------


class SettingsStore(SettingsReader, Protocol):
    """Cluster settings that may also be changed (blocking: call through `UnitOfWork.run`)."""

    def set(self, key: str, raw: Any) -> Any:
        """Parse `raw` by the setting's type, store it and return the value stored."""
        ...


class SecretSealer(Protocol):
    """Encrypts credentials to store them (power drivers' usernames and passwords)."""

    def seal(self, values: dict[str, str]) -> str: ...


class EventFeed(Protocol):
    """The event log's followers: woken after events were committed, waiting for them."""

    def touch(self) -> None: ...

    async def changed(self, timeout: float) -> None:
        """Return when events were written, or after at most `timeout` seconds."""
        ...


class DrainRequests(Protocol):
    """Flushing a node (moving its VMs away) or unflushing it (bringing them back)."""

    async def request(self, name: str, kind: str) -> Task:
        """`kind`: "flush" or "unflush"; returns the task launched."""
        ...


class DriftScan(Protocol):
    """The differences between the database and the hosts, as one detection pass saw them."""

    @property
    def differences(self) -> Sequence[Drift]: ...

    @property
    def vms(self) -> int: ...

    @property
    def nodes(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def scanned_in(self) -> str: ...

    @property
    def volumes(self) -> int: ...  # volumes checked against their pools' files

    @property
    def silent_hosts(self) -> Sequence[str]: ...  # hosts that gave no storage answer in time


class DriftFixes(Protocol):
    """What a fix did: {"fixed": [...], "failed": [...]}."""

    def to_dict(self) -> dict[str, Any]: ...


class DriftReconciler(Protocol):
    """The state reconciler as an operator asks it: show the differences, fix some."""

    async def scan(self, node: str | None = None, vm: str | None = None) -> DriftScan: ...

    async def fix(
        self, classes: Collection[DriftClass], node: str | None = None, vm: str | None = None
    ) -> tuple[DriftFixes, DriftScan]:
        """Fix the differences of `classes` (on `node`, of `vm`); returns what was done and
        what is left afterwards."""
        ...


class CommandOutcomes(Protocol):
    """What the command reconciler does to the commands it settles (the dispatcher): move
    them (whitelisted, compare-and-swap, in a transaction of their own) and tell whoever
    waits for them what became of them."""

    async def move(
        self,
        cid: str,
        state: CommandState,
        *,
        note: str | None = None,
        expect: CommandState | None = None,
        **values: Any,
    ) -> bool: ...

    def resolve_answer(self, cid: str, answer: dict[str, Any]) -> None: ...

    def resolve_failed(self, cid: str, code: str, message: str) -> None: ...
