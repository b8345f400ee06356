"""Every error leaves the API as {"error": {"code", "message"}} with the right status, and
its message is one line for people: validation errors are rephrased from the validation
library's wording, keyed on the kind of error and the field."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bollard.domain.errors import BollardError
from bollard.domain.models import NIC_ATTACHMENT
from bollard.server.api.params import NAME_PATTERN

log = logging.getLogger(__name__)

# What a pattern allows, in words (a pattern not listed: "has characters not allowed").
PATTERN_WORDS = {
    NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
    NIC_ATTACHMENT: "use letters, digits, '.', '_', ':' and '-'",
}

# The status of an HTTP error that is not one of ours (routing, body reading, limits).
HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
}

_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
_KINDS = {
    "missing": "required",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "string_unicode": "must be text",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "extra_forbidden": "is not a field of this request",
}
_SECTIONS = ("body", "query", "path", "header", "cookie")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": _encodable(message)}}


def _encodable(text: str) -> str:
    """Text a JSON answer can carry, whatever a caller sent (lone surrogates escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def field_name(loc: Sequence[Any]) -> str:
    """`body.disks.0.size_mb` as people write it: `disks[0].size_mb`; the whole body:
    `request body`."""
    name = ""
    for part in loc[1:] if loc and loc[0] in _SECTIONS else loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    if name:
        return name
    return "request body" if loc and loc[0] == "body" else "request"


def _shown(value: object) -> str | None:
    """A given number, to repeat in the message (never text: it may be a secret)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    text = str(value)
    if isinstance(value, str) and not text.lstrip("+-").replace(".", "", 1).isdigit():
        return None
    return text if len(text) <= 40 else None


def _number(limit: object) -> str:
    """60.0 as 60; other limits as they are."""
    if isinstance(limit, float) and limit.is_integer():
        return str(int(limit))
    return str(limit)


def _finite(value: object) -> bool:
    """False for NaN and the infinities (as numbers or as text), which no bound admits."""
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return True  # not a number at all: said otherwise


def reason(err: Mapping[str, Any]) -> str:
    """Why a value was refused, for people (the library's own phrasing only as a last
    resort, and then without its prefixes)."""
    kind = str(err.get("type", ""))
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if kind in _KINDS:
        return _KINDS[kind]
    if kind in _BOUNDS:
        if not _finite(err.get("input")):
            return "must be a finite number"
        words, key = _BOUNDS[kind]
        given = _shown(err.get("input"))
        return f"must be {words} {_number(ctx.get(key))}" + (f" (not {given})" if given else "")
    if kind == "string_pattern_mismatch":
        return PATTERN_WORDS.get(str(ctx.get("pattern")), "has characters that are not allowed")
    if kind in ("string_too_short", "too_short"):
        least = ctx.get("min_length")
        what = "characters" if kind == "string_too_short" else "items"
        return "must not be empty" if least == 1 else f"must have at least {least} {what}"
    if kind in ("string_too_long", "too_long"):
        what = "characters" if kind == "string_too_long" else "items"
        return f"must have at most {ctx.get('max_length')} {what}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "json_invalid":
        return "is not valid JSON"
    message = str(err.get("msg") or kind)
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message.replace("Input should be", "must be")
    return message[:1].lower() + message[1:]


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """All of a request's validation errors on one line, each naming its field (once)."""
    parts: list[str] = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            loc = loc[:1]  # the position in the text, not a field
        part = " ".join(f"{field_name(loc)}: {reason(err)}".split())
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or "the request is not valid"


def _http_message(request: Request, exc: StarletteHTTPException) -> str:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return "the request body could not be read: send JSON, encoded in UTF-8"
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"no such API path: {request.url.path}"
    if exc.status_code == 405 and exc.detail == "Method Not Allowed":
        return f"{request.method} is not allowed on {request.url.path}"
    return str(exc.detail)


def install(app: FastAPI) -> None:
    @app.exception_handler(BollardError)
    async def bollard_error(_: Request, exc: BollardError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid-input", describe(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http-error")
        return JSONResponse(
            error_body(code, _http_message(request, exc)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in the API")
        return JSONResponse(
            error_body("internal", f"internal error ({type(exc).__name__}); see the server log"),
            status_code=500,
        )
