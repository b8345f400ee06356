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
# The id of the API request being served (its X-Request-Id), which the tasks it creates keep
# (a VM's actions are its tasks, each named by the request that asked for it).
_request: ContextVar[str | None] = ContextVar("bollard_request", default=None)


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


def current_request() -> str | None:
    """The id of the API request being served (None outside one: the server's own work)."""
    return _request.get()


def set_request(request_id: str | None) -> None:
    """Make `request_id` the current request's id for the rest of this context."""
    _request.set(request_id)


@contextmanager
def serving(request_id: str) -> Iterator[None]:
    """Serve an API request with this id, then restore the one found."""
    token = _request.set(request_id)
    try:
        yield
    finally:
        _request.reset(token)
