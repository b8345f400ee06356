"""The agent's own record of the settings Bollard gave each VF (STATE_DIR/sriov.json).

A cold boot resets every VF, and a VF count that changes recreates them: the host keeps
nothing, so the agent re-applies this record at every start (`manager.SriovManager.start`).
Only the fields Bollard set are kept; a field never set stays as the device has it. Every
change replaces the file atomically (`durable.write_atomic`): a crash leaves the old record
or the new, never a mix. A file that cannot be read is set aside (renamed, logged) rather than
stopping the agent: the server holds the desired settings too and can give them again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bollard.domain.sriov import VfSettings
from bollard.durable import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "sriov.json"
VERSION = 1


class _Record(BaseModel):
    version: int = VERSION
    # PF device -> VF index (as text: JSON keys) -> the fields Bollard set
    pfs: dict[str, dict[int, VfSettings]] = Field(default_factory=dict)


class SriovSettingsStore:
    """VF settings by PF device and VF index, kept in `path` (created on first change)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._record = self._load()

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SriovSettingsStore:
        return cls(state_dir / FILE_NAME)

    def get(self, device: str, index: int) -> VfSettings:
        """The settings Bollard gave the VF (empty when none)."""
        return self._record.pfs.get(device, {}).get(index, VfSettings())

    def all(self) -> dict[str, dict[int, VfSettings]]:
        return {device: dict(vfs) for device, vfs in self._record.pfs.items()}

    def put(self, device: str, index: int, settings: VfSettings) -> None:
        """Record the VF's settings (only the given fields); durable on return."""
        given = VfSettings(**settings.given())
        pfs = {d: dict(vfs) for d, vfs in self._record.pfs.items()}
        vfs = pfs.setdefault(device, {})
        if given.given():
            vfs[index] = given
        else:
            vfs.pop(index, None)
        self._replace(pfs)

    def keep(self, vf_counts: dict[str, int]) -> list[str]:
        """Forget the VFs that no longer exist: PFs not in `vf_counts` (PF device -> VF
        count) and VF indexes at or above their PF's count. Returns what was forgotten
        ("PF N" each), after saving."""
        gone = [
            f"{device} {index}"
            for device, vfs in self._record.pfs.items()
            for index in vfs
            if index >= vf_counts.get(device, 0)
        ]
        if gone:
            pfs = {
                device: {i: s for i, s in vfs.items() if i < vf_counts[device]}
                for device, vfs in self._record.pfs.items()
                if device in vf_counts
            }
            self._replace(pfs)
        return gone

    def _replace(self, pfs: dict[str, dict[int, VfSettings]]) -> None:
        record = _Record(pfs={d: vfs for d, vfs in pfs.items() if vfs})
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = record.model_dump_json(indent=1, exclude_none=True).encode()
        write_atomic(self._path, data)
        self._record = record

    def _load(self) -> _Record:
        try:
            raw: Any = json.loads(self._path.read_bytes())
            return _Record.model_validate(raw)
        except FileNotFoundError:
            return _Record()
        except (OSError, ValueError, ValidationError) as exc:  # ValidationError: a ValueError
            aside = self._path.with_name(f"{self._path.name}.corrupt-{int(time.time())}")
            log.error(
                "SR-IOV settings %s unreadable (%s); set aside as %s, starting empty",
                self._path,
                str(exc).splitlines()[0],
                aside.name,
            )
            try:
                self._path.rename(aside)
            except OSError as rename_error:
                log.error("cannot set %s aside: %s", self._path, rename_error.strerror)
            return _Record()
