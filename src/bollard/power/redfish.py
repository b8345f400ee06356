"""The ``redfish`` power driver: a Redfish service (DMTF) over HTTP(S), with httpx.

Address: the service's base URL, ``https://bmc.example:443``; the system is discovered from
``/redfish/v1/Systems`` when the service has exactly one, else it is named, either in the
address (``https://bmc/redfish/v1/Systems/<id>``) or with ``system=``. HTTP basic auth.
TLS certificates are verified unless ``verify_tls=False`` is passed explicitly.

Power off is ``ComputerSystem.Reset`` with ResetType ForceOff (On to power on); the call
returns once the system's PowerState reads off (on), polling it within the timeout: BMCs
apply resets some seconds after accepting them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from bollard.power.base import (
    Credentials,
    PowerStatus,
    bounded,
    check_timeout,
    normalize_status,
    wait_for_status,
)
from bollard.power.errors import (
    PowerAuthError,
    PowerConfigError,
    PowerError,
    PowerTimeout,
    PowerUnreachable,
)

T = TypeVar("T")

SYSTEMS = "/redfish/v1/Systems"
RESET_ACTION = "#ComputerSystem.Reset"


class RedfishPowerDriver:
    name = "redfish"

    def __init__(
        self,
        address: str,
        credentials: Credentials | None,
        *,
        system: str | None = None,
        verify_tls: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if credentials is None:
            raise PowerConfigError("the redfish power driver needs credentials")
        parts = urlsplit(address.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PowerConfigError(
                f"bad Redfish address {address!r}: expected http(s)://host[:port][/path]"
            )
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise PowerConfigError(f"bad Redfish address {address!r}: no query or user part")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/")
        if system is not None:
            if path:
                raise PowerConfigError("give the Redfish system in the address or as system=")
            path = system if system.startswith("/") else f"{SYSTEMS}/{quote(system, safe='')}"
        if path and not path.startswith(SYSTEMS + "/"):
            raise PowerConfigError(
                f"bad Redfish address {address!r}: a path must be {SYSTEMS}/<id>"
            )
        self._path: str | None = path or None
        self._auth = httpx.BasicAuth(credentials.username, credentials.password)
        self._username = credentials.username
        self.verify_tls = verify_tls
        self._transport = transport

    def __repr__(self) -> str:
        return f"RedfishPowerDriver({self.origin!r}, user={self._username!r})"

    # plumbing

    async def _op(
        self, what: str, timeout: float, fn: Callable[[httpx.AsyncClient, float], Awaitable[T]]
    ) -> T:
        """Run ``fn(client, deadline)`` with a fresh client, within ``timeout``."""
        timeout = check_timeout(timeout)
        where = f"Redfish {what} on {self.origin}"
        deadline = asyncio.get_running_loop().time() + timeout

        async def run() -> T:
            try:
                async with httpx.AsyncClient(
                    base_url=self.origin,
                    auth=self._auth,
                    verify=self.verify_tls,
                    timeout=httpx.Timeout(timeout),
                    transport=self._transport,
                    headers={"Accept": "application/json", "OData-Version": "4.0"},
                    follow_redirects=False,
                    trust_env=False,
                ) as client:
                    return await fn(client, deadline)
            except PowerError as exc:
                raise type(exc)(f"{where}: {exc.message}") from None
            except httpx.TimeoutException:
                raise PowerTimeout(f"{where}: no answer within {timeout:g} s") from None
            except httpx.ConnectError as exc:
                raise PowerUnreachable(f"{where}: cannot connect ({exc})") from None
            except httpx.HTTPError as exc:
                raise PowerUnreachable(f"{where}: {type(exc).__name__}: {exc}") from None

        return await bounded(run(), timeout, where)

    async def _get(self, client: httpx.AsyncClient, path: str) -> dict[str, Any]:
        response = await client.get(path)
        _check(response, f"GET {path}")
        try:
            body = response.json()
        except ValueError:
            raise PowerError(f"GET {path}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise PowerError(f"GET {path}: the answer is not a JSON object")
        return body

    async def _system_path(self, client: httpx.AsyncClient) -> str:
        if self._path is not None:
            return self._path
        collection = await self._get(client, SYSTEMS)
        members = [
            m.get("@odata.id")
            for m in collection.get("Members", [])
            if isinstance(m, dict) and isinstance(m.get("@odata.id"), str)
        ]
        if len(members) != 1:
            raise PowerConfigError(
                f"the service has {len(members)} systems; name one in the address "
                f"({SYSTEMS}/<id>) or with system="
            )
        self._path = str(members[0]).rstrip("/")
        return self._path

    async def _system(self, client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
        path = await self._system_path(client)
        return path, await self._get(client, path)

    async def _read_status(self, client: httpx.AsyncClient) -> PowerStatus:
        _path, doc = await self._system(client)
        return normalize_status(doc.get("PowerState"))

    async def _switch(
        self, client: httpx.AsyncClient, deadline: float, want: PowerStatus, reset_type: str
    ) -> None:
        path, doc = await self._system(client)
        if normalize_status(doc.get("PowerState")) == want:
            return
        action = doc.get("Actions", {}).get(RESET_ACTION, {})
        target = action.get("target") if isinstance(action, dict) else None
        if not isinstance(target, str) or not target:
            target = f"{path}/Actions/ComputerSystem.Reset"
        allowed = action.get("ResetType@Redfish.AllowableValues") if action else None
        if isinstance(allowed, list) and allowed and reset_type not in allowed:
            raise PowerError(f"the system does not allow ResetType {reset_type} ({allowed})")
        response = await client.post(target, json={"ResetType": reset_type})
        _check(response, f"{reset_type} reset")

        async def read(_remaining: float) -> PowerStatus:
            return await self._read_status(client)

        await wait_for_status(read, want, deadline, f"{reset_type} reset")

    # the interface

    async def status(self, timeout: float) -> PowerStatus:
        return await self._op("status", timeout, lambda c, _d: self._read_status(c))

    async def power_off(self, timeout: float) -> None:
        await self._op(
            "power off", timeout, lambda c, d: self._switch(c, d, PowerStatus.OFF, "ForceOff")
        )

    async def power_on(self, timeout: float) -> None:
        await self._op("power on", timeout, lambda c, d: self._switch(c, d, PowerStatus.ON, "On"))

    async def test(self, timeout: float) -> str:
        async def probe(client: httpx.AsyncClient, _deadline: float) -> str:
            path, doc = await self._system(client)
            power = normalize_status(doc.get("PowerState"))
            model = " ".join(
                str(doc[k]) for k in ("Manufacturer", "Model") if isinstance(doc.get(k), str)
            )
            name = doc.get("Name") or doc.get("Id") or path.rsplit("/", 1)[-1]
            what = f"{model} system {name!s}" if model else f"system {name!s}"
            return f"Redfish {what} at {self.origin}: power {power.value}"

        return await self._op("test", timeout, probe)


def _check(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 300:
        return
    if status in (401, 403):
        raise PowerAuthError(f"{what}: the service refused the credentials (HTTP {status})")
    detail = _error_message(response)
    if status == 404:
        raise PowerError(f"{what}: not found (HTTP 404){detail}")
    if status in (502, 503, 504):
        raise PowerUnreachable(f"{what}: the service is unavailable (HTTP {status}){detail}")
    raise PowerError(f"{what}: HTTP {status}{detail}")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        return ""
    return f": {message[:200]}"
