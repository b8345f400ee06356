"""HTTP client of the REST API, as the CLI uses it.

Where the server is: ``BOLLARD_URL`` and ``BOLLARD_TOKEN`` (or ``BOLLARD_TOKEN_FILE``) from
the environment, else the context file `bollard up` wrote (its token is read from the
context's token file, never copied). An https server is verified with a CA file
(``BOLLARD_CA_FILE``, else the context's), never without one; ``BOLLARD_CLIENT_CERT`` and
``BOLLARD_CLIENT_KEY`` (else the context's) are shown to servers that ask for a client
certificate. Every failure is raised as a :class:`CliError` whose message fits on one line;
the root command turns it into ``error: ...`` on stderr.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from bollard.cli.context import context_path, load_context

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
        tls: TlsFiles | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.has_token = bool(token)
        self.tls = tls or TlsFiles()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport if transport is not None else transport_override,
            verify=ssl_context(self.base_url, self.tls) or _no_ca(),
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
            raise Unreachable(transport_problem(exc, self.base_url, self.tls)) from exc
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
        unreachable: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following ``next_cursor``; at most ``limit`` items.

        An API server's gathered pages also name the cells that did not answer
        (``unreachable``: [{"cell", "error"}]): ``unreachable``, if given, gets each of
        them (cell -> why, the first page's why for a cell named on several pages)."""
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
            if unreachable is not None:
                for cell, why in unreachable_cells(page).items():
                    unreachable.setdefault(cell, why)
            if limit is not None and len(items) >= limit:
                return items[:limit]
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                return items
            if cursor in seen:
                raise CliError(f"the server repeated list cursor {cursor!r} for {path}")
            seen.add(cursor)


def unreachable_cells(page: Mapping[str, Any]) -> dict[str, str]:
    """Cell -> why, for each cell an API server's page (or answer) says did not answer
    (its ``unreachable``: [{"cell", "error"}]); empty from a plain server."""
    entries = page.get("unreachable")
    return {
        str(entry["cell"]): str(entry.get("error") or "")
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and entry.get("cell")
    }


# TLS: how the CLI verifies an https server, and the certificate it shows when asked for one.
SYSTEM_CA = "system"  # BOLLARD_CA_FILE=system: the operating system's trust store
CA_ENV, CERT_ENV, KEY_ENV = "BOLLARD_CA_FILE", "BOLLARD_CLIENT_CERT", "BOLLARD_CLIENT_KEY"
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
# OpenSSL's reasons when the peer answered a TLS handshake with something that is not TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL", "HTTP_REQUEST")  # fmt: skip


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str | None = None  # PEM file of the CA that signed the server's certificate
    client_cert: str | None = None
    client_key: str | None = None


def _no_ca() -> ssl.SSLContext:
    """The TLS context of a client of an http server: one that trusts no CA. Its requests
    all go to that server's paths (and redirects are not followed), so it never makes a TLS
    connection; were it to, it would refuse the server. (httpx's default context would read
    the whole certifi bundle first: a sixth of a simple read's start-up, issue 24.)"""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def ssl_context(url: str, tls: TlsFiles) -> ssl.SSLContext | None:
    """None for an http URL; for https, a context that verifies the server with ``tls``'s
    CA (never without one) and presents its client certificate, if any."""
    if urlsplit(url).scheme != "https":
        if tls.ca_file or tls.client_cert:
            raise CliError(
                f"a CA or client certificate is set, but {url} is plain http: use https://"
                f" (or unset {CA_ENV}, {CERT_ENV} and {KEY_ENV})"
            )
        return None
    if not tls.ca_file:
        raise CliError(
            f"an https URL needs a CA: set {CA_ENV} to the CA file that signed the server's"
            f" certificate ({url}), or to `{SYSTEM_CA}` for the system's trust store"
        )
    where = f"the CA file {tls.ca_file}"
    try:
        if tls.ca_file == SYSTEM_CA:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=tls.ca_file)
    except FileNotFoundError:
        raise CliError(f"{where} does not exist (set {CA_ENV}, or run `bollard up`)") from None
    except ssl.SSLError:
        raise CliError(f"{where} holds no PEM certificate") from None
    except OSError as exc:
        raise CliError(f"cannot read {where}: {exc.strerror or exc}") from None
    if tls.client_cert or tls.client_key:
        if not (tls.client_cert and tls.client_key):
            raise CliError(f"a client certificate needs both {CERT_ENV} and {KEY_ENV}")
        try:
            context.load_cert_chain(tls.client_cert, tls.client_key)
        except (OSError, ValueError) as exc:
            why = key_problem(exc)
            raise CliError(
                f"cannot load the client certificate {tls.client_cert} with key"
                f" {tls.client_key}: {why}"
            ) from None
    return context


