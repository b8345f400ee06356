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


C = CommandState

TRANSITIONS: dict[CommandState, frozenset[CommandState]] = {
    C.CREATED: frozenset({C.SENT, C.FAILED, C.INTERRUPTED}),
    C.SENT: frozenset({C.COMPLETED, C.FAILED, C.INTERRUPTED, C.TIMED_OUT}),
    C.INTERRUPTED: frozenset({C.RECONCILING}),
    C.TIMED_OUT: frozenset({C.RECONCILING}),
    C.RECONCILING: frozenset(
        {C.RECONCILED, C.RECONCILE_RETRY, C.RECONCILE_FAILED, C.RECONCILE_SKIPPED}
    ),
    C.RECONCILE_RETRY: frozenset({C.RECONCILING}),
    C.COMPLETED: frozenset(),
    C.FAILED: frozenset(),
    C.RECONCILED: frozenset(),
    C.RECONCILE_FAILED: frozenset(),
    C.RECONCILE_SKIPPED: frozenset(),
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


A = AgentCommandState

AGENT_TRANSITIONS: dict[AgentCommandState, frozenset[AgentCommandState]] = {
    A.RECEIVED: frozenset({A.STARTED, A.FAILED, A.INTERRUPTED}),
    A.STARTED: frozenset({A.PROCESSING, A.PROCESSING_IN_BACKEND, A.FAILED, A.INTERRUPTED}),
    A.PROCESSING: frozenset({A.COMPLETED, A.FAILED, A.INTERRUPTED}),
    A.PROCESSING_IN_BACKEND: frozenset({A.COMPLETED, A.FAILED, A.DANGLED_IN_BACKEND}),
    # After an agent restart: what was interrupted is terminal; a backend job left running
    # may still end, and its outcome is recorded when it does.
    A.INTERRUPTED: frozenset(),
    A.DANGLED_IN_BACKEND: frozenset({A.COMPLETED, A.FAILED}),
    A.COMPLETED: frozenset(),
    A.FAILED: frozenset(),
}

AGENT_TERMINAL = frozenset({A.COMPLETED, A.FAILED, A.INTERRUPTED})

# What a restarting agent turns its unfinished entries into.
AGENT_ON_RESTART: dict[AgentCommandState, AgentCommandState] = {
    A.RECEIVED: A.INTERRUPTED,
    A.STARTED: A.INTERRUPTED,
    A.PROCESSING: A.INTERRUPTED,
    A.PROCESSING_IN_BACKEND: A.DANGLED_IN_BACKEND,
}


def agent_allowed(src: AgentCommandState, dst: AgentCommandState) -> bool:
    return dst in AGENT_TRANSITIONS[src]
