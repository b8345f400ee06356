"""Contract suite for PowerDriver, run against every driver and a real emulator of its BMC.

- ``sim``: the sim fabric (the truth is the host record in the fabric);
- ``ipmi``: pyghmi against OpenIPMI's ipmi_sim (the truth is the emulator's power file);
- ``redfish``: httpx against sushy-tools' emulator with its fake systems driver (the truth
  is the system's PowerState read with a plain HTTP client).

The emulators are started by the fixtures in tests/support/emulators.py, once per session.
After the generic contract come the sim driver's own promises: a power off stops the host's
VMs and kills its agent process (a real ``bollard agent`` subprocess), never a process that
merely reuses the agent's pid, and a power on boots the host with a new boot id.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bollard.domain.states import PowerState
from bollard.power import (
    Credentials,
    PowerAuthError,
    PowerDriver,
    PowerStatus,
    PowerTimeout,
    PowerUnreachable,
    make_driver,
)
from bollard.power.sim import SimPowerDriver
from bollard.sim import Fabric, HostPower, SimVm
from bollard.sim.models import SimAgentProcess
from bollard.sim.power import process_identity
from tests.support.emulators import (
    IpmiSim,
    SilentTcp,
    SilentUdp,
    SushyEmulator,
    free_port,
    ipmi_sim_unavailable,
    start_ipmi_sim,
    start_sushy,
    wait_for,
)

T = TypeVar("T")

ON, OFF = PowerStatus.ON, PowerStatus.OFF
TIMEOUT = 15.0  # for operations that should succeed (sushy may take ~1 s per change)
SHORT = 1.5  # for calls that cannot succeed: they must give up within this
MARGIN = 1.0  # scheduling slack allowed on top of a timeout


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Host:
    """One host of a backend in a known power state, and ways to look at it."""

    driver: PowerDriver
    truth: Callable[[], PowerStatus]  # the power state as the emulator has it (out of band)
    # The same host's driver with other credentials (None: the driver takes none).
    with_credentials: Callable[[Credentials], PowerDriver] | None


class Backend:
    kind: str

    def host(self, initial: PowerStatus) -> Host:
        raise NotImplementedError

    def unreachable(self) -> list[PowerDriver]:
        """Drivers whose address nothing answers at (no such host, closed port, ...)."""
        raise NotImplementedError

    def hung(self) -> tuple[PowerDriver, Callable[[PowerDriver], Coroutine[Any, Any, Any]]]:
        """A driver whose BMC accepts the call but never answers, and the call to make."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class SimBackend(Backend):
    kind = "sim"

    def __init__(self, tmp: Path) -> None:
        self.fabric_dir = tmp / "fabric"
        self.fabric = Fabric(self.fabric_dir)
        self._hosts = 0
        self._lock_holder: int | None = None

    def host(self, initial: PowerStatus) -> Host:
        self._hosts += 1
        node = f"node-{self._hosts}"
        sim = self.fabric.host(node)
        sim.ensure_host(4, 4096)
        if initial == OFF:
            sim.power_off()

        def truth() -> PowerStatus:
            rec = sim.record()
            assert rec is not None
            return ON if rec.power == HostPower.ON else OFF

        return Host(make_driver("sim", node, None, fabric_dir=self.fabric_dir), truth, None)

    def unreachable(self) -> list[PowerDriver]:
        self.fabric.host("node-0").ensure_host(1, 1)
        return [
            make_driver("sim", "node-1", None, fabric_dir=self.fabric_dir.parent / "nowhere"),
            make_driver("sim", "no-such-node", None, fabric_dir=self.fabric_dir),
        ]

    def hung(self) -> tuple[PowerDriver, Callable[[PowerDriver], Coroutine[Any, Any, Any]]]:
        host = self.host(ON)
        # Another process holds the fabric lock and does not let go.
        self._lock_holder = os.open(self.fabric_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_holder, fcntl.LOCK_EX)
        return host.driver, lambda d: d.power_off(SHORT)

    def close(self) -> None:
        if self._lock_holder is not None:
            os.close(self._lock_holder)


