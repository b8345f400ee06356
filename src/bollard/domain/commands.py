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
