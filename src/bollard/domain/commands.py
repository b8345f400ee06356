"""Command states on the server side and their whitelisted transitions (DESIGN.md section 5)."""

from __future__ import annotations

from enum import StrEnum


class CommandState(StrEnum):
    CREATED = "CREATED"
    SENT = "SENT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    TIMED_OUT = "TIMED_OUT"
    RECONCILING = "RECONCILING"
    RECONCILED = "RECONCILED"
    RECONCILE_RETRY = "RECONCILE_RETRY"
    RECONCILE_FAILED = "RECONCILE_FAILED"
    RECONCILE_SKIPPED = "RECONCILE_SKIPPED"


TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    CommandState.CREATED: frozenset(
        {CommandState.SENT, CommandState.FAILED, CommandState.INTERRUPTED}
    ),
    CommandState.SENT: frozenset(
        {
            CommandState.COMPLETED,
            CommandState.FAILED,
            CommandState.INTERRUPTED,
            CommandState.TIMED_OUT,
        }
    ),
    CommandState.INTERRUPTED: frozenset({CommandState.RECONCILING}),
    CommandState.TIMED_OUT: frozenset({CommandState.RECONCILING}),
    CommandState.RECONCILING: frozenset(
        {
            CommandState.RECONCILED,
            CommandState.RECONCILE_RETRY,
            CommandState.RECONCILE_FAILED,
            CommandState.RECONCILE_SKIPPED,
        }
    ),
    CommandState.RECONCILE_RETRY: frozenset({CommandState.RECONCILING}),
    CommandState.COMPLETED: frozenset(),
    CommandState.FAILED: frozenset(),
    CommandState.RECONCILED: frozenset(),
    CommandState.RECONCILE_FAILED: frozenset(),
    CommandState.RECONCILE_SKIPPED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def allowed(src: CommandState, dst: CommandState) -> bool:
    return dst in TRANSITIONS[src]


class AgentCommandState(StrEnum):
    """A command's state in the agent's journal."""

    RECEIVED = "RECEIVED"
    STARTED = "STARTED"
    PROCESSING = "PROCESSING"
    PROCESSING_IN_BACKEND = "PROCESSING_IN_BACKEND"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    DANGLED_IN_BACKEND = "DANGLED_IN_BACKEND"


AGENT_TRANSITIONS: dict[AgentCommandState, frozenset[AgentCommandState]] = {
    AgentCommandState.RECEIVED: frozenset(
        {AgentCommandState.STARTED, AgentCommandState.FAILED, AgentCommandState.INTERRUPTED}
    ),
    AgentCommandState.STARTED: frozenset(
        {
            AgentCommandState.PROCESSING,
            AgentCommandState.PROCESSING_IN_BACKEND,
            AgentCommandState.FAILED,
            AgentCommandState.INTERRUPTED,
        }
    ),
    AgentCommandState.PROCESSING: frozenset(
        {AgentCommandState.COMPLETED, AgentCommandState.FAILED, AgentCommandState.INTERRUPTED}
    ),
    AgentCommandState.PROCESSING_IN_BACKEND: frozenset(
        {
            AgentCommandState.COMPLETED,
            AgentCommandState.FAILED,
            AgentCommandState.DANGLED_IN_BACKEND,
        }
    ),
    # After an agent restart: what was interrupted is terminal; a backend job left running
    # may still end, and its outcome is recorded when it does.
    AgentCommandState.INTERRUPTED: frozenset(),
    AgentCommandState.DANGLED_IN_BACKEND: frozenset(
        {AgentCommandState.COMPLETED, AgentCommandState.FAILED}
    ),
    AgentCommandState.COMPLETED: frozenset(),
    AgentCommandState.FAILED: frozenset(),
}

AGENT_TERMINAL = frozenset(
    {AgentCommandState.COMPLETED, AgentCommandState.FAILED, AgentCommandState.INTERRUPTED}
)

# What a restarting agent turns its unfinished entries into.
AGENT_ON_RESTART: dict[AgentCommandState, AgentCommandState] = {
    AgentCommandState.RECEIVED: AgentCommandState.INTERRUPTED,
    AgentCommandState.STARTED: AgentCommandState.INTERRUPTED,
    AgentCommandState.PROCESSING: AgentCommandState.INTERRUPTED,
    AgentCommandState.PROCESSING_IN_BACKEND: AgentCommandState.DANGLED_IN_BACKEND,
}


def agent_allowed(src: AgentCommandState, dst: AgentCommandState) -> bool:
    return dst in AGENT_TRANSITIONS[src]
