"""LibvirtDriver against libvirt's own test driver (``test:///<node.xml>``).

Each test gets a fresh host: a node file in its tmp_path (``test:///default`` is shared by
the whole process). The test driver runs no guests: a shutdown stops the domain at once
(real guests and ACPI are the contract suite's, against real daemons).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from bollard.agent.config import AgentConfig, AgentConfigError, make_driver  # noqa: E402
from bollard.agent.drivers.base import (  # noqa: E402
    ConsoleSource,
    HypervisorDriver,
    StateWatcher,
    VmSpec,
)
from bollard.agent.drivers.libvirt import LibvirtDriver  # noqa: E402
from bollard.agent.drivers.libvirt import domains as D  # noqa: E402
from bollard.agent.drivers.libvirt.connection import Connection  # noqa: E402
from bollard.domain.errors import (  # noqa: E402
    DriverInvalidState,
    DriverNotFound,
    DriverPermanent,
    DriverTemporary,
)
from bollard.domain.states import PowerState  # noqa: E402

T = TypeVar("T")

UUID = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
FOREIGN = "33333333-3333-4333-8333-333333333333"
MISSING = "99999999-9999-4999-8999-999999999999"

NODE = f"""<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>2</threads>
       <active>8</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>4194304</memory>
  <domain type='test'>
    <name>not-bollards</name><uuid>{FOREIGN}</uuid>
    <memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type>hvm</type></os>
  </domain>
</node>
"""


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def make(tmp_path: Path, **kw: Any) -> LibvirtDriver:
    node = tmp_path / "node.xml"
    if not node.exists():
        node.write_text(NODE)
    if "kernel_boot_id" not in kw:
        kw["kernel_boot_id"] = _boot_id_file(tmp_path, "boot-1")
    return LibvirtDriver(f"test://{node}", "qemu", tmp_path / "consoles", **kw)


def _boot_id_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "boot_id"
    path.write_text(content + "\n")
    return path


@pytest.fixture
def driver(tmp_path: Path) -> LibvirtDriver:
    return make(tmp_path)


def spec(uuid: str = UUID, epoch: int = 3, name: str = "web-1") -> VmSpec:
    return VmSpec(uuid=uuid, name=name, vcpus=2, memory_mb=512, epoch=epoch)


async def raw(d: LibvirtDriver, fn: Any) -> Any:
    """Do something to the host behind the driver's back (on its own connection)."""
    return await d.conn.call("test", fn)


def test_facilities_and_interface(driver: LibvirtDriver) -> None:
    hv: HypervisorDriver = driver
    assert hv.name == "libvirt"
    assert isinstance(driver, StateWatcher) and isinstance(driver, ConsoleSource)


def test_host_info(tmp_path: Path) -> None:
    async def go() -> None:
        d = make(tmp_path)
        first, second = await d.host_info(), await d.host_info()
        assert first.boot_id and first == second
        assert (first.capacity.vcpus, first.capacity.memory_mb) == (8, 4096)
        await d.close()
        rebooted = make(tmp_path, kernel_boot_id=_boot_id_file(tmp_path, "boot-2"))
        assert (await rebooted.host_info()).boot_id != first.boot_id
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        other_host = make(other_dir, kernel_boot_id=tmp_path / "boot_id")
        assert (await other_host.host_info()).boot_id != (await rebooted.host_info()).boot_id

    run(go())


def test_define_is_idempotent_and_keeps_power(driver: LibvirtDriver) -> None:
    async def go() -> None:
        report = await driver.define(spec())
        assert report.power == PowerState.STOPPED
        assert (report.uuid, report.name, report.vcpus, report.memory_mb, report.epoch) == (
            UUID, "web-1", 2, 512, 3,
        )  # fmt: skip
        assert await driver.define(spec()) == report
        assert await driver.list_vms() == [report]
        await driver.start(UUID)
        again = await driver.define(spec())
        assert again.power == PowerState.RUNNING
        assert [vm.power for vm in await driver.list_vms()] == [PowerState.RUNNING]

    run(go())


