"""Fault injection on a sim host: ``<fabric>/hosts/<node>/faults.json``.

A fault is armed for one command type with a mode (see FaultMode) and a count: it fires
``count`` times and then clears itself (0: it fires until cleared). Every change, including
the count going down when a fault fires, is a read-modify-write under the fabric lock, so
any process (an agent, ``bollard sim fault``, a test) may arm, fire or clear faults.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import ValidationError

from bollard.sim.files import read_json, report_corrupt, write_json_atomic
from bollard.sim.models import FaultMode, FaultTable, MigrationPhase, SimFault

log = logging.getLogger(__name__)


def fault_key(command: str, vm: str | None) -> str:
    """Where the fault for ``command`` (of the VM with uuid ``vm``, if given) is kept."""
    return command if vm is None else f"{command}@{vm}"


class HostFaults:
    def __init__(self, lock: Callable[[], AbstractContextManager[None]], path: Path) -> None:
        self._lock = lock
        self.path = path

    def _load(self) -> FaultTable:
        data = read_json(self.path)
        if data is None:
            return FaultTable()
        try:
            return FaultTable.model_validate(data)
        except ValidationError as exc:
            report_corrupt(self.path, f"invalid fault table: {exc.error_count()} errors")
            return FaultTable()

    def _save(self, table: FaultTable) -> None:
        if table.faults:
            write_json_atomic(self.path, table.model_dump(mode="json"))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def all(self) -> list[SimFault]:
        """The armed faults, sorted by command type."""
        return sorted(self._load().faults.values(), key=lambda f: f.command)

    def set(
        self,
        command: str,
        mode: FaultMode,
        count: int = 1,
        seconds: float = 0.0,
        phase: MigrationPhase | None = None,
        vm: str | None = None,
    ) -> SimFault:
        """Arm (or re-arm, replacing) the fault for ``command`` (of the VM with uuid ``vm``
        only, when given: it fires before one armed for every VM).

        ``phase`` (only for ``migrate`` with mode ``fail``): the migration phase that fails;
        without it a migrate fails at ``prepare``, before anything is done.
        """
        if count < 0:
            raise ValueError("fault count must be >= 0 (0 = until cleared)")
        if seconds < 0:
            raise ValueError("fault seconds must be >= 0")
        if phase is not None and (command != "migrate" or mode != FaultMode.FAIL):
            raise ValueError("a fault phase is only for --command migrate --mode fail")
        fault = SimFault(
            command=command, mode=mode, count=count, seconds=seconds, phase=phase, vm=vm
        )
        with self._lock():
            table = self._load()
            table.faults[fault_key(command, vm)] = fault
            self._save(table)
        at = f" at {phase.value}" if phase is not None else ""
        log.info("sim fault armed: %s %s%s (count %d)", command, mode.value, at, count)
        return fault

    def clear(self, command: str | None = None) -> int:
        """Disarm the fault for ``command`` (a key: a command type, or ``fault_key(type, vm)``
        for one VM's; every fault when None); how many were removed."""
        with self._lock():
            table = self._load()
            if command is None:
                removed = len(table.faults)
                table.faults.clear()
            else:
                removed = 1 if table.faults.pop(command, None) is not None else 0
            if removed:
                self._save(table)
        return removed

    def take(
        self, command: str, modes: Collection[FaultMode], vm: str | None = None
    ) -> SimFault | None:
        """Fire the fault armed for ``command`` if its mode is one of ``modes``: the one armed
        for the VM ``vm`` (a uuid) if any, else the one armed for every VM.

        Returns the fault as it fired (``fired`` counts this firing) and, atomically, counts
        it down, removing it once it has fired ``count`` times. None when nothing fires.
        """
        if not self.path.exists():  # the common case: no faults, no lock taken
            return None
        with self._lock():
            table = self._load()
            key = fault_key(command, vm)
            if key not in table.faults:
                key = command
            fault = table.faults.get(key)
            if fault is None or fault.mode not in modes:
                return None
            fired = fault.model_copy(update={"fired": fault.fired + 1})
            if fired.count and fired.fired >= fired.count:
                del table.faults[key]
            else:
                table.faults[key] = fired
            self._save(table)
        log.warning("sim fault fires: %s %s", command, fault.mode.value)
        return fired
