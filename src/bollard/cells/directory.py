"""The cells the API server knows, with an HTTP client for each and what it last saw of them.

A call to a cell goes to `<url>/api/v1` with the cell's admin token and, when a user asked for
it, the headers naming that user (server/api/authn.py: `on_behalf_of`), so the cell checks the
user's role again and its events and tasks name the user. Every call has the configured
deadline; a cell that does not answer in time, or cannot be reached, is `CellUnreachable`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bollard.domain import actors
from bollard.domain.cells import Cell
from bollard.domain.errors import BollardError, NotFound
from bollard.domain.policy import ADMIN_TOKEN_IDENTITY, Identity
from bollard.server.clock import Clock
from bollard.server.ports import UnitOfWork
from bollard.server.secrets import SecretBox
from bollard.store import cells

log = logging.getLogger(__name__)

ON_BEHALF_OF = "x-bollard-on-behalf-of"
ROLE = "x-bollard-role"
TOKEN_ID = "x-bollard-token-id"
REQUEST_ID = "x-request-id"
TOKEN_KEY = "token"


class CellUnreachable(BollardError):
    code = "cell-unreachable"
    http_status = 503
    retryable = True

    def __init__(self, cell: str, error: str) -> None:
        super().__init__(f"cell {cell} did not answer: {error}")
        self.cell = cell
        self.error = error


def identity_headers(identity: Identity | None) -> dict[str, str]:
    """The headers that make a cell act for `identity` (none: the API server's own calls and
    the holder of its admin token act as the cell's admin)."""
    headers: dict[str, str] = {}
    request_id = actors.current_request()
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    if identity is None or identity == ADMIN_TOKEN_IDENTITY:
        return headers
    headers[ON_BEHALF_OF] = identity.user
    headers[ROLE] = identity.role.value
    if identity.token_id is not None:
        headers[TOKEN_ID] = identity.token_id
    return headers


def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """The TLS context a cell's certificate is checked with (its CA, else the system's)."""
    found = _tls(ca_pem)
    return found if isinstance(found, ssl.SSLContext) else ssl.create_default_context()


def _tls(ca_pem: str | None) -> ssl.SSLContext | bool:
    if ca_pem is None:
        return True
    try:
        return ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise BollardError(f"ca_pem: not a PEM certificate ({exc})", code="invalid-input") from None


def _describe(exc: Exception, deadline: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {deadline:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({str(exc).strip() or 'refused'})"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass
class CellSeen:
    """What the API server last saw of a cell (its periodic check, or any call)."""

    state: str = "unknown"  # up | unreachable | unknown
    error: str | None = None
    checked_at: datetime | None = None
    latency_ms: float | None = None
    version: str | None = None
    database: str | None = None
    status: dict[str, Any] | None = None


@dataclass
class CellClient:
    cell: Cell
    http: httpx.AsyncClient
    deadline: float
    seen: CellSeen = field(default_factory=CellSeen)

    @property
    def name(self) -> str:
        return self.cell.name

    async def call(
        self,
        method: str,
        path: str,
        *,
        identity: Identity | None = None,
        params: Any = None,
        json: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """`method path` (under /api/v1) on this cell; CellUnreachable if it does not answer."""
        sent = {**identity_headers(identity), **(headers or {})}
        try:
            return await self.http.request(
                method, path, params=params, json=json, content=content, headers=sent,
                timeout=deadline or self.deadline,
            )  # fmt: skip
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            error = _describe(exc, self.deadline if deadline is None else deadline)
            raise CellUnreachable(self.name, f"{self.cell.url}: {error}") from None

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like `call`, for an answer that must be 2xx JSON; a refusal is raised as the cell
        said it (code, HTTP status and message), naming the cell."""
        answer = await self.call(method, path, **kwargs)
        if answer.status_code >= 400:
            raise refusal(self.name, answer)
        if answer.status_code == 204:
            return None
        return answer.json()


def refusal(cell: str, answer: httpx.Response) -> BollardError:
    """A cell's error answer as a BollardError with the same status, code and message."""
    try:
        error = answer.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "cell-error", f"cell {cell} answered HTTP {answer.status_code}"
    exc = BollardError(message, code=code)
    exc.http_status = answer.status_code
    return exc


class CellDirectory:
    """Every cell of the API database with its client; `reload()` after cells change."""

    def __init__(
        self,
        *,
        work: UnitOfWork,
        clock: Clock,
        box: SecretBox,
        deadline: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._work = work
        self._clock = clock
        self._box = box
        self.deadline = deadline
        self._transport = transport  # tests: an in-process transport
        self._clients: dict[str, CellClient] = {}
        self._keys: dict[str, tuple[str, str, str | None]] = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return sorted(self._clients)

    def clients(self) -> list[CellClient]:
        return [self._clients[n] for n in self.names()]

    def get(self, name: str) -> CellClient:
        found = self._clients.get(name)
        if found is None:
            raise NotFound(f"no cell named {name!r} (`bollard cell list` shows the cells)")
        return found

    def find(self, name: str) -> CellClient | None:
        return self._clients.get(name)

    def token(self, sealed: str) -> str:
        return self._box.open(sealed)[TOKEN_KEY]

    def seal(self, token: str) -> str:
        return self._box.seal({TOKEN_KEY: token})

    def client_for(self, cell: Cell, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=cell.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            verify=_tls(cell.ca_pem),
            transport=self._transport,
            timeout=self.deadline,
        )

    async def reload(self) -> None:
        """Read the cells again; a client is rebuilt only for a cell whose url, token or CA
        changed (what was seen of the others is kept)."""

        def read() -> tuple[list[Cell], dict[str, str]]:
            with self._work.read() as conn:
                return cells.all_cells(conn), cells.sealed_tokens(conn)

        found, sealed = await self._work.run(read)
        async with self._lock:
            old = self._clients
            fresh: dict[str, CellClient] = {}
            for cell in found:
                key = (cell.url, sealed[cell.name], cell.ca_pem)
                kept = old.get(cell.name)
                if kept is not None and self._keys.get(cell.name) == key:
                    kept.cell = cell
                    fresh[cell.name] = kept
                    continue
                http = self.client_for(cell, self.token(sealed[cell.name]))
                fresh[cell.name] = CellClient(cell, http, self.deadline)
                self._keys[cell.name] = key
            for name, client in old.items():
                if fresh.get(name) is not client:
                    await client.http.aclose()
                    if name not in fresh:
                        self._keys.pop(name, None)
            self._clients = fresh

    async def close(self) -> None:
        for client in self._clients.values():
            await client.http.aclose()
        self._clients = {}

    async def check(self, client: CellClient) -> CellSeen:
        """Ask the cell for its status; record what was seen (also on failure)."""
        started = time.monotonic()
        seen = client.seen
        try:
            status = await client.json("GET", "/status")
        except BollardError as exc:
            seen.state, seen.error = "unreachable", exc.message
            seen.status = seen.latency_ms = None
        else:
            seen.state, seen.error = "up", None
            seen.latency_ms = round((time.monotonic() - started) * 1000, 1)
            seen.version, seen.database = status.get("version"), status.get("database")
            seen.status = status
        seen.checked_at = self._clock.now()
        return seen

    def mark(self, name: str, error: str | None) -> None:
        """Record the outcome of an ordinary call (a gathered list, a routed call)."""
        client = self._clients.get(name)
        if client is None:
            return
        client.seen.state = "unreachable" if error else "up"
        client.seen.error = error
        if error:
            client.seen.latency_ms = None
        client.seen.checked_at = self._clock.now()
