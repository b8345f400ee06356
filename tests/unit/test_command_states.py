"""The server-side command state machine: every allowed transition, and refusal of the rest."""

from __future__ import annotations

import itertools

import pytest

from bollard.domain.commands import TERMINAL, TRANSITIONS, CommandState, allowed

C = CommandState

ALLOWED = {
    (C.CREATED, C.SENT),
    (C.CREATED, C.FAILED),
    (C.CREATED, C.INTERRUPTED),
    (C.SENT, C.COMPLETED),
    (C.SENT, C.FAILED),
    (C.SENT, C.INTERRUPTED),
    (C.SENT, C.TIMED_OUT),
    (C.INTERRUPTED, C.RECONCILING),
    (C.TIMED_OUT, C.RECONCILING),
    (C.RECONCILING, C.RECONCILED),
    (C.RECONCILING, C.RECONCILE_RETRY),
    (C.RECONCILING, C.RECONCILE_FAILED),
    (C.RECONCILING, C.RECONCILE_SKIPPED),
    (C.RECONCILE_RETRY, C.RECONCILING),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(C, C)))
def test_transition_table(src: CommandState, dst: CommandState) -> None:
    assert allowed(src, dst) is ((src, dst) in ALLOWED)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(C)


def test_terminal_states() -> None:
    assert {
        C.COMPLETED,
        C.FAILED,
        C.RECONCILED,
        C.RECONCILE_FAILED,
        C.RECONCILE_SKIPPED,
    } == TERMINAL
