"""HTTP client of the REST API, as the CLI uses it.

Where the server is: ``BOLLARD_URL`` and ``BOLLARD_TOKEN`` (or ``BOLLARD_TOKEN_FILE``) from
the environment, else the context file `bollard up` wrote (its token is read from the
context's token file, never copied). Every failure is raised as a :class:`CliError` whose
message fits on one line; the root command turns it into ``error: ...`` on stderr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bollard.cli.context import load_context

API = "/api/v1"
DEFAULT_TIMEOUT = 30.0
MAX_PAGE = 1000

# Tests replace this with an ``httpx.MockTransport``; None means real network I/O.
transport_override: httpx.BaseTransport | None = None


class CliError(Exception):
    """An error the CLI reports as one line, then exits non-zero."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """The server answered with an error ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class Unreachable(CliError):
    """No answer from the server: refused, timed out, DNS, TLS..."""


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Client:
    """A thin synchronous client; paths are relative to ``/api/v1``."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport if transport is not None else transport_override,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int | float] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = f"{API}{path}"
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, url, json=json, params=params, **kwargs)
        except httpx.TimeoutException as exc:
            raise Unreachable(
                f"cannot reach the Bollard server at {self.base_url}: timed out"
                f" ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the Bollard server at {self.base_url}: {_reason(exc)}"
            ) from exc
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError as exc:
                raise CliError(
                    f"the server at {self.base_url} sent a response that is not JSON"
                    f" (HTTP {response.status_code})"
                ) from exc
        raise error_from_response(response, self.base_url, has_token=self.has_token)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body if body is not None else {}, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def list_all(
        self,
        path: str,
        *,
        limit: int | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following ``next_cursor``; at most ``limit`` items."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page_size = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(items))
            query: dict[str, str | int] = dict(params or {})
            query["limit"] = page_size
            if cursor is not None:
                query["cursor"] = cursor
            page = self.get(path, params=query)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise CliError(f"unexpected answer from {self.base_url}{API}{path}: not a list")
            items.extend(page["items"])
            if limit is not None and len(items) >= limit:
                return items[:limit]
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                return items
            if cursor in seen:
                raise CliError(f"the server repeated list cursor {cursor!r} for {path}")
            seen.add(cursor)


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc)
    if isinstance(exc, httpx.ConnectError) and (
        "refused" in text.lower() or "Errno 111" in text or "Errno 61" in text
    ):
        return "connection refused (is it running? `bollard up` starts a local cluster)"
    return one_line(text) or type(exc).__name__


def error_from_response(
    response: httpx.Response, base_url: str, *, has_token: bool = True
) -> ApiError:
    """Map an error response to an :class:`ApiError` with a one-line message."""
    status = response.status_code
    code, message = f"http-{status}", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or "")
        elif "detail" in body:  # a framework-level error (unknown route, ...)
            message = str(body["detail"])
    if not message:
        message = one_line(response.text) or response.reason_phrase or "error"
    message = one_line(message)
    if status >= 500:
        message = f"server error ({code}, HTTP {status}): {message}"
    if status == 401 and not has_token:
        message = (
            f"the server at {base_url} needs a token ({message}): set BOLLARD_TOKEN, or run"
            " `bollard up` to write a context"
        )
    elif status == 401:
        message = (
            f"the server at {base_url} refused the token ({message}); check BOLLARD_TOKEN"
            " or the token file of your context"
        )
    return ApiError(status, code, message)


def resolve_target(server: str | None = None) -> tuple[str, str | None]:
    """(base URL, token): ``server`` if given, else the environment, then the context file;
    the token from the environment, else the context's (for the context's server only)."""
    ctx = load_context()
    explicit = server or os.environ.get("BOLLARD_URL")
    url = explicit or (ctx.url if ctx else None)
    if not url:
        raise CliError(
            "no Bollard server configured: start one with `bollard up`, or set BOLLARD_URL"
            " and BOLLARD_TOKEN"
        )
    token = os.environ.get("BOLLARD_TOKEN")
    if token is not None:
        return url, token.strip()
    token_file = os.environ.get("BOLLARD_TOKEN_FILE") or (
        ctx.token_file if ctx and (not explicit or ctx.url == url) else None
    )
    if not token_file:
        return url, None
    try:
        return url, Path(token_file).read_text().strip()
    except OSError as exc:
        raise CliError(
            f"cannot read the token file {token_file}: {exc.strerror or exc}"
            " (set BOLLARD_TOKEN, or run `bollard up` again)"
        ) from exc


def connect(*, timeout: float = DEFAULT_TIMEOUT) -> Client:
    url, token = resolve_target()
    return Client(url, token, timeout=timeout)
