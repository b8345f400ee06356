"""The ipmi power driver with a scripted session in place of pyghmi: addresses, error
mapping, power switching, logout, serialisation per BMC and enforced timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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
from bollard.power.ipmi import IpmiPowerDriver, parse_address

CREDS = Credentials("admin", "ipmi-secret")


class IpmiException(Exception):
    """Shaped like pyghmi's: one argument, the message (None when the BMC never answered)."""


@dataclass
class FakeBmc:
    power_state: str = "off"
    lag: list[str] = field(default_factory=list)  # states reported after a change
    fail_with: BaseException | None = None
    hang: threading.Event | None = None
    sessions: int = 0
    open_now: int = 0
    most_open: int = 0
    closed: int = 0
    sets: list[str] = field(default_factory=list)

    def connect(self, host: str, port: int, credentials: Credentials) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        bmc = self
        bmc.sessions += 1
        bmc.open_now += 1
        bmc.most_open = max(bmc.most_open, bmc.open_now)

        class Session:
            def power(self) -> str:
                if bmc.hang is not None:
                    bmc.hang.wait(30)
                time.sleep(0.01)
                return bmc.lag.pop(0) if bmc.lag else bmc.power_state

            def set_power(self, state: str) -> None:
                bmc.sets.append(state)
                bmc.power_state = state

            def describe(self) -> str:
                return "IPMI BMC (fake)"

            def close(self) -> None:
                bmc.closed += 1
                bmc.open_now -= 1

        return Session()

    def driver(self, address: str = "10.1.1.1") -> IpmiPowerDriver:
        return IpmiPowerDriver(address, CREDS, connect=self.connect)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5", ("10.0.0.5", 623)),
        ("bmc.example", ("bmc.example", 623)),
        ("10.0.0.5:6230", ("10.0.0.5", 6230)),
        ("[fd00::5]", ("fd00::5", 623)),
        ("[fd00::5]:1623", ("fd00::5", 1623)),
        ("fd00::5", ("fd00::5", 623)),
    ],
)
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "a:b", "[fd00::5", "[fd00::5]x", "h:0", "a b", "h/x"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(PowerConfigError):
        parse_address(address)


@pytest.mark.parametrize("reported", ["on", "ON", "On"])
def test_status_is_normalised(reported: str) -> None:
    assert run(FakeBmc(power_state=reported).driver().status(5)) is PowerStatus.ON


def test_power_off_asks_once_and_waits_for_off_then_logs_out() -> None:
    bmc = FakeBmc(power_state="on")
    bmc.lag = ["on", "on", "on"]  # before the change, then twice after it
    run(bmc.driver().power_off(5))
    assert bmc.sets == ["off"]
    assert bmc.lag == []
    run(bmc.driver().power_off(5))  # idempotent: no second request
    assert bmc.sets == ["off"]
    run(bmc.driver().power_on(5))
    assert bmc.sets == ["off", "on"]
    assert bmc.closed == bmc.sessions == 3


def test_a_change_that_never_shows_is_a_timeout() -> None:
    bmc = FakeBmc(power_state="on")
    bmc.lag = ["on"] * 10_000
    with pytest.raises(PowerTimeout, match="still reports on"):
        run(bmc.driver().power_off(0.5))


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (IpmiException("Incorrect password provided"), PowerAuthError),
        (IpmiException("Unauthorized name in RAKP2"), PowerAuthError),
        (IpmiException("Insufficient privilege level"), PowerAuthError),
        (IpmiException(None), PowerUnreachable),
        (IpmiException("timeout"), PowerUnreachable),
        (IpmiException("Session no longer connected"), PowerUnreachable),
        (socket.gaierror(-2, "Name or service not known"), PowerUnreachable),
        (OSError(101, "Network is unreachable"), PowerUnreachable),
        (IpmiException("Invalid data field in request"), PowerError),
    ],
)
def test_library_errors_are_typed(failure: BaseException, expected: type[PowerError]) -> None:
    with pytest.raises(expected) as caught:
        run(FakeBmc(fail_with=failure).driver().status(5))
    assert type(caught.value) is expected
    assert "ipmi-secret" not in str(caught.value)


def test_calls_to_one_bmc_are_serialised() -> None:
    bmc = FakeBmc()

    async def go() -> None:
        await asyncio.gather(*(bmc.driver().status(5) for _ in range(6)))

    run(go())
    assert bmc.sessions == 6 and bmc.most_open == 1


def test_a_hung_call_returns_at_its_timeout_and_the_next_one_too() -> None:
    bmc = FakeBmc(hang=threading.Event())
    try:
        started = time.monotonic()
        with pytest.raises(PowerTimeout):
            run(bmc.driver("10.9.9.9").status(0.3))
        # The hung call still holds the BMC: the next one gives up at its own timeout.
        with pytest.raises(PowerTimeout):
            run(bmc.driver("10.9.9.9").status(0.3))
        assert time.monotonic() - started < 1.5
    finally:
        bmc.hang.set()


def test_credentials_are_required_and_never_shown() -> None:
    with pytest.raises(PowerConfigError):
        IpmiPowerDriver("10.0.0.5", None)
    assert "ipmi-secret" not in repr(IpmiPowerDriver("10.0.0.5", CREDS))
