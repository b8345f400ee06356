"""`bollard task show`: a step's state with its retries."""

from __future__ import annotations

from bollard.cli.task_cmd import _state


def test_a_waiting_step_shows_its_next_attempt() -> None:
    step = {"state": "waiting", "attempts": 2, "retry_at": "2026-12-05T10:00:05Z"}
    assert _state(step) == "waiting (retry 2 at 2026-12-05T10:00:05Z)"


def test_a_step_that_was_retried_says_how_often() -> None:
    assert _state({"state": "done", "attempts": 1, "retry_at": None}) == "done (1 retry)"
    assert _state({"state": "failed", "attempts": 3, "retry_at": None}) == "failed (3 retries)"


def test_a_step_never_retried_shows_its_state_only() -> None:
    assert _state({"state": "done", "attempts": 0, "retry_at": None}) == "done"
    assert _state({"state": "running"}) == "running"  # an answer from before retries