def key_problem(exc: OSError | ValueError) -> str:
    """Why a certificate and key could not be loaded, for people."""
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key does not belong to the certificate"
        return f"not a PEM certificate and key ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(str(exc))


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _other_scheme(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(scheme="http" if parts.scheme == "https" else "https").geturl()


def transport_problem(exc: httpx.TransportError, url: str, tls: TlsFiles) -> str:
    """One line saying why no answer came from ``url``: TLS trust, wrong scheme, unknown
    host, refused, ..."""
    tls_error = _cause(exc, ssl.SSLError)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        why = tls_error.verify_message or tls_error.reason or "verification failed"
        if tls_error.verify_code == _HOSTNAME_MISMATCH:
            return f"the server's certificate does not name the host of {url}: {why}"
        trust = "the system's trust store" if tls.ca_file == SYSTEM_CA else f"CA {tls.ca_file}"
        return f"the server's certificate is not trusted by {trust}: {why} (server {url})"
    if isinstance(tls_error, ssl.SSLError):
        reason = str(tls_error.reason or "")
        if reason in _NOT_TLS:
            other = _other_scheme(url)
            return f"the server at {url} does not speak HTTPS ({reason}); is it {other}?"
        if "CERTIFICATE_REQUIRED" in reason:
            return (
                f"the server at {url} requires a client certificate: set {CERT_ENV} and"
                f" {KEY_ENV} (`bollard up --client-certs` puts one in the context)"
            )
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
            return (
                f"the server at {url} refused the client certificate {tls.client_cert}"
                f" ({reason}): it is not from the CA the server trusts"
            )
        return f"TLS with the server at {url} failed: {one_line(str(tls_error))}"
    prefix = f"cannot reach the Bollard server at {url}"
    unknown = _cause(exc, socket.gaierror)
    if unknown is not None:
        host = urlsplit(url).hostname
        return f"{prefix}: unknown host {host!r} ({one_line(str(unknown))})"
    text = str(exc)
    if _cause(exc, ConnectionRefusedError) is not None or (
        isinstance(exc, httpx.ConnectError)
        and ("refused" in text.lower() or "Errno 111" in text or "Errno 61" in text)
    ):
        return f"{prefix}: connection refused (is it running? `bollard up` starts a local cluster)"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        if url.startswith("http:"):
            return (
                f"{prefix}: it closed the connection without answering; if it serves HTTPS,"
                f" use {_other_scheme(url)}"
            )
        if tls.client_cert:  # a server that requires client certificates drops the others
            return (
                f"the server at {url} closed the TLS connection without answering: does it"
                f" accept the client certificate {tls.client_cert} (from the CA it trusts)?"
            )
        return (
            f"the server at {url} closed the TLS connection without answering: it may require"
            f" a client certificate (set {CERT_ENV} and {KEY_ENV})"
        )
    return f"{prefix}: {one_line(text) or type(exc).__name__}"


def check_url(url: str, source: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port, else a clear error."""
    parts = urlsplit(url.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise CliError(
            f"{source} must look like https://HOST:PORT or http://HOST:PORT, got {url!r}"
        )
    return url.strip()


def error_from_response(
    response: httpx.Response, base_url: str, *, has_token: bool = True
) -> ApiError:
    """Map an error response to an :class:`ApiError` with a one-line message that says what
    was wrong: Bollard's own error message, or, for an answer that is not Bollard's (a
    redirect, a proxy's page, an unknown path), what came back and what to check."""
    status = response.status_code
    code, message = f"http-{status}", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):  # not Bollard's error envelope
        return ApiError(status, code, _not_bollard(response, base_url, body))
    code = str(err.get("code") or code)
    message = one_line(str(err.get("message") or "")) or response.reason_phrase or "error"
    if status in (404, 405) and message == response.reason_phrase:
        # The router's own answer (no route for this path or method), not an operation's.
        return ApiError(status, code, _no_route(response, base_url))
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


def _request_line(response: httpx.Response) -> str:
    try:
        return f"{response.request.method} {response.request.url.path}"
    except RuntimeError:  # a response built without its request
        return "the request"


def _no_route(response: httpx.Response, base_url: str) -> str:
    """A Bollard server that has no such path: a base URL with a path, or another version."""
    status, reason = response.status_code, response.reason_phrase
    seen = (
        f"the server at {base_url} does not serve {_request_line(response)}"
        f" (HTTP {status} {reason})"
    )
    parts = urlsplit(base_url)
    if parts.path.strip("/"):
        bare = f"{parts.scheme}://{parts.netloc}"
        return f"{seen}: give the server's address without a path, like {bare}"
    return f"{seen}: is it a server of this CLI's version?"


def _not_bollard(response: httpx.Response, base_url: str, body: Any) -> str:
    """An error answer that is not Bollard's: say what came back and what to check."""
    status, reason = response.status_code, response.reason_phrase
    check = "check the server address (BOLLARD_URL, or the context `bollard up` wrote)"
    if response.is_redirect:
        where = response.headers.get("location") or "elsewhere"
        return (
            f"the server at {base_url} redirected {_request_line(response)} to {one_line(where)}"
            f" (HTTP {status}); Bollard's API does not redirect: {check}"
        )
    kind = response.headers.get("content-type", "").partition(";")[0].strip()
    if isinstance(body, dict) and "detail" in body:
        what = f": {one_line(str(body['detail']), 120)}"
    elif kind == "text/plain" and response.text.strip():
        what = f": {one_line(response.text, 120)}"
    else:
        what = f" ({kind or 'no content type'})"
    return (
        f"the server at {base_url} answered {_request_line(response)} with HTTP {status}"
        f" {reason}, not a Bollard answer{what}; is it a Bollard server? {check}"
    )


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
    source = "--server" if server else "BOLLARD_URL" if explicit else f"the url in {context_path()}"
    url = check_url(url, source)
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


def resolve_tls(url: str) -> TlsFiles:
    """The CA and client certificate for ``url``: the environment's, else the context's (for
    the context's server only)."""
    ctx = load_context()
    mine = ctx if ctx is not None and ctx.url.rstrip("/") == url.rstrip("/") else None
    return TlsFiles(
        ca_file=os.environ.get(CA_ENV) or (mine.ca_file if mine else None),
        client_cert=os.environ.get(CERT_ENV) or (mine.client_cert if mine else None),
        client_key=os.environ.get(KEY_ENV) or (mine.client_key if mine else None),
    )


def connect(*, timeout: float = DEFAULT_TIMEOUT) -> Client:
    url, token = resolve_target()
    return Client(url, token, timeout=timeout, tls=resolve_tls(url))
