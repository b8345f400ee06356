"""The agent's SR-IOV wiring (issue 22): `--sriov-pf` parsing (agent and `up`), the
configuration's checks, start-up that leaves a bad PF out, the PFs in the hello with each
VF's user, and VF_SET through the executor (journaled, run once, bad input changes nothing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from typer.testing import CliRunner

from bollard.agent import process as agent_process
from bollard.agent.config import AgentConfig, AgentConfigError, validate
from bollard.agent.drivers.memory import MemoryDriver, MemoryFabric
from bollard.agent.executor import Executor
from bollard.agent.journal import CommandJournal
from bollard.agent.sriov.settings_store import SriovSettingsStore
from bollard.agent.sriov.sim import SimSriov
from bollard.agent.sriov_agent import AgentSriov, sim_state_file, start_sriov
from bollard.cli import agent_cmd
from bollard.cli.main import app as main_app
from bollard.domain.protocol import Answer, Command, Hello
from bollard.domain.sriov import PfConfig, SriovPf, SriovVf, VfSettings
from bollard.domain.states import CommandType
from tests.unit.test_agent_session import FakeServer, agent, make_config

T = TypeVar("T")
VM = "11111111-1111-4111-8111-111111111111"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(15):
            return await coro

    return asyncio.run(bounded())


def pf(device: str = "ens1f0", vfs: int = 4, physnet: str = "physnet1") -> PfConfig:
    return PfConfig(device=device, vfs=vfs, physnet=physnet)


def config(tmp_path: Path, *pfs: PfConfig) -> AgentConfig:
    return AgentConfig(
        server_url="http://127.0.0.1:9",
        node="n1",
        token_file=tmp_path / "token",
        state_dir=tmp_path / "state",
        fabric_dir=tmp_path / "fabric",
        sriov_pfs=pfs,
    )


# --- the options ------------------------------------------------------------------------


@pytest.fixture
def agent_app() -> typer.Typer:
    app = typer.Typer()
    agent_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root."""

    return app


