"""What a command came to: its outcome as the agent (or the reconciler) reported it, read
back from a command's row, or turned into a step's result or error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bollard.domain.commands import CommandState
from bollard.domain.errors import CommandFailed, CommandFailedTemporarily, CommandOutcomeUnknown
from bollard.domain.protocol import AnswerError
from bollard.domain.states import CommandType

_OUTCOME_STATES = (CommandState.COMPLETED, CommandState.FAILED, CommandState.RECONCILED)


@dataclass(frozen=True)
class CommandOutcome:
    ok: bool
    result: dict[str, Any]
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def of_answer(cls, answer: dict[str, Any]) -> CommandOutcome:
        error = answer.get("error") or {}
        return cls(
            bool(answer.get("ok")),
            dict(answer.get("result") or {}),
            error.get("code"),
            error.get("message"),
        )

    @classmethod
    def of(cls, ok: bool, result: dict[str, Any], error: AnswerError | None) -> CommandOutcome:
        return cls(ok, result, *((error.code, error.message) if error else (None, None)))

    def as_answer(self) -> dict[str, Any]:
        error = None if self.ok else {"code": self.error_code, "message": self.error_message}
        return {"ok": self.ok, "result": self.result, "error": error}


def known_outcome(
    state: str, answer: dict[str, Any] | None, error: str | None
) -> CommandOutcome | None:
    """The outcome a command's row already holds, if it has ended."""
    current = CommandState(state)
    if current in _OUTCOME_STATES and answer is not None:
        return CommandOutcome.of_answer(answer)
    if current is CommandState.FAILED:
        return CommandOutcome(False, {}, "failed", error or "failed")
    if current is CommandState.RECONCILE_SKIPPED:
        return CommandOutcome(False, {}, "skipped", error or "reconciliation skipped")
    if current is CommandState.RECONCILE_FAILED:
        return CommandOutcome(False, {}, "reconcile-failed", error or "could not be reconciled")
    return None


def result_or_raise(outcome: CommandOutcome, command: CommandType, node: str) -> dict[str, Any]:
    if outcome.ok:
        return outcome.result
    message = outcome.error_message or "the agent reported a failure"
    if outcome.error_code == "reconcile-failed":
        raise CommandOutcomeUnknown(f"{command} on node {node!r}: {message}")
    if outcome.error_code == "temporary":
        raise CommandFailedTemporarily(f"{command} on node {node!r} failed: {message}")
    raise CommandFailed(
        f"{command} on node {node!r} failed: {message}", code=outcome.error_code or None
    )
