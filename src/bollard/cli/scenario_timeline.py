"""What a scenario run tells: the timeline of what happened (set-up, faults applied, events of
the server, checks) and the result, as lines for people or one JSON object for tools."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Events of the server shown on the timeline: all but the task engine's own bookkeeping.
_QUIET_EVENTS = ("task.", "step.")
_LOUD_TASK_EVENTS = frozenset({"task.failed", "task.needs_attention", "task.rolled_back"})


def shown_event(kind: str) -> bool:
    return kind in _LOUD_TASK_EVENTS or not kind.startswith(_QUIET_EVENTS)


@dataclass(frozen=True)
class Entry:
    t: float  # seconds since the timeline began (set-up entries: since the run began)
    kind: str  # setup, fault, event, check, miss, never, result
    text: str

    def line(self) -> str:
        return f"{self.t:7.2f}  {self.kind:<6}  {self.text}"

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "kind": self.kind, "text": self.text}


@dataclass
class Timeline:
    """Entries in the order they were added (thread-safe); ``echo`` sees each at once."""

    echo: Callable[[Entry], None] | None = None
    started: float = field(default_factory=time.monotonic)  # monotonic, for durations
    started_wall: float = field(default_factory=time.time)  # wall clock, for events' times
    entries: list[Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        """The timeline begins now: later entries count from here (the set-up's entries keep
        their times, counted from the start of the run)."""
        with self._lock:
            self.started = time.monotonic()
            self.started_wall = time.time()

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(self, kind: str, text: str, *, at_wall: float | None = None) -> Entry:
        t = self.now() if at_wall is None else at_wall - self.started_wall
        entry = Entry(t, kind, text)
        with self._lock:
            self.entries.append(entry)
        if self.echo is not None:
            self.echo(entry)
        return entry

    def all(self) -> list[Entry]:
        """The entries in the order they were added."""
        with self._lock:
            return list(self.entries)


@dataclass
class Result:
    scenario: str
    file: str
    passed: bool = False
    seconds: float = 0.0  # the whole run, set-up included
    setup_seconds: float = 0.0
    misses: list[str] = field(default_factory=list)  # expectations not met, steps that failed
    violations: list[str] = field(default_factory=list)  # must-nevers seen
    error: str | None = None  # the run could not go on (set-up failed, ...)
    data_dir: str | None = None  # kept for a look at the logs, else None (removed)
    fabric_reads: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, timeline: Timeline) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "file": self.file,
            "passed": self.passed,
            "seconds": round(self.seconds, 2),
            "setup_seconds": round(self.setup_seconds, 2),
            "misses": self.misses,
            "violations": self.violations,
            "error": self.error,
            "data_dir": self.data_dir,
            "fabric_reads": self.fabric_reads,
            "timeline": [e.to_json() for e in timeline.all()],
            "events": self.events,
        }

    def summary(self) -> str:
        if self.passed:
            return f"PASS {self.scenario} ({self.seconds:.1f} s)"
        parts = []
        if self.error:
            parts.append(self.error)
        if self.violations:
            parts.append(f"{len(self.violations)} must-never violation(s)")
        if self.misses:
            parts.append(f"{len(self.misses)} miss(es)")
        return f"FAIL {self.scenario} ({self.seconds:.1f} s): {'; '.join(parts)}"
