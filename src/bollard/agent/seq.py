"""Heartbeat sequence numbers that grow across agent restarts on the same host.

At start the agent bumps an integer "generation" stored in ``<state-dir>/seq`` (written
atomically, fsynced); ``seq = generation * 2**32 + counter``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bollard.agent.config import AgentConfigError

_SHIFT = 32


class SeqCounter:
    def __init__(self, generation: int) -> None:
        self.generation = generation
        self._counter = 0

    @classmethod
    def load(cls, state_dir: Path) -> SeqCounter:
        """Bump and persist the generation in ``state_dir``; the new counter starts at 1."""
        return cls(bump_generation(state_dir))

    def next(self) -> int:
        self._counter += 1
        if self._counter >= 1 << _SHIFT:
            raise OverflowError("heartbeat counter exhausted; restart the agent")
        return (self.generation << _SHIFT) + self._counter


def bump_generation(state_dir: Path) -> int:
    path = state_dir / "seq"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = "0"
    except OSError as exc:
        raise AgentConfigError(f"cannot use state dir {state_dir}: {exc}") from None
    try:
        previous = int(text)
        if previous < 0:
            raise ValueError(text)
    except ValueError:
        raise AgentConfigError(
            f"{path} is corrupt ({text[:20]!r}); heartbeat sequence numbers must keep growing, "
            "so fix it by hand with an integer larger than any generation used before"
        ) from None
    generation = previous + 1
    tmp = path.with_name(f".seq.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{generation}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise AgentConfigError(f"cannot write {path}: {exc}") from None
    return generation
