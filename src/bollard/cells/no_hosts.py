"""The task engine's host ports for the API server, which has no hosts: its tasks (moves of
VMs between cells) act through the cells' APIs only, so every host port refuses, in one line.

The engine (bollard/server/tasks) is the cells' own: the same persisted steps, retries,
rollback and resume after a restart; only what its steps may reach differs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from sqlalchemy import Connection

from bollard.domain.errors import BollardError
from bollard.domain.models import Task, Vm
from bollard.domain.operations import PowerOp
from bollard.domain.protocol import InspectResult, Progress
from bollard.domain.states import CommandType
from bollard.power import PowerDriver
from bollard.server.ports import AgentLink


def _refuse(what: str) -> NoReturn:
    raise BollardError(f"the API server has no hosts: {what} is a cell's to do", code="internal")


class NoHosts:
    """SessionLookup, CommandPort, HostInspector, VmRequests, HaRecovery and PowerDrivers of
    a server without hosts."""

    def session(self, node: str) -> AgentLink | None:
        return None

    async def wait_connected(self, nodes: set[str], timeout: float) -> bool:
        return not nodes

    async def call(
        self, node: str, command: CommandType, args: dict[str, Any] | None = None, *,
        vm_uuid: str | None = None, epoch: int = 0, task_id: str | None = None,
        timeout: float | None = None, record: Callable[[Connection, str], None] | None = None,
        abort_if: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        _refuse(f"a {command} command")

    async def attach(self, cid: str, timeout: float | None = None) -> dict[str, Any]:
        _refuse("a command")

    def progress(self, cid: str) -> Progress | None:
        return None

    async def cancel(self, cid: str, node: str) -> bool:
        return False

    async def abandon_node(self, node: str, reason: str) -> int:
        return 0

    async def inspect(
        self, node: str, vm_uuid: str, timeout: float = 5.0, *, console_lines: int = 0,
        disks: bool = False,
    ) -> InspectResult | None:  # fmt: skip
        return None

    async def power(self, name: str, op: PowerOp, **params: Any) -> tuple[Vm, Task]:
        _refuse("a power operation")

    async def migrate(self, name: str, *, mode: str) -> tuple[Vm, Task]:
        _refuse("a migration")

    def restart_in(self, conn: Connection, vm: Vm, *, start: bool = True) -> str:
        _refuse("an HA restart")

    def recover_node_in(self, conn: Connection, node: str) -> list[str]:
        return []

    def restart_deferred_in(self, conn: Connection) -> list[str]:
        return []

    def driver_for(self, node: str) -> PowerDriver:
        _refuse("fencing")

    def candidate(
        self, node: str, driver: str, address: str, username: str | None, password: str | None
    ) -> PowerDriver:
        _refuse("fencing")
