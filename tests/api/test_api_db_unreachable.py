"""A server cut from its database answers 503 `database-unreachable` with a Retry-After
header (api/errors_db.py), not 500; the CLI shows it as one line; once the database answers
again, so does the server. Errors that do not say the database is unreachable (a deadlock,
a constraint, a bad statement, SQLite's busy file) stay 500.

The server reaches PostgreSQL through the chaos harness's TCP proxy (tests/chaos/dbproxy.py),
which the test cuts ("reset": open connections aborted, new ones refused)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from bollard.cli.main import app as cli
from bollard.server.api import errors
from bollard.server.api.errors_db import CODE, RETRY_AFTER, DatabaseUnreachable
from bollard.server.clock import SystemClock
from tests.chaos.dbproxy import DbProxy
from tests.support.cluster import ServerThread, wait_until


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's (user and database kept)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def _assert_unreachable(answer: httpx.Response) -> str:
    """The 503 answer of a server cut from its database; returns its message."""
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("retry-after") == str(RETRY_AFTER)
    error = answer.json()["error"]
    assert error["code"] == CODE
    message: str = error["message"]
    assert "database is unreachable" in message and "\n" not in message
    return message


# -- a server on PostgreSQL, through a proxy that is cut ------------------------------------


@pytest.fixture
def proxied(tmp_path: Path, db_url: str) -> Iterator[tuple[ServerThread, DbProxy]]:
    upstream = urlsplit(db_url)
    proxy = DbProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432, "db-test")
    proxy.start()
    server: ServerThread | None = None
    try:
        server = ServerThread(tmp_path / "server", _through(db_url, proxy.port))
        yield server, proxy
    finally:
        if proxy.mode is not None:
            proxy.heal()  # a server stops cleanly only with its database
        if server is not None:
            server.stop()
        proxy.close()


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_server_cut_from_its_database_answers_503_until_it_is_back(
    proxied: tuple[ServerThread, DbProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    assert server.client.get("/vms").status_code == 200
    assert server.client.post("/users", json={"name": "rita", "role": "reader"}).is_success
    made = server.client.post("/tokens", json={"user": "rita"})
    assert made.status_code == 201, made.text
    reader = made.json()["token"]
    connections = proxy.connections

    proxy.cut("reset")
    message = _assert_unreachable(server.client.get("/vms"))
    assert "127.0.0.1" not in message and str(proxy.port) not in message
    # A write, and a token looked up in the database (the authentication middleware's read).
    _assert_unreachable(server.client.post("/users", json={"name": "sam", "role": "reader"}))
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as as_reader:
        answer = as_reader.get("/vms", headers={"Authorization": f"Bearer {reader}"})
    _assert_unreachable(answer)
    assert proxy.connections > connections, "the server did try the database again"
    # Liveness does not need the database.
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200

    # The CLI: one line, saying so.
    env = {
        "BOLLARD_URL": server.url,
        "BOLLARD_TOKEN": server.token,
        "BOLLARD_CONFIG_DIR": str(tmp_path / "cli-config"),
    }
    result = CliRunner().invoke(cli, ["vm", "list"], env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "database is unreachable" in lines[0]
    assert "HTTP 503" in lines[0] and "Traceback" not in result.stderr

    proxy.heal()
    wait_until(
        lambda: server.client.get("/vms").status_code == 200,
        "the server answers again once its database does",
    )
    assert server.client.get("/users/rita").status_code == 200


# -- which errors are the database's unreachability: an app of its own ----------------------


def _operational(orig: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


def _deadlock() -> OperationalError:
    return _operational(psycopg.errors.DeadlockDetected("deadlock detected"))


RAISED: dict[str, BaseException] = {
    "refused": _operational(psycopg.OperationalError("connection failed: Connection refused")),
    "shutdown": _operational(psycopg.errors.AdminShutdown("terminating connection")),
    "lost": ProgrammingError("SELECT 1", {}, Exception("closed"), connection_invalidated=True),
    "pool": PoolTimeout("QueuePool limit of size 10 overflow 20 reached"),
    "deadlock": _deadlock(),
    "constraint": IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate")),
    "syntax": ProgrammingError("SELEC", {}, psycopg.errors.SyntaxError("syntax error")),
    "busy": _operational(sqlite3.OperationalError("database is locked")),
    "bug": KeyError("x"),
}


class _RaiseInMiddleware:
    """Raises as the authentication middleware would if its token look-up failed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mw/"):
            raise RAISED[scope["path"].removeprefix("/mw/")]
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    app = FastAPI()
    errors.install(app)
    app.add_middleware(_RaiseInMiddleware)
    app.add_middleware(DatabaseUnreachable, clock=SystemClock())

    @app.get("/raise/{what}")
    def raise_it(what: str) -> None:
        raise RAISED[what]

    return app


def _get(app: FastAPI, path: str) -> httpx.Response:
    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bollard") as c:
            return await c.get(path)

    return asyncio.run(ask())


@pytest.mark.parametrize("where", ["raise", "mw"])
@pytest.mark.parametrize("what", ["refused", "shutdown", "lost", "pool"])
def test_unreachable_is_503(app: FastAPI, where: str, what: str) -> None:
    _assert_unreachable(_get(app, f"/{where}/{what}"))


@pytest.mark.parametrize("where", ["raise", "mw"])
@pytest.mark.parametrize("what", ["deadlock", "constraint", "syntax", "busy", "bug"])
def test_other_errors_stay_500(app: FastAPI, where: str, what: str) -> None:
    answer = _get(app, f"/{where}/{what}")
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["code"] == "internal"
    assert "retry-after" not in answer.headers