class IpmiBackend(Backend):
    kind = "ipmi"

    def __init__(self, sim: IpmiSim) -> None:
        self.sim = sim
        self._silent: SilentUdp | None = None

    def host(self, initial: PowerStatus) -> Host:
        self.sim.set_power(initial)
        return Host(
            make_driver("ipmi", self.sim.address, self.sim.credentials),
            self.sim.power,
            lambda creds: make_driver("ipmi", self.sim.address, creds),
        )

    def unreachable(self) -> list[PowerDriver]:
        creds = self.sim.credentials
        return [
            make_driver("ipmi", f"127.0.0.1:{free_port()}", creds),  # nothing listens there
            make_driver("ipmi", "no-such-bmc.invalid", creds),
        ]

    def hung(self) -> tuple[PowerDriver, Callable[[PowerDriver], Coroutine[Any, Any, Any]]]:
        self._silent = SilentUdp()
        driver = make_driver("ipmi", self._silent.address, self.sim.credentials)
        return driver, lambda d: d.status(SHORT)

    def close(self) -> None:
        if self._silent is not None:
            self._silent.close()


class RedfishBackend(Backend):
    kind = "redfish"

    def __init__(self, emulator: SushyEmulator) -> None:
        self.emulator = emulator
        self._silent: SilentTcp | None = None

    def host(self, initial: PowerStatus) -> Host:
        system = self.emulator.take_system(initial)
        url = self.emulator.system_url(system)
        return Host(
            make_driver("redfish", url, self.emulator.credentials),
            lambda: self.emulator.power(system),
            lambda creds: make_driver("redfish", url, creds),
        )

    def unreachable(self) -> list[PowerDriver]:
        creds = self.emulator.credentials
        return [
            make_driver("redfish", f"http://127.0.0.1:{free_port()}", creds),
            make_driver("redfish", "http://no-such-bmc.invalid", creds),
        ]

    def hung(self) -> tuple[PowerDriver, Callable[[PowerDriver], Coroutine[Any, Any, Any]]]:
        self._silent = SilentTcp()
        driver = make_driver("redfish", self._silent.url, self.emulator.credentials)
        return driver, lambda d: d.status(SHORT)

    def close(self) -> None:
        if self._silent is not None:
            self._silent.close()


