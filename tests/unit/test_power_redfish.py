"""The redfish power driver against a scripted Redfish service (httpx.MockTransport): the
spellings and shapes real BMCs use, which sushy's emulator does not all show."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bollard.power import (
    Credentials,
    PowerAuthError,
    PowerConfigError,
    PowerError,
    PowerStatus,
    PowerTimeout,
    PowerUnreachable,
)
from bollard.power.redfish import RedfishPowerDriver

CREDS = Credentials("root", "calvin-secret")
BASE = "https://bmc.test"


@dataclass
class FakeService:
    systems: dict[str, str] = field(default_factory=lambda: {"1": "On"})  # id -> PowerState
    allowed: list[str] | None = None
    pending: list[str] = field(default_factory=list)  # states shown before a reset lands
    resets: list[tuple[str, str]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    status_code: int | None = None  # answer every request with this, if set

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status_code is not None:
            return httpx.Response(self.status_code, json={"error": {"message": "busy"}})
        expected = "Basic " + base64.b64encode(b"root:calvin-secret").decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, json={"error": {"message": "bad auth"}})
        path = request.url.path.rstrip("/")
        if path == "/redfish/v1/Systems":
            members = [{"@odata.id": f"/redfish/v1/Systems/{s}"} for s in self.systems]
            return httpx.Response(200, json={"Members": members})
        for system, state in self.systems.items():
            base = f"/redfish/v1/Systems/{system}"
            if path == base and request.method == "GET":
                shown = self.pending.pop(0) if self.pending else state
                action: dict[str, Any] = {"target": f"{base}/Actions/ComputerSystem.Reset"}
                if self.allowed is not None:
                    action["ResetType@Redfish.AllowableValues"] = self.allowed
                doc = {
                    "Id": system,
                    "Name": "Server",
                    "Manufacturer": "Acme",
                    "Model": "R1",
                    "PowerState": shown,
                    "Actions": {"#ComputerSystem.Reset": action},
                }
                return httpx.Response(200, json=doc)
            if path == f"{base}/Actions/ComputerSystem.Reset" and request.method == "POST":
                reset = json.loads(request.content)["ResetType"]
                self.resets.append((system, reset))
                self.systems[system] = "Off" if reset == "ForceOff" else "On"
                return httpx.Response(204)
        return httpx.Response(404, json={"error": {"message": f"no {path}"}})

    def driver(self, address: str = BASE, creds: Credentials = CREDS, **kw: Any) -> Any:
        transport = httpx.MockTransport(self.handler)
        return RedfishPowerDriver(address, creds, transport=transport, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("shown", "expected"),
    [("ON", PowerStatus.ON), ("on", PowerStatus.ON), ("OFF", PowerStatus.OFF),
     ("PoweringOn", PowerStatus.ON), ("PoweringOff", PowerStatus.ON)],
)  # fmt: skip
def test_power_state_spellings_are_normalised(shown: str, expected: PowerStatus) -> None:
    service = FakeService(systems={"1": shown})
    assert run(service.driver().status(5)) is expected


def test_the_only_system_is_discovered_and_remembered() -> None:
    service = FakeService(systems={"abc": "Off"})
    driver = service.driver()
    assert run(driver.status(5)) is PowerStatus.OFF
    assert run(driver.status(5)) is PowerStatus.OFF
    paths = [r.url.path for r in service.requests]
    assert paths.count("/redfish/v1/Systems") == 1


def test_several_systems_need_one_named() -> None:
    service = FakeService(systems={"a": "On", "b": "Off"})
    with pytest.raises(PowerConfigError, match="2 systems"):
        run(service.driver().status(5))
    assert run(service.driver(system="b").status(5)) is PowerStatus.OFF
    assert run(service.driver(f"{BASE}/redfish/v1/Systems/a").status(5)) is PowerStatus.ON
    with pytest.raises(PowerConfigError):
        service.driver(f"{BASE}/redfish/v1/Systems/a", system="b")


def test_power_off_posts_force_off_and_waits_until_it_reads_off() -> None:
    service = FakeService()
    service.pending = ["On", "PoweringOff", "PoweringOff"]  # first read, then the lag
    run(service.driver().power_off(5))
    assert service.resets == [("1", "ForceOff")]
    assert service.pending == []  # it kept reading until Off showed
    run(service.driver().power_off(5))  # already off: no second reset
    assert service.resets == [("1", "ForceOff")]
    run(service.driver().power_on(5))
    assert service.resets[-1] == ("1", "On")


def test_a_reset_that_never_shows_is_a_timeout() -> None:
    service = FakeService()
    service.pending = ["On"] * 1000  # the BMC accepts the reset but keeps reporting On
    with pytest.raises(PowerTimeout):
        run(service.driver().power_off(0.5))


def test_a_reset_type_the_system_does_not_allow_is_refused() -> None:
    service = FakeService(allowed=["On", "GracefulShutdown"])
    with pytest.raises(PowerError, match="ForceOff"):
        run(service.driver().power_off(5))
    assert service.resets == []


def test_wrong_credentials_and_http_errors_are_typed() -> None:
    service = FakeService()
    with pytest.raises(PowerAuthError) as caught:
        run(service.driver(creds=Credentials("root", "wrong-pw")).status(5))
    assert "wrong-pw" not in str(caught.value)
    service.status_code = 503
    with pytest.raises(PowerUnreachable):
        run(service.driver().status(5))
    service.status_code = 500
    with pytest.raises(PowerError, match="HTTP 500: busy"):
        run(service.driver().status(5))


def test_test_describes_the_system() -> None:
    description = run(FakeService(systems={"1": "Off"}).driver().test(5))
    assert description == "Redfish Acme R1 system Server at https://bmc.test: power off"


def test_tls_is_verified_unless_turned_off_explicitly() -> None:
    assert RedfishPowerDriver(BASE, CREDS).verify_tls is True
    assert RedfishPowerDriver(BASE, CREDS, verify_tls=False).verify_tls is False


def test_transport_failures_are_typed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    refusing = RedfishPowerDriver(BASE, CREDS, transport=httpx.MockTransport(refuse))
    with pytest.raises(PowerUnreachable):
        run(refusing.status(5))
    timing_out = RedfishPowerDriver(BASE, CREDS, transport=httpx.MockTransport(slow))
    with pytest.raises(PowerTimeout):
        run(timing_out.status(5))
