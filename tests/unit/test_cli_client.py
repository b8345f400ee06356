"""The CLI's HTTP client: error mapping, unreachable servers, pagination, configuration."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bollard.cli import client as client_mod
from bollard.cli.client import ApiError, Client, CliError, Unreachable, resolve_target
from bollard.cli.context import Context, save_context


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(handler: Any, token: str | None = "secret") -> Client:
    return Client("http://bollard.test", token, transport=httpx.MockTransport(handler))


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def test_sends_bearer_token_and_decodes_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"version": "1"})

    with _client(handler) as c:
        assert c.get("/status") == {"version": "1"}
    assert seen[0].url.path == "/api/v1/status"
    assert seen[0].headers["authorization"] == "Bearer secret"


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (404, "not-found", "vm 'ghost' not found"),
        (409, "already-exists", "vm 'web1' already exists"),
        (422, "invalid-input", "memory_mb must be positive"),
    ],
)
def test_api_errors_keep_code_status_and_message(status: int, code: str, message: str) -> None:
    with _client(lambda r: _error(status, code, message)) as c, pytest.raises(ApiError) as info:
        c.get("/vms/ghost")
    assert (info.value.status, info.value.code, info.value.message) == (status, code, message)


def test_401_says_the_token_was_refused() -> None:
    with (
        _client(lambda r: _error(401, "unauthorized", "bad token")) as c,
        pytest.raises(ApiError) as info,
    ):
        c.get("/status")
    assert info.value.status == 401
    assert "refused the token" in info.value.message
    assert "BOLLARD_TOKEN" in info.value.message


def test_401_without_any_token_says_one_is_needed() -> None:
    with (
        _client(lambda r: _error(401, "unauthorized", "missing token"), token=None) as c,
        pytest.raises(ApiError) as info,
    ):
        c.get("/status")
    assert "needs a token" in info.value.message


def test_non_json_error_body_becomes_one_line() -> None:
    body = "<html>\n<body>Bad\nGateway</body>\n</html>"
    with (
        _client(lambda r: httpx.Response(502, text=body)) as c,
        pytest.raises(ApiError) as info,
    ):
        c.get("/status")
    assert "\n" not in info.value.message
    assert "HTTP 502" in info.value.message


def test_connection_refused_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with Client(url, "t", timeout=5) as c, pytest.raises(Unreachable) as info:
        c.get("/status")
    assert info.value.message.startswith(f"cannot reach the Bollard server at {url}")
    assert "refused" in info.value.message
    assert "\n" not in info.value.message


def test_timeout_is_reported_as_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    with _client(handler) as c, pytest.raises(Unreachable) as info:
        c.get("/status")
    assert "timed out" in info.value.message


def _paged(items: list[int], seen: list[dict[str, str]]) -> Any:
    """A list endpoint over ``items`` whose cursor is the next index."""

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        start = int(params.get("cursor", "0"))
        limit = min(int(params.get("limit", "100")), 3)  # the server caps pages at 3
        page = items[start : start + limit]
        more = start + limit < len(items)
        body = {
            "items": [{"n": i} for i in page],
            "next_cursor": str(start + limit) if more else None,
            "total": len(items),
        }
        return httpx.Response(200, json=body)

    return handler


def test_list_all_follows_next_cursor_to_the_end() -> None:
    seen: list[dict[str, str]] = []
    with _client(_paged(list(range(8)), seen)) as c:
        items = c.list_all("/vms")
    assert [i["n"] for i in items] == list(range(8))
    assert [s.get("cursor") for s in seen] == [None, "3", "6"]


def test_list_all_stops_at_the_limit() -> None:
    seen: list[dict[str, str]] = []
    with _client(_paged(list(range(20)), seen)) as c:
        items = c.list_all("/vms", limit=5)
    assert [i["n"] for i in items] == [0, 1, 2, 3, 4]
    assert len(seen) == 2
    assert seen[0]["limit"] == "5" and seen[1]["limit"] == "2"


def test_list_all_passes_filters_and_detects_a_cursor_loop() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json={"items": [{"n": 1}], "next_cursor": "same", "total": 9})

    with _client(handler) as c, pytest.raises(CliError, match="repeated"):
        c.list_all("/tasks", params={"vm": "web1"})
    assert all(s["vm"] == "web1" for s in seen)
    assert len(seen) == 2


def test_target_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("BOLLARD_URL", "http://env:1")
    monkeypatch.setenv("BOLLARD_TOKEN", " tok\n")
    assert resolve_target() == ("http://env:1", "tok")


def test_target_from_context_reads_the_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("BOLLARD_URL", raising=False)
    monkeypatch.delenv("BOLLARD_TOKEN", raising=False)
    monkeypatch.delenv("BOLLARD_TOKEN_FILE", raising=False)
    token_file = tmp_path / "admin.token"
    token_file.write_text("from-file\n")
    save_context(Context(url="http://ctx:2", data_dir=str(tmp_path), token_file=str(token_file)))
    assert json.loads((tmp_path / "context.json").read_text())["url"] == "http://ctx:2"
    assert resolve_target() == ("http://ctx:2", "from-file")
    # A URL from the environment pointing elsewhere does not get the context's token.
    monkeypatch.setenv("BOLLARD_URL", "http://other:3")
    assert resolve_target() == ("http://other:3", None)


def test_missing_configuration_and_missing_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path))
    for var in ("BOLLARD_URL", "BOLLARD_TOKEN", "BOLLARD_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CliError, match="no Bollard server configured"):
        resolve_target()
    save_context(Context(url="http://ctx:2", data_dir="/x", token_file=str(tmp_path / "gone")))
    with pytest.raises(CliError, match="cannot read the token file"):
        resolve_target()


def test_transport_override_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": True}))
    monkeypatch.setattr(client_mod, "transport_override", transport)
    with Client("http://nowhere.invalid", "t") as c:
        assert c.get("/status") == {"ok": True}