def test_define_updates_in_place_and_the_epoch_never_goes_back(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec(epoch=3))
        await driver.start(UUID)
        bigger = VmSpec(uuid=UUID, name="web 1 & <co>", vcpus=4, memory_mb=1024, epoch=5)
        report = await driver.define(bigger)
        assert (report.name, report.vcpus, report.memory_mb, report.epoch, report.power) == (
            "web 1 & <co>", 4, 1024, 5, PowerState.RUNNING,
        )  # fmt: skip
        older = await driver.define(spec(epoch=4))
        assert older.epoch == 5 and older.name == "web-1"
        (listed,) = await driver.list_vms()
        assert listed == older

        def live_meta(conn: Any) -> str:
            dom = conn.lookupByUUIDString(UUID)
            return str(dom.XMLDesc(0))

        assert 'epoch="5"' in await raw(driver, live_meta)  # the running domain's too

    run(go())


def test_domains_that_are_not_bollards_are_left_alone(driver: LibvirtDriver) -> None:
    async def go() -> None:
        assert await driver.list_vms() == []
        await driver.define(spec())
        assert [vm.uuid for vm in await driver.list_vms()] == [UUID]
        for op in ("start", "stop", "restart"):
            with pytest.raises(DriverNotFound):
                await getattr(driver, op)(FOREIGN)
        with pytest.raises(DriverNotFound):
            await driver.shutdown(FOREIGN, timeout=0.1)
        with pytest.raises(DriverInvalidState, match="not Bollard's"):
            await driver.define(spec(FOREIGN))
        await driver.undefine(FOREIGN, force=True)  # not ours: nothing done

        def foreign(conn: Any) -> tuple[bool, bool]:
            dom = conn.lookupByUUIDString(FOREIGN)
            return bool(dom.isActive()), bool(dom.isPersistent())

        assert await raw(driver, foreign) == (True, True)

    run(go())


def test_start_stop_restart_are_idempotent(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec())
        assert (await driver.stop(UUID)).power == PowerState.STOPPED
        assert (await driver.start(UUID)).power == PowerState.RUNNING
        assert (await driver.start(UUID)).power == PowerState.RUNNING
        assert (await driver.restart(UUID)).power == PowerState.RUNNING
        assert (await driver.stop(UUID)).power == PowerState.STOPPED
        assert (await driver.stop(UUID)).power == PowerState.STOPPED
        assert (await driver.restart(UUID)).power == PowerState.RUNNING

    run(go())


def test_start_resumes_a_paused_vm(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec())
        await driver.start(UUID)
        await raw(driver, lambda c: c.lookupByUUIDString(UUID).suspend())
        assert [vm.power for vm in await driver.list_vms()] == [PowerState.PAUSED]
        with pytest.raises(DriverInvalidState):
            await driver.undefine(UUID)
        assert (await driver.start(UUID)).power == PowerState.RUNNING

    run(go())


def test_shutdown(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec())
        assert (await driver.shutdown(UUID, timeout=5.0)).power == PowerState.STOPPED
        await driver.start(UUID)
        assert (await driver.shutdown(UUID, timeout=5.0)).power == PowerState.STOPPED
        assert (await driver.shutdown(UUID, timeout=5.0)).power == PowerState.STOPPED

    run(go())


def test_shutdown_forces_off_a_guest_that_ignores_acpi(tmp_path: Path) -> None:
    driver = make(tmp_path, acpi_repeat=0.1)
    presses: list[str] = []
    driver._acpi = lambda dom: presses.append(dom.UUIDString())  # type: ignore[method-assign]

    async def go() -> None:
        await driver.define(spec())
        await driver.start(UUID)
        began = time.monotonic()
        report = await driver.shutdown(UUID, timeout=0.5)
        took = time.monotonic() - began
        assert report.power == PowerState.STOPPED
        assert took >= 0.5, f"forced off after {took:.3f}s, before the timeout"
        assert len(presses) >= 3  # the power button is pressed again while waiting

    run(go())


def test_shutdown_of_a_paused_vm_destroys_it(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec())
        await driver.start(UUID)
        await raw(driver, lambda c: c.lookupByUUIDString(UUID).suspend())
        began = time.monotonic()
        assert (await driver.shutdown(UUID, timeout=5.0)).power == PowerState.STOPPED
        assert time.monotonic() - began < 2.0

    run(go())


