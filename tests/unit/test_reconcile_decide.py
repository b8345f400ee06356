"""The command reconciler's decision, for every journal state and live state."""

from __future__ import annotations

import pytest

from bollard.domain.commands import AgentCommandState as A
from bollard.domain.reconcile import decide, goal_reached
from bollard.domain.states import STORAGE_COMMANDS
from bollard.domain.states import CommandType as T
from bollard.domain.states import PowerState as P

LIVE = [None, P.RUNNING, P.STOPPED, P.PAUSED, P.CRASHED]

GOALS = {
    T.DEFINE: {P.RUNNING, P.STOPPED, P.PAUSED, P.CRASHED},
    T.START: {P.RUNNING},
    T.RESTART: {P.RUNNING},
    T.STOP: {P.STOPPED, P.CRASHED},
    T.SHUTDOWN: {P.STOPPED, P.CRASHED},
    T.UNDEFINE: {None},
    T.MIGRATE: {None},
    # Storage commands act on pools, not on the VM's power: the task that sent them looks at
    # the pool (or at the file a running domain uses) instead.
    **{c: set() for c in STORAGE_COMMANDS},
    # A VF's settings (SR-IOV) are the host's, not the VM's.
    T.VF_SET: set(),
}


@pytest.mark.parametrize("command", list(T))
@pytest.mark.parametrize("live", LIVE)
def test_goal_table(command: T, live: P | None) -> None:
    assert goal_reached(command, live) is (live in GOALS[command])


@pytest.mark.parametrize("command", list(T))
@pytest.mark.parametrize("live", LIVE)
def test_journal_answer_wins_over_live_state(command: T, live: P | None) -> None:
    done = decide(command, A.COMPLETED, entry_ok=True, entry_result={"x": 1}, live=live)
    assert (done.known, done.ok, done.result) == (True, True, {"x": 1})
    failed = decide(command, A.FAILED, entry_ok=False, entry_error=("boom", "it broke"), live=live)
    assert (failed.known, failed.ok, failed.error_code, failed.reason) == (
        True,
        False,
        "boom",
        "it broke",
    )
    assert failed.answer() == {
        "ok": False,
        "result": {},
        "error": {"code": "boom", "message": "it broke"},
    }


@pytest.mark.parametrize("live", LIVE)
def test_never_received_did_not_happen(live: P | None) -> None:
    d = decide(T.START, None, live=live)
    assert (d.known, d.ok, d.error_code) == (True, False, "never-received")


@pytest.mark.parametrize("command", list(T))
@pytest.mark.parametrize("live", LIVE)
def test_interrupted_is_decided_by_the_live_state(command: T, live: P | None) -> None:
    d = decide(
        command, A.INTERRUPTED, live=live, live_report={"power": str(live)} if live else None
    )
    assert d.known
    assert d.ok is (live in GOALS[command])
    if not d.ok:
        assert d.error_code == "interrupted"
    if live is not None:
        assert d.result == {"vm": {"power": str(live)}}


@pytest.mark.parametrize("command", list(T))
@pytest.mark.parametrize("live", LIVE)
def test_dangling_backend_job_waits_for_its_goal(command: T, live: P | None) -> None:
    d = decide(command, A.DANGLED_IN_BACKEND, live=live)
    assert d.known is (live in GOALS[command])
    if d.known:
        assert d.ok


@pytest.mark.parametrize("state", [A.RECEIVED, A.STARTED, A.PROCESSING, A.PROCESSING_IN_BACKEND])
def test_still_running_asks_again(state: A) -> None:
    d = decide(T.START, state, live=P.RUNNING)
    assert not d.known
    assert str(state) in d.reason
