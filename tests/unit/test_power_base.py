"""bollard.power: status normalisation, credentials, timeouts, the factory, the layering."""

from __future__ import annotations

import ast
import asyncio
import threading
import time
from pathlib import Path

import pytest

from bollard.domain.errors import BollardError
from bollard.power import (
    KINDS,
    Credentials,
    PowerAuthError,
    PowerConfigError,
    PowerDriver,
    PowerError,
    PowerStatus,
    PowerTimeout,
    PowerUnreachable,
    make_driver,
    normalize_status,
)
from bollard.power.base import bounded, wait_for_status
from bollard.power.threads import run_blocking

SRC = Path(__file__).resolve().parents[2] / "src" / "bollard"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("On", PowerStatus.ON),
        ("ON", PowerStatus.ON),
        ("on", PowerStatus.ON),
        (" on\n", PowerStatus.ON),
        ("PoweringOn", PowerStatus.ON),
        ("Powering On", PowerStatus.ON),
        ("powering-on", PowerStatus.ON),
        ("PoweringOff", PowerStatus.ON),  # not off until it says so
        ("Off", PowerStatus.OFF),
        ("OFF", PowerStatus.OFF),
        ("off", PowerStatus.OFF),
        ("Powered Off", PowerStatus.OFF),
        (True, PowerStatus.ON),
        (False, PowerStatus.OFF),
    ],
)
def test_power_states_are_normalised(raw: object, expected: PowerStatus) -> None:
    assert normalize_status(raw) is expected


@pytest.mark.parametrize("raw", [None, "", "Unknown", "standby", "of", 1, 0, "offline"])
def test_unreadable_power_states_are_errors_never_off(raw: object) -> None:
    with pytest.raises(PowerError):
        normalize_status(raw)


def test_credentials_never_show_the_password() -> None:
    creds = Credentials("admin", "hunter2")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "hunter2" not in text
        assert "admin" in text


def test_errors_have_codes_and_say_whether_to_retry() -> None:
    for cls in (PowerError, PowerTimeout, PowerAuthError, PowerUnreachable, PowerConfigError):
        assert issubclass(cls, BollardError)
        assert issubclass(cls, PowerError)
    codes = {c.code for c in (PowerTimeout, PowerAuthError, PowerUnreachable, PowerConfigError)}
    assert len(codes) == 4 and PowerError.code not in codes
    assert PowerTimeout.retryable and PowerUnreachable.retryable
    assert not PowerAuthError.retryable and not PowerConfigError.retryable


def test_bounded_enforces_the_timeout() -> None:
    async def go() -> float:
        started = time.monotonic()
        with pytest.raises(PowerTimeout, match=r"within 0\.2 s"):
            await bounded(asyncio.Event().wait(), 0.2, "waiting forever")
        return time.monotonic() - started

    assert 0.15 < asyncio.run(go()) < 1.0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_timeouts_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(PowerConfigError):
        asyncio.run(bounded(asyncio.sleep(0), timeout, "x"))


def test_run_blocking_returns_at_the_timeout_even_if_the_call_hangs() -> None:
    release = threading.Event()

    async def go() -> float:
        started = time.monotonic()
        with pytest.raises(PowerTimeout):
            await run_blocking(lambda: release.wait(30), 0.2, "a hung library call")
        return time.monotonic() - started

    try:
        assert asyncio.run(go()) < 1.0  # and asyncio.run did not wait for the thread
    finally:
        release.set()


def test_run_blocking_passes_results_and_errors() -> None:
    def fail() -> None:
        raise PowerAuthError("no")

    async def go() -> None:
        assert await run_blocking(lambda: 42, 1, "answer") == 42
        with pytest.raises(PowerAuthError):
            await run_blocking(fail, 1, "failure")

    asyncio.run(go())


def test_wait_for_status_polls_until_the_state_shows() -> None:
    reads = iter([PowerStatus.ON, PowerStatus.ON, PowerStatus.OFF])

    async def read(_remaining: float) -> PowerStatus:
        return next(reads)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        await wait_for_status(read, PowerStatus.OFF, loop.time() + 5, "off", first_delay=0.001)

        async def stuck(_remaining: float) -> PowerStatus:
            return PowerStatus.ON

        with pytest.raises(PowerTimeout, match="still reports on"):
            await wait_for_status(stuck, PowerStatus.OFF, loop.time() + 0.1, "off")

    asyncio.run(go())


def test_make_driver_builds_each_kind(tmp_path: Path) -> None:
    creds = Credentials("admin", "s3cr3t-pw")
    drivers = [
        make_driver("sim", "node-1", None, fabric_dir=tmp_path),
        make_driver("ipmi", "10.0.0.5", creds),
        make_driver("redfish", "https://10.0.0.6", creds),
    ]
    assert [d.name for d in drivers] == list(KINDS)
    assert all(isinstance(d, PowerDriver) for d in drivers)
    assert all("s3cr3t-pw" not in repr(d) for d in drivers)


@pytest.mark.parametrize(
    ("kind", "address", "credentials", "fabric"),
    [
        ("telnet", "x", None, None),
        ("sim", "node-1", None, None),  # no fabric
        ("sim", "../etc", None, "fab"),
        ("sim", "", None, "fab"),
        ("ipmi", "10.0.0.5", None, None),  # no credentials
        ("ipmi", "10.0.0.5:99999", "creds", None),
        ("ipmi", "host:port", "creds", None),
        ("redfish", "https://10.0.0.6", None, None),
        ("redfish", "ftp://10.0.0.6", "creds", None),
        ("redfish", "10.0.0.6", "creds", None),
        ("redfish", "https://u:p@10.0.0.6", "creds", None),
        ("redfish", "https://10.0.0.6/other/path", "creds", None),
    ],
)
def test_make_driver_rejects_bad_configuration(
    tmp_path: Path, kind: str, address: str, credentials: str | None, fabric: str | None
) -> None:
    creds = Credentials("u", "p") if credentials else None
    with pytest.raises(PowerConfigError):
        make_driver(kind, address, creds, fabric_dir=tmp_path / fabric if fabric else None)


def test_power_imports_neither_server_nor_agent_nor_cli() -> None:
    offences = []
    for path in sorted((SRC / "power").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                forbidden = {"server", "agent", "cli", "store"}
                if parts[0] == "bollard" and len(parts) > 1 and parts[1] in forbidden:
                    offences.append(f"{path.name} imports {name}")
    assert offences == []