@pytest.fixture(scope="session")
def sushy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    emulator = start_sushy(tmp_path_factory.mktemp("sushy"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def ipmi_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiSim]:
    reason = ipmi_sim_unavailable()
    if reason is not None:
        pytest.skip(reason)
    sim = start_ipmi_sim(tmp_path_factory.mktemp("ipmi"))
    yield sim
    sim.stop()


@pytest.fixture(params=["sim", "ipmi", "redfish"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen: Backend
    if request.param == "sim":
        chosen = SimBackend(tmp_path)
    elif request.param == "ipmi":
        chosen = IpmiBackend(request.getfixturevalue("ipmi_sim"))
    else:
        chosen = RedfishBackend(request.getfixturevalue("sushy"))
    yield chosen
    chosen.close()


# the contract


@pytest.mark.parametrize("initial", [ON, OFF], ids=["on", "off"])
def test_status_reports_the_power_state(backend: Backend, initial: PowerStatus) -> None:
    host = backend.host(initial)
    status = run(host.driver.status(TIMEOUT))
    assert status is initial  # a PowerStatus member, whatever the BMC's spelling
    assert host.truth() is initial


def test_power_off_then_status_reads_off(backend: Backend) -> None:
    host = backend.host(ON)
    run(host.driver.power_off(TIMEOUT))
    assert host.truth() is OFF  # returned only once the host is off
    assert run(host.driver.status(TIMEOUT)) is OFF


def test_power_on_then_status_reads_on(backend: Backend) -> None:
    host = backend.host(OFF)
    run(host.driver.power_on(TIMEOUT))
    assert host.truth() is ON
    assert run(host.driver.status(TIMEOUT)) is ON


def test_power_off_is_idempotent(backend: Backend) -> None:
    host = backend.host(ON)
    run(host.driver.power_off(TIMEOUT))
    run(host.driver.power_off(TIMEOUT))
    assert host.truth() is OFF
    already_off = backend.host(OFF)
    run(already_off.driver.power_off(TIMEOUT))
    assert already_off.truth() is OFF


def test_power_on_is_idempotent(backend: Backend) -> None:
    host = backend.host(OFF)
    run(host.driver.power_on(TIMEOUT))
    run(host.driver.power_on(TIMEOUT))
    assert host.truth() is ON
    already_on = backend.host(ON)
    run(already_on.driver.power_on(TIMEOUT))
    assert already_on.truth() is ON


@pytest.mark.parametrize("initial", [ON, OFF], ids=["on", "off"])
def test_test_describes_the_bmc_without_acting(backend: Backend, initial: PowerStatus) -> None:
    host = backend.host(initial)
    description = run(host.driver.test(TIMEOUT))
    assert isinstance(description, str)
    assert description.strip()
    assert f"power {initial.value}" in description
    assert host.truth() is initial
    assert run(host.driver.status(TIMEOUT)) is initial


def test_wrong_credentials_are_an_auth_error(backend: Backend) -> None:
    host = backend.host(ON)
    if host.with_credentials is None:
        pytest.skip(f"the {backend.kind} driver takes no credentials")
    good = backend_credentials(backend)
    wrong_password = host.with_credentials(Credentials(good.username, "not-the-password"))
    wrong_user = host.with_credentials(Credentials("intruder", good.password))
    for driver in (wrong_password, wrong_user):
        with pytest.raises(PowerAuthError):
            run(driver.status(TIMEOUT))
        with pytest.raises(PowerAuthError):
            run(driver.test(TIMEOUT))
        with pytest.raises(PowerAuthError):
            run(driver.power_off(TIMEOUT))
    assert host.truth() is ON  # nothing was switched
    # The secret is in no error message.
    with pytest.raises(PowerAuthError) as caught:
        run(wrong_password.status(TIMEOUT))
    assert "not-the-password" not in str(caught.value)
    assert "not-the-password" not in repr(wrong_password)


def backend_credentials(backend: Backend) -> Credentials:
    if isinstance(backend, IpmiBackend):
        return backend.sim.credentials
    assert isinstance(backend, RedfishBackend)
    return backend.emulator.credentials


def test_unreachable_address_fails_within_the_timeout(backend: Backend) -> None:
    for driver in backend.unreachable():
        for call in (driver.status, driver.power_off, driver.test):
            started = time.monotonic()
            with pytest.raises((PowerUnreachable, PowerTimeout)):
                run(call(SHORT))
            assert time.monotonic() - started < SHORT + MARGIN, f"{driver!r} {call.__name__}"


def test_a_bmc_that_never_answers_times_out(backend: Backend) -> None:
    driver, call = backend.hung()
    started = time.monotonic()
    with pytest.raises(PowerTimeout):
        run(call(driver))
    elapsed = time.monotonic() - started
    assert elapsed < SHORT + MARGIN
    assert elapsed >= SHORT * 0.5  # it did wait, rather than fail at once


# the sim driver's own promises


def _start_agent(tmp_path: Path, fabric_dir: Path, node: str) -> subprocess.Popen[bytes]:
    """A real agent process of ``node``, dialling a server that is not there (it retries)."""
    token = tmp_path / "token"
    token.write_text("not-a-real-token\n")
    log = (tmp_path / f"agent-{node}.log").open("wb")
    argv = [sys.executable, "-m", "bollard", "agent", "--server",
            f"http://127.0.0.1:{free_port()}", "--node", node, "--token-file", str(token),
            "--state-dir", str(tmp_path / f"state-{node}"), "--driver", "sim",
            "--fabric-dir", str(fabric_dir), "--vcpus", "4", "--memory-mb", "4096"]  # fmt: skip
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def test_sim_power_off_stops_the_vms_and_kills_the_agent(tmp_path: Path) -> None:
    fabric_dir = tmp_path / "fabric"
    host = Fabric(fabric_dir).host("node-1")
    host.ensure_host(4, 4096)
    for i, power in enumerate([PowerState.RUNNING, PowerState.RUNNING, PowerState.STOPPED]):
        host.put_vm(SimVm(uuid=f"vm-{i}", name=f"vm{i}", vcpus=1, memory_mb=256, power=power))
    agent = _start_agent(tmp_path, fabric_dir, "node-1")
    try:
        wait_for(
            lambda: (
                (rec := host.record()) is not None
                and rec.agent is not None
                and rec.agent.pid == agent.pid
            ),
            "the agent to record its pid",
            time.monotonic() + 20,
        )
        assert agent.poll() is None
        driver = SimPowerDriver(fabric_dir, "node-1")
        done = run(driver.power_off_report(TIMEOUT))
        assert done.killed is not None and done.killed.pid == agent.pid
        assert agent.wait(5) == -signal.SIGKILL
        assert {vm.uuid: vm.power for vm in host.list_vms()} == {
            f"vm-{i}": PowerState.STOPPED for i in range(3)
        }
        rec = host.record()
        assert rec is not None and rec.power == HostPower.OFF and rec.agent is None
        assert run(driver.status(TIMEOUT)) is OFF
        again = run(driver.power_off_report(TIMEOUT))  # idempotent, and kills nothing
        assert (again.was_on, again.killed) == (False, None)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait(5)


def test_sim_power_on_boots_with_a_new_boot_id(tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("node-1")
    first = host.ensure_host(4, 4096).boot_id
    driver = make_driver("sim", "node-1", None, fabric_dir=tmp_path)
    run(driver.power_on(TIMEOUT))  # already on: nothing changes
    assert (rec := host.record()) is not None and rec.boot_id == first
    run(driver.power_off(TIMEOUT))
    run(driver.power_on(TIMEOUT))
    rec = host.record()
    assert rec is not None and rec.power == HostPower.ON and rec.boot_id != first
    assert run(driver.status(TIMEOUT)) is ON


@pytest.mark.parametrize("change", ["start_ticks", "cmdline"])
def test_sim_power_off_never_kills_a_process_that_reuses_the_pid(
    tmp_path: Path, change: str
) -> None:
    host = Fabric(tmp_path).host("node-1")
    host.ensure_host(4, 4096)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_for(  # until it runs python, not the forked copy of pytest
            lambda: (i := process_identity(bystander.pid)) is not None and "-c" in i.cmdline,
            "the bystander to exec",
            time.monotonic() + 10,
        )
        ident = process_identity(bystander.pid)
        assert ident is not None
        from bollard.sim.power import kernel_boot_id

        recorded = SimAgentProcess(
            pid=bystander.pid,
            start_ticks=ident.start_ticks - 1 if change == "start_ticks" else ident.start_ticks,
            cmdline=["bollard", "agent"] if change == "cmdline" else list(ident.cmdline),
            kernel_boot_id=kernel_boot_id(),
        )
        host.set_agent(recorded)
        done = run(SimPowerDriver(tmp_path, "node-1").power_off_report(TIMEOUT))
        assert done.killed is None and "another process" in done.note
        assert bystander.poll() is None  # still alive
        rec = host.record()
        assert rec is not None and rec.power == HostPower.OFF
    finally:
        bystander.kill()
        bystander.wait(5)
