"""The log of mutating operations a sim host performed: ``<host>/executed.jsonl``.

The sim driver appends one line per define, start, shutdown, stop, restart or undefine,
and per migration started (on the source only), with the id of the command it ran for, so
tests can prove that no command ran twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import ValidationError

from bollard.sim.files import append_line_durably
from bollard.sim.models import ExecutedOp

log = logging.getLogger(__name__)


class ExecLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, command_id: str | None, command: str, vm_uuid: str | None) -> ExecutedOp:
        op = ExecutedOp(command_id=command_id, command=command, vm_uuid=vm_uuid, at=time.time())
        append_line_durably(self.path, op.model_dump_json())
        return op

    def read(self) -> list[ExecutedOp]:
        """Every recorded operation, oldest first; a torn or garbled line is skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        ops = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                ops.append(ExecutedOp.model_validate_json(line))
            except ValidationError:
                log.warning("sim fabric: skipping unreadable line %d of %s", number, self.path)
        return ops
