"""Out-of-band changes to sim hosts (`bollard sim vm`, `bollard sim report hold`): the
ground truth changes behind Bollard's back, for reconciliation tests."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bollard.agent.drivers.base import ReportFaultSource
from bollard.agent.drivers.sim import SimDriver
from bollard.cli.main import app
from bollard.domain.states import PowerState
from bollard.sim import Fabric, SimHost, SimVm
from bollard.sim.out_of_band import (
    OutOfBandError,
    define_vm,
    find_vm,
    hold_reports,
    kill_vm,
    set_vm,
    take_report_hold,
    undefine_vm,
)

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


@pytest.fixture
def fabric(tmp_path: Path) -> Fabric:
    fabric = Fabric(tmp_path / "fab")
    host = fabric.host("node-1")
    host.ensure_host(8, 8192)
    host.put_vm(SimVm(uuid=U1, name="web", vcpus=2, memory_mb=512, power=PowerState.RUNNING))
    host.put_vm(SimVm(uuid=U2, name="db", vcpus=1, memory_mb=256, power=PowerState.STOPPED))
    return fabric


@pytest.fixture
def host(fabric: Fabric) -> SimHost:
    return fabric.host("node-1")


def vm_of(host: SimHost, uuid: str) -> SimVm:
    vm = host.get_vm(uuid)
    assert vm is not None
    return vm


# find_vm


def test_find_vm_by_name_or_uuid(host: SimHost) -> None:
    assert find_vm(host, "web").uuid == U1
    assert find_vm(host, U2).name == "db"


def test_find_vm_errors_name_the_node_and_vm(fabric: Fabric, host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match=r"no VM 'nope' .* on sim host node-1"):
        find_vm(host, "nope")
    with pytest.raises(OutOfBandError, match="sim host node-9 does not exist"):
        find_vm(fabric.host("node-9"), "web")
    host.put_vm(SimVm(uuid=U3, name="web", vcpus=1, memory_mb=128))
    with pytest.raises(OutOfBandError, match=r"'web' is ambiguous on sim host node-1") as err:
        find_vm(host, "web")
    assert U1 in str(err.value) and U3 in str(err.value)
    assert find_vm(host, U3).uuid == U3  # a uuid still names it
    assert isinstance(err.value, ValueError)


# kill_vm


def test_kill_stops_a_running_vm(host: SimHost) -> None:
    before = vm_of(host, U1)
    killed = kill_vm(host, "web")
    assert killed.power == PowerState.STOPPED
    assert killed.updated_at >= before.updated_at
    assert vm_of(host, U1) == killed
    assert (killed.vcpus, killed.memory_mb, killed.epoch) == (2, 512, 0)
    assert host.executed() == []  # no command did it


def test_kill_crashed_and_a_paused_vm(host: SimHost) -> None:
    host.update_vm(U1, lambda vm: vm.model_copy(update={"power": PowerState.PAUSED}))
    assert kill_vm(host, U1, crashed=True).power == PowerState.CRASHED
    assert vm_of(host, U1).power == PowerState.CRASHED


def test_kill_refuses_a_stopped_or_crashed_vm(host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match=r"VM db .* on sim host node-1 is already stopped"):
        kill_vm(host, "db")
    kill_vm(host, "web", crashed=True)
    with pytest.raises(OutOfBandError, match="is already crashed"):
        kill_vm(host, "web")
    with pytest.raises(OutOfBandError, match="no VM 'ghost'"):
        kill_vm(host, "ghost")


# undefine_vm


def test_undefine_removes_a_vm_whatever_its_power(host: SimHost) -> None:
    gone = undefine_vm(host, "web")
    assert (gone.uuid, gone.power) == (U1, PowerState.RUNNING)
    assert host.get_vm(U1) is None
    assert undefine_vm(host, U2).name == "db"
    assert host.list_vms() == []
    with pytest.raises(OutOfBandError, match=r"no VM 'web' .* on sim host node-1"):
        undefine_vm(host, "web")


# define_vm


def test_define_an_unknown_running_vm(host: SimHost) -> None:
    vm = define_vm(host, "intruder", 1024, vcpus=2)
    assert str(uuidlib.UUID(vm.uuid)) == vm.uuid
    assert (vm.name, vm.power, vm.vcpus, vm.memory_mb, vm.epoch) == (
        "intruder",
        PowerState.RUNNING,
        2,
        1024,
        0,
    )
    assert vm_of(host, vm.uuid) == vm


def test_define_stopped_with_uuid_and_epoch(host: SimHost) -> None:
    vm = define_vm(host, "old", 128, running=False, uuid=U3, epoch=7)
    assert (vm.uuid, vm.power, vm.epoch, vm.vcpus) == (U3, PowerState.STOPPED, 7, 1)


def test_define_refuses_duplicates_and_bad_values(host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match=f"node-1 already has a VM named web \\({U1}\\)"):
        define_vm(host, "web", 128)
    with pytest.raises(OutOfBandError, match=f"node-1 already has a VM with uuid {U2}"):
        define_vm(host, "other", 128, uuid=U2)
    with pytest.raises(OutOfBandError, match="memory_mb must be >= 1"):
        define_vm(host, "x", 0)
    with pytest.raises(OutOfBandError, match="vcpus must be >= 1"):
        define_vm(host, "x", 128, vcpus=0)
    with pytest.raises(OutOfBandError, match="epoch must be >= 0"):
        define_vm(host, "x", 128, epoch=-1)
    with pytest.raises(OutOfBandError, match="invalid VM uuid"):
        define_vm(host, "x", 128, uuid="../escape")
    with pytest.raises(OutOfBandError, match="invalid VM name"):
        define_vm(host, "no spaces", 128)
    assert [vm.name for vm in host.list_vms()] == ["db", "web"]


def test_define_on_a_missing_or_powered_off_host(fabric: Fabric, host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match="sim host node-9 does not exist"):
        define_vm(fabric.host("node-9"), "x", 128)
    host.power_off()
    with pytest.raises(OutOfBandError, match="sim host node-1 is powered off"):
        define_vm(host, "x", 128)
    assert define_vm(host, "x", 128, running=False).power == PowerState.STOPPED


# set_vm


def test_set_changes_memory_and_vcpus(host: SimHost) -> None:
    assert (set_vm(host, "web", memory_mb=2048).memory_mb, vm_of(host, U1).vcpus) == (2048, 2)
    changed = set_vm(host, U1, vcpus=4)
    assert (changed.vcpus, changed.memory_mb, changed.power) == (4, 2048, PowerState.RUNNING)
    both = set_vm(host, "db", memory_mb=64, vcpus=3)
    assert vm_of(host, U2) == both and (both.vcpus, both.memory_mb) == (3, 64)


def test_set_refuses_nothing_bad_values_and_unknown_vm(host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match="nothing to change on VM web on sim host node-1"):
        set_vm(host, "web")
    with pytest.raises(OutOfBandError, match="memory_mb must be >= 1"):
        set_vm(host, "web", memory_mb=0)
    with pytest.raises(OutOfBandError, match="vcpus must be >= 1"):
        set_vm(host, "web", vcpus=-2)
    with pytest.raises(OutOfBandError, match="no VM 'ghost'"):
        set_vm(host, "ghost", vcpus=2)
    assert vm_of(host, U1).vcpus == 2


# hold_reports / take_report_hold


def test_hold_reports_counts_down(host: SimHost) -> None:
    assert take_report_hold(host) is False
    rec = hold_reports(host, count=2)
    assert rec.hold_reports == 2
    record = host.record()
    assert record is not None and record.hold_reports == 2
    assert [take_report_hold(host) for _ in range(3)] == [True, True, False]
    record = host.record()
    assert record is not None and record.hold_reports == 0
    hold_reports(host, 5)
    assert hold_reports(host, 0).hold_reports == 0  # replaces; 0 disarms
    assert take_report_hold(host) is False


def test_hold_reports_errors(fabric: Fabric, host: SimHost) -> None:
    with pytest.raises(OutOfBandError, match="hold count must be >= 0"):
        hold_reports(host, -1)
    with pytest.raises(OutOfBandError, match="sim host node-9 does not exist"):
        hold_reports(fabric.host("node-9"))
    assert take_report_hold(fabric.host("node-9")) is False


def test_the_hold_survives_host_changes(host: SimHost) -> None:
    hold_reports(host, 1)
    host.set_load(0.5)
    host.power_off()
    host.power_on()
    record = host.record()
    assert record is not None and record.hold_reports == 1


def test_sim_driver_takes_report_holds(fabric: Fabric, host: SimHost) -> None:
    driver = SimDriver(fabric.root, "node-1", latency=0)
    assert isinstance(driver, ReportFaultSource)

    async def takes() -> list[bool]:
        return [await driver.take_report_hold() for _ in range(2)]

    assert asyncio.run(takes()) == [False, False]
    hold_reports(host, count=1)
    assert asyncio.run(takes()) == [True, False]


# CLI


def cli(fabric: Fabric, *args: str) -> Result:
    command, node, *rest = args
    return CliRunner().invoke(
        app, [*command.split(), node, *rest, "--fabric-dir", str(fabric.root)]
    )


def ok_json(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_kill(fabric: Fabric, host: SimHost) -> None:
    result = cli(fabric, "sim vm kill", "node-1", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ("killed web on node-1 behind Bollard's back (power: stopped)")
    define_vm(host, "other", 128)
    data = ok_json(cli(fabric, "sim vm kill", "node-1", "other", "--crashed", "-o", "json"))
    assert (data["node"], data["name"], data["power"]) == ("node-1", "other", "crashed")
    one_line_error(cli(fabric, "sim vm kill", "node-1", "web"), "web", "node-1", "stopped")


def test_cli_undefine(fabric: Fabric, host: SimHost) -> None:
    result = cli(fabric, "sim vm undefine", "node-1", "web")
    assert result.exit_code == 0, result.output
    assert f"undefined web ({U1}) on node-1 behind Bollard's back" in result.stdout
    assert "was running" in result.stdout
    data = ok_json(cli(fabric, "sim vm undefine", "node-1", U2, "-o", "json"))
    assert (data["uuid"], data["name"], data["power"]) == (U2, "db", "stopped")
    assert host.list_vms() == []
    one_line_error(cli(fabric, "sim vm undefine", "node-1", "web"), "web", "node-1")


def test_cli_define(fabric: Fabric, host: SimHost) -> None:
    result = cli(fabric, "sim vm define", "node-1", "ghost", "--memory", "1024")
    assert result.exit_code == 0, result.output
    assert "defined ghost (" in result.stdout and "on node-1 behind Bollard's back" in result.stdout
    assert "(power: running, 1 vCPU, 1024 MB, epoch 0)" in result.stdout
    data = ok_json(
        cli(
            fabric,
            "sim vm define",
            "node-1",
            "cold",
            "--memory",
            "256",
            "--vcpus",
            "2",
            "--stopped",
            "--uuid",
            U3,
            "--epoch",
            "4",
            "-o",
            "json",
        )
    )
    assert {k: data[k] for k in ("node", "uuid", "name", "power", "vcpus", "memory_mb")} == {
        "node": "node-1",
        "uuid": U3,
        "name": "cold",
        "power": "stopped",
        "vcpus": 2,
        "memory_mb": 256,
    }
    assert data["epoch"] == 4 and vm_of(host, U3).epoch == 4
    one_line_error(
        cli(fabric, "sim vm define", "node-1", "web", "--memory", "64"),
        "node-1",
        "already has a VM named web",
    )


def test_cli_set(fabric: Fabric, host: SimHost) -> None:
    result = cli(fabric, "sim vm set", "node-1", "web", "--memory", "4096")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "set web on node-1 behind Bollard's back: 2 vCPUs, 4096 MB"
    data = ok_json(cli(fabric, "sim vm set", "node-1", "web", "--vcpus", "1", "-o", "json"))
    assert (data["vcpus"], data["memory_mb"]) == (1, 4096)
    one_line_error(cli(fabric, "sim vm set", "node-1", "web"), "nothing to change", "node-1")
    one_line_error(cli(fabric, "sim vm set", "node-1", "web", "--vcpus", "0"), "vcpus")


def test_cli_report_hold(fabric: Fabric, host: SimHost) -> None:
    result = cli(fabric, "sim report hold", "node-1")
    assert result.exit_code == 0, result.output
    assert "node-1 holds back its next 1 heartbeat behind Bollard's back" in result.stdout
    data = ok_json(cli(fabric, "sim report hold", "node-1", "--count", "3", "-o", "json"))
    assert data == {"node": "node-1", "hold_reports": 3}
    assert [take_report_hold(host) for _ in range(4)] == [True, True, True, False]
    one_line_error(cli(fabric, "sim report hold", "node-1", "--count", "-1"), ">= 0")


def test_cli_unknown_host_and_missing_fabric(fabric: Fabric, tmp_path: Path) -> None:
    one_line_error(cli(fabric, "sim vm kill", "node-9", "web"), "no sim host 'node-9'")
    one_line_error(cli(fabric, "sim report hold", "node-9"), "no sim host 'node-9'")
    result = CliRunner().invoke(
        app, ["sim", "vm", "kill", "node-1", "web", "--fabric-dir", str(tmp_path / "none")]
    )
    one_line_error(result, "does not exist")


def test_cli_help_says_behind_bollards_back() -> None:
    verbs = ["kill", "undefine", "define", "set"]
    for command in (["vm"], *(["vm", verb] for verb in verbs), ["report", "hold"]):
        result = CliRunner().invoke(app, ["sim", *command, "--help"])
        assert result.exit_code == 0, result.output
        text = " ".join(result.stdout.replace("\u2502", " ").split())  # box edges, wraps
        assert "behind Bollard's back" in text, command
