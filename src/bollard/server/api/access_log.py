"""The access log: one line per API request (method, path, status, actor, duration), and
one per WebSocket once it ends (`WS`, path, 101 if it was accepted, else 403).

Written to its own file, rotated by size, through a queue so the event loop never waits on
the disk. The path is logged without its query string; no header or body is ever logged (so
no token can reach the file). The file and its rotated copies are created mode 0600.

Query parameters that are credentials (`SECRET_PARAMS`: the console's single-use `ticket`)
must not reach any log either: uvicorn's own log names each WebSocket with its query string,
so `redact_uvicorn_logs` (installed when the access log starts) blanks their values there."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import queue
import re
from pathlib import Path
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bollard.server.clock import Clock

LOGGER = "bollard.access"
MAX_BYTES = 10 * 1024 * 1024  # rotate at 10 MiB
BACKUPS = 5  # access.log.1 .. access.log.5
# Where the authentication middleware leaves the caller's name in the ASGI scope.
ACTOR_SCOPE_KEY = "bollard.actor"
# Query parameters whose values are secrets, and uvicorn's loggers that may show them.
SECRET_PARAMS = ("ticket",)
UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")
REDACTED = "[redacted]"
_PARAM = re.compile(r"([?&;])([^=&;#?\s\"']+)=([^&;#\s\"']*)")


def redact(text: str) -> str:
    """`text` with the value of every secret query parameter replaced by `REDACTED` (its name
    compared as the server reads it: percent-decoded)."""

    def blank(m: re.Match[str]) -> str:
        if unquote_plus(m.group(2)) in SECRET_PARAMS:
            return f"{m.group(1)}{m.group(2)}={REDACTED}"
        return m.group(0)

    return _PARAM.sub(blank, text)


class RedactSecrets(logging.Filter):
    """Blanks secret query parameters in a record's message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


_REDACTOR = RedactSecrets()


def redact_uvicorn_logs() -> None:
    """Install `RedactSecrets` on uvicorn's loggers (once; later calls change nothing)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating file whose every generation is created mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


class AccessLogFile:
    """The file behind the access log: start once the server runs, stop when it stops."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.logger = logging.getLogger(LOGGER)
        self.logger.propagate = False  # its own file, not the server's log
        self.logger.setLevel(logging.INFO)
        self._file = _PrivateRotatingFile(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self._file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._handler = logging.handlers.QueueHandler(self._queue)
        self._listener = logging.handlers.QueueListener(self._queue, self._file)

    def start(self) -> None:
        redact_uvicorn_logs()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logger.addHandler(self._handler)
        self._listener.start()

    def stop(self) -> None:
        """Write what is queued, then close the file."""
        self.logger.removeHandler(self._handler)
        self._listener.stop()
        self._file.close()


class AccessLog:
    """ASGI middleware: log every HTTP request once its response has started (or failed), and
    every WebSocket once it has ended."""

    def __init__(self, app: ASGIApp, *, clock: Clock, logger_name: str = LOGGER) -> None:
        self.app = app
        self.clock = clock
        self.logger = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        # If the app fails before it answers, an HTTP client gets a 500 and a WebSocket is
        # refused (uvicorn answers its handshake with 403).
        status = 500 if scope["type"] == "http" else 403

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            elapsed_ms = (self.clock.monotonic() - started) * 1000
            actor = scope.get(ACTOR_SCOPE_KEY) or "-"
            self.logger.info(
                "%s %s %d actor=%s %.1fms client=%s",
                scope.get("method", "?") if scope["type"] == "http" else "WS",
                _printable(scope.get("path", "?")),
                status,
                _printable(str(actor)),
                elapsed_ms,
                _client(scope),
            )


def _printable(text: str, limit: int = 300) -> str:
    """The path as one safe line: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() and c != " " else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "-"
    return str(client[0])