@pytest.mark.parametrize("op", ["start", "stop", "restart", "shutdown", "console", "display"])
def test_unknown_vm_is_not_found(driver: LibvirtDriver, op: str) -> None:
    async def go() -> None:
        await driver.define(spec())
        with pytest.raises(DriverNotFound):
            if op == "shutdown":
                await driver.shutdown(MISSING, timeout=0.1)
            elif op == "console":
                await driver.console_log(MISSING, 10)
            else:
                await getattr(driver, op)(MISSING)

    run(go())


def test_a_bad_uuid_is_refused(driver: LibvirtDriver) -> None:
    async def go() -> None:
        with pytest.raises(DriverPermanent, match="not a uuid"):
            await driver.start("../../etc")
        with pytest.raises(DriverPermanent, match="not a uuid"):
            await driver.define(spec("web-1"))

    run(go())


def test_undefine(driver: LibvirtDriver, tmp_path: Path) -> None:
    async def go() -> None:
        await driver.define(spec())
        log = tmp_path / "consoles" / f"{UUID}.log"
        log.write_text("booted\n")
        await driver.undefine(UUID)
        assert await driver.list_vms() == []
        assert not log.exists()
        await driver.undefine(UUID)  # absent: fine
        await driver.undefine(MISSING)

    run(go())


def test_undefine_of_a_running_vm_is_refused_unless_forced(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec())
        await driver.start(UUID)
        with pytest.raises(DriverInvalidState, match="running"):
            await driver.undefine(UUID)
        assert [vm.power for vm in await driver.list_vms()] == [PowerState.RUNNING]
        await driver.undefine(UUID, force=True)
        assert await driver.list_vms() == []
        assert await raw(driver, lambda c: D.lookup(libvirt, c, UUID)) is None  # not transient
        await driver.undefine(UUID, force=True)

    run(go())


def test_vms_are_independent(driver: LibvirtDriver) -> None:
    async def go() -> None:
        await driver.define(spec(UUID, epoch=1))
        await driver.define(spec(OTHER, epoch=2, name="web-2"))
        await asyncio.gather(driver.start(UUID), driver.start(OTHER))
        await driver.stop(UUID)
        powers = {vm.uuid: (vm.power, vm.epoch) for vm in await driver.list_vms()}
        assert powers == {UUID: (PowerState.STOPPED, 1), OTHER: (PowerState.RUNNING, 2)}

    run(go())


def test_console_log_and_display(driver: LibvirtDriver, tmp_path: Path) -> None:
    async def go() -> None:
        await driver.define(spec())
        assert await driver.console_log(UUID, 10) == ""  # nothing written yet
        (tmp_path / "consoles" / f"{UUID}.log").write_bytes(b"one\ntwo\n\xffthree\n")
        assert await driver.console_log(UUID, 2) == "two\n\ufffdthree\n"
        assert await driver.display(UUID) is None  # not running
        await driver.start(UUID)
        assert await driver.display(UUID) is None  # the test driver has no VNC server

    run(go())


def test_lifecycle_events_call_back(driver: LibvirtDriver) -> None:
    async def go() -> None:
        changes = asyncio.Event()
        driver.on_change(changes.set)
        await driver.define(spec())
        await driver.start(UUID)  # an event of libvirt's, delivered in this loop
        async with asyncio.timeout(5):
            await changes.wait()

    run(go())


def test_reconnects_after_the_connection_is_lost(driver: LibvirtDriver) -> None:
    async def go() -> None:
        changes: list[int] = []
        driver.on_change(lambda: changes.append(1))
        await driver.list_vms()
        first = driver.conn._conn
        first.close()  # as when libvirtd goes away
        await driver.list_vms()  # reopened (the test driver's new host is a fresh one)
        assert driver.conn._conn is not None and driver.conn._conn is not first
        async with asyncio.timeout(5):
            while not changes:  # a reconnection is signalled as a possible change
                await asyncio.sleep(0.01)
        await driver.close()
        await driver.list_vms()  # usable after close: opens again

    run(go())


def test_unreachable_daemon_is_temporary(tmp_path: Path) -> None:
    async def go() -> None:
        uri = f"qemu:///system?socket={tmp_path}/no-such-socket"
        d = LibvirtDriver(uri, "qemu", tmp_path / "consoles")
        with pytest.raises(DriverTemporary, match="connect"):
            await d.list_vms()

    run(go())