def test_sriov_pf_options_reach_the_config(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr(agent_process, "run_agent", seen.append)
    (tmp_path / "tok").write_text("t\n")
    args = ["agent", "--server", "http://127.0.0.1:9", "--node", "n1", "--token-file",
            str(tmp_path / "tok"), "--state-dir", str(tmp_path / "s"), "--fabric-dir",
            str(tmp_path / "f"), "--sriov-pf", "ens1f0:8:physnet1", "--sriov-pf",
            "ens2f0:2:storage:9000", "--sriov-sysfs", str(tmp_path / "sys")]  # fmt: skip
    result = CliRunner().invoke(agent_app, args)
    assert result.exit_code == 0, result.output
    (got,) = seen
    assert got.sriov_pfs == (
        PfConfig(device="ens1f0", vfs=8, physnet="physnet1"),
        PfConfig(device="ens2f0", vfs=2, physnet="storage", mtu=9000),
    )
    assert got.sriov_sysfs == tmp_path / "sys"


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("ens1f0:8", "'ens1f0:8'"),  # too few parts
        ("ens1f0:eight:physnet1", "'ens1f0:eight:physnet1'"),  # not a number
        ("ens1f0:300:physnet1", "VF count 300"),  # above what any PF may be asked for
        ("ens1f0:8:bad/net", "'bad/net'"),  # physical network out of pattern
        ("ens1f0:8:physnet1:20", "mtu 20"),
    ],
)
@pytest.mark.parametrize("command", ["agent", "up"])
def test_a_bad_sriov_pf_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, spec: str, named: str
) -> None:
    monkeypatch.setenv("BOLLARD_CONFIG_DIR", str(tmp_path / "config"))
    args = [command, "--sriov-pf", spec]
    if command == "agent":
        args += ["--server", "http://x:9", "--node", "n1", "--token-file", "t", "--state-dir", "s"]
    else:
        args += ["--data-dir", str(tmp_path / "up")]
    result = CliRunner().invoke(main_app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid value for --sriov-pf") and named in lines[0]
    assert not (tmp_path / "up").exists()  # `up` refused it before starting anything


def test_config_refuses_a_pf_twice_or_out_of_range(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    validate(config(tmp_path, pf("a"), pf("b")))
    with pytest.raises(AgentConfigError, match="SR-IOV PF a: configured more than once"):
        validate(config(tmp_path, pf("a"), pf("a", vfs=2)))
    with pytest.raises(AgentConfigError, match="VF count 999"):
        validate(config(tmp_path, pf("a", vfs=999)))


# --- start ------------------------------------------------------------------------------


def test_start_leaves_out_a_pf_it_cannot_set_up_and_runs_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path, pf("ens1f0", vfs=4), pf("ens2f0", vfs=65), pf("ens3f0", vfs=2))
    caplog.set_level(logging.INFO, "bollard.agent.sriov_agent")
    driver = MemoryDriver(MemoryFabric(), "n1")
    sriov = run(start_sriov(cfg, driver))
    assert sriov is not None and sriov.started
    pfs = run(sriov.report())
    assert pfs is not None
    assert [(p.device, len(p.vfs), p.error) for p in pfs] == [
        ("ens1f0", 4, None),
        ("ens3f0", 2, None),
        ("ens2f0", 0, "VF count 65 is above the 64 the device supports"),  # its records stay
    ]
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert refused == [
        "SR-IOV: PF ens2f0 left out: VF count 65 is above the 64 the device supports"
    ]
    answer = run(sriov.set_vf(vf_set("c1", "ens2f0", 0, vlan=5)))
    assert answer.error is not None and answer.error.code == "not-found"
    assert "ens2f0 could not be set up" in answer.error.message


def test_a_driver_without_sriov_reports_none(tmp_path: Path) -> None:
    cfg = replace(config(tmp_path, pf()), driver="memory", fabric_dir=None)
    assert run(start_sriov(cfg, MemoryDriver(MemoryFabric(), "n1"))) is None


def test_no_pf_configured_reports_an_empty_list(tmp_path: Path) -> None:
    sriov = run(start_sriov(config(tmp_path), MemoryDriver(MemoryFabric(), "n1")))
    assert sriov is not None and run(sriov.report()) == []


class UsersDriver(MemoryDriver):
    """A memory host whose VMs use the VFs the test names (VfUseSource)."""

    def __init__(self) -> None:
        super().__init__(MemoryFabric(), "n1")
        self.users: dict[str, str] = {}

    async def vf_users(self) -> dict[str, str]:
        return dict(self.users)


def test_report_names_each_vfs_user_by_pci_or_netdev(tmp_path: Path) -> None:
    driver = UsersDriver()
    sriov = run(start_sriov(config(tmp_path, pf(vfs=3)), driver))
    assert sriov is not None
    first = run(sriov.report())
    assert first is not None
    vfs = first[0].vfs
    driver.users = {vfs[0].pci: VM, f"netdev:{vfs[2].netdev}": "vm-two"}
    again = run(sriov.report())
    assert again is not None
    assert [v.used_by for v in again[0].vfs] == [VM, None, "vm-two"]


# --- VF_SET through the executor --------------------------------------------------------


def vf_set(cid: str, device: str = "ens1f0", index: int = 1, **settings: Any) -> Command:
    return Command(
        id=cid,
        command=CommandType.VF_SET,
        args={"pf": device, "vf": index, "settings": settings},
        timeout=10,
    )


class Harness:
    def __init__(self, tmp_path: Path, sriov: AgentSriov | None) -> None:
        self.sent: asyncio.Queue[Any] = asyncio.Queue()
        self.journal = CommandJournal.open(tmp_path / "journal")
        self.executor = Executor(
            MemoryDriver(MemoryFabric(), "n1"), self.sent.put, journal=self.journal, sriov=sriov
        )

    async def answer(self, command: Command) -> Answer:
        self.executor.submit(command)
        async with asyncio.timeout(5):
            msg = await self.sent.get()
        assert isinstance(msg, Answer)
        return msg


def started(tmp_path: Path, vfs: int = 4) -> tuple[AgentSriov, Path]:
    cfg = config(tmp_path, pf(vfs=vfs))
    sriov = run(start_sriov(cfg, MemoryDriver(MemoryFabric(), "n1")))
    assert sriov is not None and sriov.started
    return sriov, sim_state_file(tmp_path / "fabric", "n1")


def host_vf(state_file: Path, index: int) -> VfSettings:
    return run(SimSriov(state_file).read("ens1f0", index))


def test_vf_set_applies_records_and_answers_the_vf(tmp_path: Path) -> None:
    sriov, state_file = started(tmp_path)

    async def go() -> tuple[Answer, Answer]:
        h = Harness(tmp_path, sriov)
        first = await h.answer(vf_set("c1", vlan=100, qos=3, trust=True))
        return first, await h.answer(vf_set("c1", vlan=200))  # the same id again

    first, repeated = run(go())
    assert first.ok, first.error
    vf = SriovVf.model_validate(first.result["vf"])
    assert (vf.index, vf.settings.vlan, vf.settings.qos, vf.settings.trust) == (1, 100, 3, True)
    assert repeated == first  # answered from the journal: vlan 200 never applied
    assert host_vf(state_file, 1).vlan == 100
    recorded = SriovSettingsStore.in_state_dir(tmp_path / "state").get("ens1f0", 1)
    assert recorded == VfSettings(vlan=100, qos=3, trust=True)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ({"pf": "ens9f9", "vf": 0, "settings": {"vlan": 5}}, "not-found",
         "PF ens9f9 is not in this node's configuration"),
        ({"pf": "ens1f0", "vf": 7, "settings": {"vlan": 5}}, "not-found",
         "PF ens1f0 has no VF 7"),
        ({"pf": "ens1f0", "vf": 1, "settings": {"vlan": 4095}}, "invalid-input",
         "vlan 4095: must be between 0 and 4094"),
        ({"pf": "ens1f0", "vf": 1, "settings": {"min_tx_rate": 50, "max_tx_rate": 10}},
         "invalid-input", "min-tx-rate 50: above max-tx-rate 10"),
        ({"pf": "ens1f0", "vf": 1, "settings": {"max_tx_rate": -1}}, "invalid-input",
         "max-tx-rate -1"),
        ({"pf": "ens1f0", "vf": 1, "settings": {"link_state": "up"}}, "invalid-input",
         "'up'"),
        ({"pf": "ens1f0", "vf": -1, "settings": {}}, "invalid-input", "vf_set vf"),
        ({"pf": "ens1f0", "settings": {}}, "invalid-input", "vf_set vf"),
    ],
)  # fmt: skip
def test_bad_vf_set_fails_naming_the_value_and_changes_nothing(
    tmp_path: Path, args: dict[str, Any], code: str, message: str
) -> None:
    sriov, state_file = started(tmp_path)
    before = [host_vf(state_file, i) for i in range(4)]
    command = Command(id="bad", command=CommandType.VF_SET, args=args, timeout=10)
    answer = run(Harness(tmp_path, sriov).answer(command))
    assert not answer.ok and answer.error is not None
    assert answer.error.code == code
    assert message in answer.error.message and "\n" not in answer.error.message
    assert [host_vf(state_file, i) for i in range(4)] == before
    assert SriovSettingsStore.in_state_dir(tmp_path / "state").all() == {}


