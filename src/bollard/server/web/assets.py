"""Serving the console's files: `/ui/` (index.html and its modules), `/` redirects there.

The files are public: they hold no data and no secret. Everything they show comes from the
API, which asks for a token on every call. Every answer carries a Content-Security-Policy
that lets the page load only the server's own scripts and styles and connect only to the
server itself, so nothing from another origin can run in it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
UI_PATH = "/ui"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{sockets}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# A Host header as browsers send it: a name or an address, and a port.
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Always revalidate: a new version of Bollard shows its new console at once.
    (b"cache-control", b"no-cache"),
]


class ConsoleHeaders:
    """Adds `HEADERS` to every answer of the wrapped app (the console's static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        csp = csp_for(dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", csp.encode()),
                    *HEADERS,
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csp_for(host: str) -> str:
    """The policy for a page served as `host`: connections to the server itself only, the
    graphical console's WebSocket (ws/wss, which not every browser counts as 'self') too."""
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    return CSP.format(sockets=sockets)


def mount_console(app: FastAPI, static_dir: Path = STATIC_DIR) -> None:
    """Serve the console at /ui/ and send / and /ui there."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/", status_code=307)

    @app.get(UI_PATH, include_in_schema=False)
    async def ui() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/", status_code=307)

    app.mount(UI_PATH, ConsoleHeaders(StaticFiles(directory=static_dir, html=True)), name="console")
