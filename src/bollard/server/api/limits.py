"""Request body limit: a body over the limit is refused with 413 before it is read.

A pure ASGI middleware. A declared `Content-Length` over the limit (or not a number) is
answered at once, without reading a byte of the body; a body sent without one (chunked) is
counted as it is received and refused as soon as it passes the limit, so no more than the
limit (plus one chunk) is ever held in memory.

The routes named in `unlimited` (`"PUT /api/v1/images/{image}/{disk}"`, as route tables name
them) take bodies of any size: theirs are streamed to disk, never held in memory (the image
spool's uploads, api/images.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 1024 * 1024  # 1 MiB


def describe(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def too_large_message(limit: int) -> str:
    return f"request body too large: the limit is {describe(limit)}"


class BodyLimit:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY, unlimited: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._unlimited: list[tuple[str, re.Pattern[str]]] = []
        for route in unlimited:
            method, path = route.split(" ", 1)
            self._unlimited.append((method, compile_path(path)[0]))

    def _is_unlimited(self, scope: Scope) -> bool:
        method, path = scope.get("method", ""), scope.get("path", "")
        return any(m == method and p.match(path) for m, p in self._unlimited)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_unlimited(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _refuse(send, self.max_bytes)
            return
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body reading: the API's error handlers answer
                    # 413 (FastAPI passes an HTTPException through as it is).
                    raise HTTPException(413, too_large_message(limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text: str = value.decode("latin-1").strip()
            return text
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": {"code": "payload-too-large", "message": too_large_message(limit)}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