def test_vf_set_on_an_agent_without_sriov_fails_naming_the_pf(tmp_path: Path) -> None:
    answer = run(Harness(tmp_path, None).answer(vf_set("c1", vlan=3)))
    assert answer.error is not None and answer.error.code == "not-found"
    assert answer.error.message == "PF ens1f0 is not in this node's configuration"


# --- the hello ----------------------------------------------------------------------------


def test_every_hello_carries_the_pfs_set_up_at_start(tmp_path: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        server = FakeServer()
        async with server.running():
            cfg = make_config(tmp_path, server.port, sriov_pfs=(pf(vfs=2),))
            SriovSettingsStore.in_state_dir(cfg.state_dir).put("ens1f0", 1, VfSettings(vlan=42))
            async with agent(cfg):
                _, hello = await server.expect("hello")
                await server.conns[-1].close()  # the agent dials again: a second hello
                _, again = await server.expect("hello")
        return [hello, again]

    hellos = run(go())
    for raw in hellos:
        pfs = Hello.model_validate(raw).sriov
        assert pfs is not None and [p.device for p in pfs] == ["ens1f0"]
        assert [v.settings.vlan for v in pfs[0].vfs] == [0, 42]  # re-applied at start


def test_hello_refuses_an_sriov_report_the_store_cannot_hold() -> None:
    good = SriovPf(device="ens1f0", physnet="p", vfs=[SriovVf(index=0, pci="0000:03:10.0")])
    base = {"node": "n", "incarnation": "i", "boot_id": "b", "driver": "sim",
            "capacity": {"vcpus": 1, "memory_mb": 1}}  # fmt: skip
    assert Hello.model_validate({**base, "sriov": [good.model_dump()]}).sriov == [good]
    assert Hello.model_validate(base).sriov is None
    bad_pci = good.model_copy(update={"vfs": [SriovVf(index=0, pci="03:10.0")]})
    bad_user = good.model_copy(
        update={"vfs": [SriovVf(index=0, pci="0000:03:10.0", used_by="x" * 40)]}
    )
    for bad in (bad_pci, bad_user, good.model_copy(update={"device": "a" * 30})):
        with pytest.raises(ValueError):
            Hello.model_validate({**base, "sriov": [bad.model_dump()]})
    with pytest.raises(ValueError):
        Hello.model_validate({**base, "sriov": [good.model_dump()] * 17})
