"""Sim host power: process identities, the agent's record, `bollard sim power`, and the sim
hypervisor driver refusing work on a host that is off (even one switched off mid-operation)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bollard.agent.drivers.base import VmSpec
from bollard.agent.drivers.sim import SimDriver
from bollard.domain.errors import DriverTemporary
from bollard.domain.states import PowerState
from bollard.power import PowerStatus, PowerTimeout, PowerUnreachable
from bollard.power.sim import SimPowerDriver
from bollard.sim import Fabric, HostPower, SimVm
from bollard.sim.power import (
    power_off_host,
    process_identity,
    register_agent,
    wait_gone,
)
from tests.support.emulators import wait_for

UUID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def test_process_identity_of_this_process() -> None:
    ident = process_identity(os.getpid())
    assert ident is not None
    with open("/proc/self/cmdline", "rb") as f:
        assert list(ident.cmdline) == [a.decode() for a in f.read().split(b"\0")[:-1]]
    assert ident.start_ticks > 0 and not ident.dead
    assert process_identity(2**22 + 12345) is None  # above any pid_max


def test_process_identity_survives_odd_process_names(tmp_path: Path) -> None:
    proc = tmp_path / "77"
    proc.mkdir()
    fields = ["S"] + [str(i) for i in range(4, 22)] + ["424242"] + ["0"] * 30
    (proc / "stat").write_text("77 (a) b (c)) " + " ".join(fields) + "\n")
    (proc / "cmdline").write_bytes(b"python\0-m\0bollard\0")
    ident = process_identity(77, proc=tmp_path)
    assert ident is not None
    assert (ident.state, ident.start_ticks) == ("S", 424242)
    assert ident.cmdline == ("python", "-m", "bollard")


def test_register_agent_records_the_process(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_for(  # until it runs python, not the forked copy of pytest
            lambda: (i := process_identity(child.pid)) is not None and "-c" in i.cmdline,
            "the child to exec",
            time.monotonic() + 10,
        )
        agent = register_agent(tmp_path, "node-1", 4, 4096, pid=child.pid)
        assert agent is not None and agent.pid == child.pid
        rec = Fabric(tmp_path).host("node-1").record()
        assert rec is not None and rec.agent == agent and rec.power == HostPower.ON
        done = power_off_host(Fabric(tmp_path), "node-1")
        assert done.killed == agent
        assert wait_gone(agent, 5)
        assert child.wait(5) < 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(5)


def test_the_caller_itself_is_never_killed(tmp_path: Path) -> None:
    register_agent(tmp_path, "node-1", 4, 4096)  # records this very process
    done = power_off_host(Fabric(tmp_path), "node-1")
    assert done.killed is None and "this process" in done.note


def test_power_errors_of_the_sim_driver(tmp_path: Path) -> None:
    with pytest.raises(PowerUnreachable):
        asyncio.run(SimPowerDriver(tmp_path / "missing", "node-1").status(1))
    Fabric(tmp_path).host("node-1").ensure_host(1, 1)
    with pytest.raises(PowerUnreachable):
        asyncio.run(SimPowerDriver(tmp_path, "node-2").power_off(1))
    holder = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # someone else holds the fabric lock, too long
        started = time.monotonic()
        with pytest.raises(PowerTimeout):
            asyncio.run(SimPowerDriver(tmp_path, "node-1").power_off(0.3))
        assert time.monotonic() - started < 1.3
    finally:
        os.close(holder)
    assert asyncio.run(SimPowerDriver(tmp_path, "node-1").status(1)) is PowerStatus.ON


# the sim hypervisor driver on a host that is off


def test_an_agent_on_a_host_that_is_off_runs_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        driver = SimDriver(tmp_path, "n1", latency=0)
        await driver.host_info()
        Fabric(tmp_path).host("n1").power_off()
        with pytest.raises(DriverTemporary):
            await driver.define(VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=64, epoch=1))
        assert await driver.list_vms() == []

    asyncio.run(go())


@pytest.mark.parametrize("operation", ["start", "define", "undefine"])
def test_a_host_switched_off_during_an_operation_sees_no_effect(
    tmp_path: Path, operation: str
) -> None:
    """The operation passed its first power check, then the host went off before it wrote:
    the write is refused, so no VM runs (or changes) on a host that is off."""
    host = Fabric(tmp_path).host("n1")
    host.ensure_host(4, 4096)
    if operation != "define":
        host.put_vm(SimVm(uuid=UUID, name="a", vcpus=1, memory_mb=64))
    mid_operation = asyncio.Event()
    switched_off = asyncio.Event()

    async def sleep(_seconds: float) -> None:  # the operation's latency
        mid_operation.set()
        await switched_off.wait()

    async def go() -> None:
        driver = SimDriver(tmp_path, "n1", latency=1.0, sleep=sleep)
        if operation == "start":
            op = asyncio.create_task(driver.start(UUID))
        elif operation == "define":
            spec = VmSpec(uuid=UUID, name="a", vcpus=1, memory_mb=64, epoch=1)
            op = asyncio.create_task(driver.define(spec))
        else:
            op = asyncio.create_task(driver.undefine(UUID))
        await asyncio.wait_for(mid_operation.wait(), 5)
        await asyncio.to_thread(power_off_host, Fabric(tmp_path), "n1")
        switched_off.set()
        with pytest.raises(DriverTemporary, match="powered off"):
            await asyncio.wait_for(op, 5)

    asyncio.run(go())
    vms = host.list_vms()
    if operation == "define":
        assert vms == []
    else:
        assert [(vm.uuid, vm.power) for vm in vms] == [(UUID, PowerState.STOPPED)]


# bollard sim power


@pytest.fixture
def app() -> typer.Typer:
    from bollard.cli.sim_cmd import sim_app

    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    return app


def test_sim_power_cli(app: typer.Typer, tmp_path: Path) -> None:
    host = Fabric(tmp_path).host("node-1")
    boot = host.ensure_host(4, 4096).boot_id
    host.put_vm(SimVm(uuid=UUID, name="a", vcpus=1, memory_mb=64, power=PowerState.RUNNING))
    runner = CliRunner()
    fab = ["--fabric-dir", str(tmp_path)]

    def sim(*args: str) -> str:
        result = runner.invoke(app, ["sim", "power", *args, *fab])
        assert result.exit_code == 0, result.output
        return result.stdout

    status = json.loads(sim("status", "node-1", "-o", "json"))
    assert status == {"node": "node-1", "power": "on", "boot_id": boot, "agent_pid": None}
    assert sim("off", "node-1").strip() == "node-1 powered off; no agent process recorded"
    assert [vm.power for vm in host.list_vms()] == [PowerState.STOPPED]
    assert sim("off", "node-1").strip() == "node-1 was already off"
    assert sim("status", "node-1").startswith("node-1 is off")
    on = sim("on", "node-1")
    rec = host.record()
    assert rec is not None and rec.boot_id != boot and rec.power == HostPower.ON
    assert on.strip() == f"node-1 powered on (boot {rec.boot_id})"
    assert sim("on", "node-1").strip() == f"node-1 was already on (boot {rec.boot_id})"
    missing = runner.invoke(app, ["sim", "power", "off", "node-9", *fab])
    assert missing.exit_code == 1 and "no sim host 'node-9'" in missing.output
