"""What became of a command whose answer was lost: decided from the agent's journal entry and
the live state of the VM it concerns. Pure, so every case is unit-tested."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bollard.domain.commands import AgentCommandState
from bollard.domain.states import CommandType, PowerState

# The live state that proves a command took effect (None: the VM must be absent).
_GOAL: dict[CommandType, frozenset[PowerState] | None] = {
    CommandType.DEFINE: frozenset(
        {PowerState.STOPPED, PowerState.RUNNING, PowerState.PAUSED, PowerState.CRASHED}
    ),
    CommandType.START: frozenset({PowerState.RUNNING}),
    CommandType.RESTART: frozenset({PowerState.RUNNING}),
    CommandType.STOP: frozenset({PowerState.STOPPED, PowerState.CRASHED}),
    CommandType.SHUTDOWN: frozenset({PowerState.STOPPED, PowerState.CRASHED}),
    CommandType.UNDEFINE: None,
    # Where a migrated VM runs is not visible from the source alone: the migration task asks
    # both hosts (Inspect) when the outcome is unknown; here, absent from the source means done.
    CommandType.MIGRATE: None,
}

# The code of a command its agent never received (and tombstoned: it can never run).
NEVER_RECEIVED = "never-received"


@dataclass(frozen=True)
class ReconcileVerdict:
    """`known`: the outcome is established (`ok`, `result`, `error_*`); otherwise ask again."""

    known: bool
    ok: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    reason: str = ""

    def answer(self) -> dict[str, Any]:
        error = None if self.ok else {"code": self.error_code or "failed", "message": self.reason}
        return {"ok": self.ok, "result": self.result, "error": error}


def goal_reached(command: CommandType, live: PowerState | None) -> bool:
    """Whether the live state (None: the host does not have the VM) is what the command wanted.
    Never for storage commands: their effect is in a pool, which the task that sent them
    looks at (every storage command is safe to send again under a new id, or checked first);
    nor for a host's own settings (VF_SET: a VF's, which no VM's state shows; the task that
    sent it fails and the operator sends it again, which sets the same values)."""
    if command.storage or command not in _GOAL:
        return False
    goal = _GOAL[command]
    if goal is None:
        return live is None
    return live is not None and live in goal


def decide(
    command: CommandType,
    entry_state: AgentCommandState | None,
    *,
    entry_ok: bool | None = None,
    entry_result: dict[str, Any] | None = None,
    entry_error: tuple[str, str] | None = None,
    live: PowerState | None,
    live_report: dict[str, Any] | None = None,
) -> ReconcileVerdict:
    """Decide a command's outcome.

    - The journal has the answer (COMPLETED or FAILED): that is the outcome.
    - The agent never received it (no entry; the agent has tombstoned the id so it can never
      run later): it did not happen.
    - It was interrupted (the agent died while running it): it took effect if the live state
      shows its goal, else it failed.
    - A backend job was left dangling: done if the goal shows, else ask again later.
    - Still running on a live agent: ask again later.
    """
    vm = {"vm": live_report} if live_report is not None else {}
    if entry_state in (AgentCommandState.COMPLETED, AgentCommandState.FAILED):
        ok = entry_state is AgentCommandState.COMPLETED if entry_ok is None else entry_ok
        code, message = entry_error or (None, "")
        return ReconcileVerdict(
            True, ok, dict(entry_result or {}), code, message or "reported by the agent's journal"
        )
    if entry_state is None:
        return ReconcileVerdict(
            True, False, vm, NEVER_RECEIVED, "the agent never received the command"
        )
    if entry_state is AgentCommandState.INTERRUPTED:
        if goal_reached(command, live):
            return ReconcileVerdict(
                True, True, vm, reason="interrupted, but the host shows it took effect"
            )
        return ReconcileVerdict(
            True,
            False,
            vm,
            "interrupted",
            "the agent was interrupted before the command took effect",
        )
    if entry_state is AgentCommandState.DANGLED_IN_BACKEND:
        if goal_reached(command, live):
            return ReconcileVerdict(True, True, vm, reason="the backend job finished")
        return ReconcileVerdict(False, reason="a backend job may still be running")
    return ReconcileVerdict(False, reason=f"the agent is still running it ({entry_state})")