def test_a_call_that_hangs_times_out(tmp_path: Path) -> None:
    async def go() -> None:
        conn = Connection(f"test://{tmp_path / 'node.xml'}", call_timeout=0.2)
        (tmp_path / "node.xml").write_text(NODE)
        began = time.monotonic()
        with pytest.raises(DriverTemporary, match="no answer"):
            await conn.call("hang", lambda c: time.sleep(1.0))
        assert time.monotonic() - began < 0.9
        await conn.close()

    run(go())


def test_constants_are_libvirts() -> None:
    for state in D.DomState:
        assert getattr(libvirt, f"VIR_DOMAIN_{state.name}") == state.value
    assert libvirt.VIR_DOMAIN_SHUTOFF_CRASHED == D.SHUTOFF_CRASHED
    assert libvirt.VIR_DOMAIN_PAUSED_CRASHED == D.PAUSED_CRASHED
    assert libvirt.VIR_DOMAIN_XML_INACTIVE == D.XML_INACTIVE
    from bollard.agent.drivers.libvirt import driver as drv

    assert libvirt.VIR_DOMAIN_METADATA_ELEMENT == drv._METADATA_ELEMENT
    assert libvirt.VIR_DOMAIN_AFFECT_LIVE == drv._AFFECT_LIVE
    assert libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN == drv._SHUTDOWN_ACPI
    full = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    )
    assert drv._UNDEFINE_FLAGS[0] == full


# configuration


def config(tmp_path: Path, **kw: Any) -> AgentConfig:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    values: dict[str, Any] = {"driver": "libvirt", "libvirt_uri": f"test://{node}",
                              "libvirt_domain_type": "qemu", **kw}  # fmt: skip
    return AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "state", **values)


def test_make_driver_builds_the_libvirt_driver(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    driver = make_driver(
        config(tmp_path, libvirt_boot_kernel=kernel, libvirt_boot_cmdline="console=ttyS0")
    )
    assert isinstance(driver, LibvirtDriver)
    assert driver.settings.console_dir == (tmp_path / "state" / "consoles").resolve()
    assert driver.settings.domain_type == "qemu"
    assert driver.settings.boot_kernel == str(kernel.resolve())
    assert run(driver.list_vms()) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"libvirt_domain_type": "xen"}, "domain type must be one of kvm, qemu"),
        ({"libvirt_vnc_listen": "my host"}, "VNC listen address"),
        ({"libvirt_uri": " "}, "URI"),
        ({"libvirt_boot_cmdline": "x"}, "need --libvirt-boot-kernel"),
        ({"libvirt_boot_kernel": Path("/no/such/kernel")}, "is not a file"),
    ],
)
def test_bad_libvirt_settings_are_one_line_errors(
    tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(AgentConfigError, match=message) as caught:
        make_driver(config(tmp_path, **kw))
    assert "\n" not in str(caught.value)


def test_cli_passes_the_libvirt_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from bollard.agent import process
    from bollard.cli import agent_cmd

    seen: list[AgentConfig] = []
    monkeypatch.setattr(process, "run_agent", seen.append)
    app = typer.Typer()
    agent_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root."""

    (tmp_path / "tok").write_text("t")
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    args = [
        *("agent", "--server", "http://127.0.0.1:9", "--node", "n1"),
        *("--state-dir", str(tmp_path / "state"), "--token-file", str(tmp_path / "tok")),
        *("--driver", "libvirt", "--libvirt-uri", f"test://{node}"),
        *("--libvirt-domain-type", "qemu", "--libvirt-vnc-listen", "0.0.0.0"),
        *("--libvirt-console-dir", str(tmp_path / "c")),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert (cfg.driver, cfg.libvirt_domain_type, cfg.libvirt_vnc_listen) == (
        "libvirt", "qemu", "0.0.0.0",
    )  # fmt: skip
    assert cfg.libvirt_console_dir == tmp_path / "c"
    bad = CliRunner().invoke(app, [*args, "--libvirt-domain-type", "xen"])
    assert bad.exit_code != 0 and "domain type" in bad.output and "Traceback" not in bad.output
