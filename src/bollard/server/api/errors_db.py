"""A server cut from its database answers 503 `database-unreachable`, not 500.

While the database cannot be reached (connection refused or lost, no connection free in
the pool in time) every call that reads or writes fails; that is the database's state, not a
bug of the call, and another server (or this one a little later) may well answer. So such a
failure is answered 503 with a `Retry-After` header and one line in the API's usual error
shape (errors.py); every other error, a programming error included, is left to the handlers
of errors.py (500 for what none of them knows).

A pure ASGI middleware, outside the authentication middleware (whose token look-ups read the
database too) and inside the access log (which then records the 503). The answer does not
repeat the driver's message (it names the database's host); the server's log has it, one
line per `LOG_EVERY` seconds at most.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bollard.server.api.errors import error_body
from bollard.server.clock import Clock, LogBudget

log = logging.getLogger(__name__)

CODE = "database-unreachable"
RETRY_AFTER = 5  # seconds, in the Retry-After header
LOG_EVERY = 10.0  # seconds between two log lines about it

# PostgreSQL's SQLSTATEs that say the database cannot be reached or used now: class 08
# (connection exception), and the server shutting down, crashed, starting up, or full.
UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300")


def unreachable(exc: BaseException) -> str | None:
    """What cut this server from its database, when ``exc`` says it is cut ("the connection
    failed or was lost", "no connection was free in time"); None for any other error (a
    constraint, a deadlock, a bad statement...)."""
    if isinstance(exc, PoolTimeout):
        return "no database connection became free in time"
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "the connection to it was lost"
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    # psycopg's errors carry a SQLSTATE: None for what the client saw itself (the
    # connection refused, reset or closed). SQLite's do not: a local file is not "reached".
    orig = exc.orig
    if orig is None or not hasattr(orig, "sqlstate"):
        return None
    state = getattr(orig, "sqlstate", None)
    if state is None or str(state).startswith("08") or state in UNREACHABLE_STATES:
        return "the connection to it failed or was lost"
    return None


def message(why: str) -> str:
    return (
        f"the database is unreachable from this server ({why}); try again shortly or ask"
        " another server"
    )


def first_line(exc: BaseException) -> str:
    """The driver's own words for it, for the log (never the statement or its values)."""
    source = getattr(exc, "orig", None) or exc
    text = str(source).strip()
    return f"{type(source).__name__}: {text.splitlines()[0] if text else '-'}"


class DatabaseUnreachable:
    """The middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self.app = app
        self._log_budget = LogBudget(clock, burst=1, window=LOG_EVERY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            why = unreachable(exc)
            if why is None or started:  # not ours, or too late for another answer
                raise
            self._log(scope, exc)
            answer = JSONResponse(
                error_body(CODE, message(why)),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
            await answer(scope, receive, send)

    def _log(self, scope: Scope, exc: BaseException) -> None:
        if self._log_budget.take("unreachable") is None:
            return
        log.warning(
            "the database is unreachable: %s %s answered 503 (%s); more such answers are"
            " not logged for %gs",
            scope.get("method", "?"),
            scope.get("path", "?"),
            first_line(exc),
            LOG_EVERY,
        )
