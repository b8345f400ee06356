"""What the fleet asks of the server's REST API: an async client with a deadline on every call.

Operations that start a task (create, start, stop, migrate) return the task; ``run_task``
starts one and long-polls ``/tasks/{id}/wait`` until it ends or its deadline passes.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx

API = "/api/v1"
ENDED = frozenset({"succeeded", "failed", "rolled_back", "needs_attention"})
# One long poll holds the request at most this long on the server (its maximum is 60 s).
POLL_CHUNK = 30.0


class FleetApiError(Exception):
    """The server refused a request or could not be reached; ``code`` says which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)
        self.status = status
        self.code = code
        self.message = message


class FleetApi:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        connections: int = 200,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: how an https server is verified (and the client certificate shown)."""
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/") + API,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=limits,
            verify=tls or True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = await self._http.request(method, path, json=json, params=params, **extra)
        except httpx.HTTPError as exc:
            raise FleetApiError(0, "unreachable", f"{method} {path}: {exc!r}") from None
        if response.status_code >= 400:
            code, message = "http", response.text[:300]
            try:
                error = response.json().get("error") or {}
                code = str(error.get("code") or code)
                message = str(error.get("message") or message)
            except (ValueError, AttributeError):
                pass
            raise FleetApiError(response.status_code, code, message)
        return response.json()

    async def enroll(self, node: str) -> str:
        """Enroll ``node``; its agent token."""
        answer = await self.call("POST", "/nodes", json={"name": node})
        return str(answer["token"])

    async def node_names(self) -> set[str]:
        names: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = await self.call("GET", "/nodes", params=params)
            names.update(item["name"] for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return names

    async def vms(self) -> list[dict[str, Any]]:
        """Every VM, page by page."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = await self.call("GET", "/vms", params=params)
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    async def create_vm(
        self, name: str, node: str, vcpus: int, memory_mb: int, *, start: bool
    ) -> dict[str, Any]:
        body = {"name": name, "node": node, "vcpus": vcpus, "memory_mb": memory_mb}
        answer = await self.call("POST", "/vms", json={**body, "start": start})
        return dict(answer["task"])

    async def create_vms(
        self, name: str, count: int, node: str, vcpus: int, memory_mb: int, *, start: bool
    ) -> list[tuple[str, str]]:
        """NAME-1 .. NAME-COUNT in one request (POST /vms/batch): (VM name, task id) each."""
        body = {"name": name, "count": count, "node": node, "vcpus": vcpus,
                "memory_mb": memory_mb, "start": start}  # fmt: skip
        answer = await self.call("POST", "/vms/batch", json=body)
        return [(str(item["vm"]["name"]), str(item["task"]["id"])) for item in answer["items"]]

    async def vm_op(self, name: str, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``op``: start, stop, shutdown, restart, migrate; the task it started."""
        answer = await self.call("POST", f"/vms/{name}/{op}", json=body or {})
        return dict(answer["task"])

    async def wait_task(self, task_id: str, timeout: float) -> dict[str, Any]:
        """The task once it has ended; ``FleetApiError`` code "timeout" past ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FleetApiError(0, "timeout", f"task {task_id} still running after {timeout}s")
            chunk = min(POLL_CHUNK, max(0.1, remaining))
            task: dict[str, Any] = await self.call(
                "GET", f"/tasks/{task_id}/wait", params={"timeout": chunk}, timeout=chunk + 30
            )
            if task.get("state") in ENDED:
                return task
