"""Who caused a change: the actor every event and task names.

An API call acts as the user (or token) that authenticated it; the server's own decisions
(reconcilers, health monitor, fencing, HA) act as `SYSTEM`. The current actor travels with
the request or task in a context variable: asyncio tasks and `asyncio.to_thread` copy it, so
the database work a request or a task step runs names the same actor without passing it
through every call. A task records its actor when it is created and runs as it, also after a
restart."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SYSTEM = "system"

_current: ContextVar[str] = ContextVar("bollard_actor", default=SYSTEM)


def current() -> str:
    """The actor of the code running now (`system` outside any request or task)."""
    return _current.get()


def set_current(name: str) -> None:
    """Make `name` the actor for the rest of this context (a request's handler, a task's run)."""
    _current.set(name)


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Run a block as `name`, then restore the actor it found."""
    token = _current.set(name)
    try:
        yield
    finally:
        _current.reset(token)
