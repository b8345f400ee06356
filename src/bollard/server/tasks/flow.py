"""What a kind of task is made of: its typed parameters and its steps, each with `do` and
`undo` (see engine.py for how they run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection

from bollard.domain.errors import BollardError, NodeUnavailable
from bollard.domain.models import Task
from bollard.server.tasks.context import StepContext
from bollard.server.tasks.params import ParamsModel

StepFn = Callable[[StepContext[Any]], Awaitable[dict[str, Any] | None]]
UndoFn = Callable[[StepContext[Any]], Awaitable[None]]
TxFn = Callable[[Connection, StepContext[Any]], dict[str, Any] | None]
UndoTxFn = Callable[[Connection, StepContext[Any]], None]


async def _nothing(ctx: StepContext[Any]) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How a step that fails with a temporary error (`BollardError.retryable`, of one of
    `errors`) is tried again: at most `attempts` runs in all, the n-th retry
    `delay * factor ** (n - 1)` seconds after the failure (at most `max_delay`). Any other
    error, or the last attempt's, fails the step and rolls back at once."""

    attempts: int
    delay: float
    factor: float = 2.0
    max_delay: float = 60.0
    errors: tuple[type[BollardError], ...] = (BollardError,)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.delay < 0 or self.factor < 1:
            raise ValueError(f"bad retry policy {self}")

    def retries(self, exc: BollardError, attempts: int) -> bool:
        """Whether a step that failed with `exc` after `attempts` runs is tried again."""
        return exc.retryable and isinstance(exc, self.errors) and attempts < self.attempts

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1 for the first)."""
        return float(min(self.max_delay, self.delay * self.factor ** (retry - 1)))


NO_RETRY = RetryPolicy(attempts=1, delay=0)
# A command to a node that is briefly away (an agent restarting, a session being replaced):
# sent again once it is back, within about 14 s.
RECONNECT_RETRY = RetryPolicy(
    attempts=4, delay=2.0, factor=2.0, max_delay=10.0, errors=(NodeUnavailable,)
)


@dataclass(frozen=True)
class StepDef:
    """One step. `do` acts (commands to hosts); `tx` writes to the database in the same
    transaction that marks the step done, so a database-only step happens exactly once even
    if the server dies around it. `undo` and `undo_tx` are their counterparts for rollback.
    Once a `commit_point` step is done, a later failure no longer rolls anything back."""

    name: str
    do: StepFn = _nothing
    undo: UndoFn | None = None
    # Decided from the task's params and earlier results: False skips the step.
    when: Callable[[StepContext[Any]], bool] | None = None
    tx: TxFn | None = None
    undo_tx: UndoTxFn | None = None
    commit_point: bool = False
    retry: RetryPolicy = NO_RETRY

    @property
    def undoable(self) -> bool:
        return self.undo is not None or self.undo_tx is not None


class Flow(Protocol):
    """One kind of task: its parameters, its steps, and what its end writes (in the
    transaction that ends it)."""

    @property
    def type(self) -> str: ...

    @property
    def params_model(self) -> ParamsModel: ...

    def steps(self, task: Task) -> list[StepDef]: ...

    def succeed(self, conn: Connection, ctx: StepContext[Any]) -> None: ...

    def fail(self, conn: Connection, ctx: StepContext[Any], error: str) -> None: ...
