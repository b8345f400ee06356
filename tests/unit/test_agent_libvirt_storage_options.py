"""The libvirt storage options of the agent: ``--libvirt-tool-prefix`` (the command line the
driver runs qemu-img through, e.g. nsenter into the daemon's mount namespace) and
``--libvirt-copy-bandwidth-mib`` (the rate of volume copies and live moves) reach the driver;
bad values are refused in one line. Against libvirt's test driver (``test:///<node.xml>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from bollard.agent.config import AgentConfig, AgentConfigError, make_driver  # noqa: E402
from bollard.agent.drivers.libvirt import LibvirtDriver  # noqa: E402
from bollard.cli import agent_cmd  # noqa: E402

NODE = (
    "<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
    "<active>2</active><mhz>2000</mhz><model>x86_64</model></cpu>"
    "<memory>4194304</memory></node>"
)


def _config(tmp_path: Path, **kw: Any) -> AgentConfig:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return AgentConfig(
        "http://h:1", "n1", tmp_path / "t", tmp_path / "state", driver="libvirt",
        libvirt_uri=f"test://{node}", libvirt_domain_type="qemu", **kw,
    )  # fmt: skip


def test_the_options_reach_the_driver(tmp_path: Path) -> None:
    driver = make_driver(
        _config(
            tmp_path,
            libvirt_tool_prefix="nsenter '--mount=/proc/42/ns/mnt' --",
            libvirt_copy_bandwidth_mib=2.5,
        )
    )
    assert isinstance(driver, LibvirtDriver)
    # (after the setpriv guard that ties each tool's life to the agent's, where there is one)
    assert driver.tools.prefix[-3:] == ["nsenter", "--mount=/proc/42/ns/mnt", "--"]
    assert driver.copy_bandwidth_mib == 2.5


def test_without_them_tools_run_as_they_are_and_copies_are_not_slowed(tmp_path: Path) -> None:
    driver = make_driver(_config(tmp_path))
    assert isinstance(driver, LibvirtDriver)
    assert "nsenter" not in driver.tools.prefix
    assert driver.tools.command(["qemu-img", "info"])[-2:] == ["qemu-img", "info"]
    assert driver.copy_bandwidth_mib is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"libvirt_tool_prefix": "nsenter 'unbalanced"}, "cannot read the tool prefix"),
        ({"libvirt_tool_prefix": "   "}, "names no command"),
        ({"libvirt_copy_bandwidth_mib": 0.0}, r"copy bandwidth .* must be > 0"),
        ({"libvirt_copy_bandwidth_mib": -3.0}, r"copy bandwidth .* must be > 0"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message) as caught:
        make_driver(_config(tmp_path, **kw))
    assert "\n" not in str(caught.value)


@pytest.fixture
def agent_app() -> typer.Typer:
    app = typer.Typer()
    agent_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """Test root."""

    return app


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "tok").write_text("t0ken")
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return [
        "agent", "--server", "http://127.0.0.1:9", "--node", "n1",
        "--token-file", str(tmp_path / "tok"), "--state-dir", str(tmp_path / "state"),
        "--driver", "libvirt", "--libvirt-uri", f"test://{node}",
        "--libvirt-domain-type", "qemu", *extra,
    ]  # fmt: skip


def test_the_cli_options_reach_the_config(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    argv = _argv(
        tmp_path,
        "--libvirt-tool-prefix", "nsenter --mount=/proc/7/ns/mnt --",
        "--libvirt-copy-bandwidth-mib", "1.5",
        "--sim-copy-rate", "12",  # (the sim's option, beside them)
    )  # fmt: skip
    result = CliRunner().invoke(agent_app, argv)
    assert result.exit_code == 0, result.output
    [config] = seen
    assert config.libvirt_tool_prefix == "nsenter --mount=/proc/7/ns/mnt --"
    assert (config.libvirt_copy_bandwidth_mib, config.sim_copy_rate) == (1.5, 12.0)
    seen.clear()
    assert CliRunner().invoke(agent_app, _argv(tmp_path)).exit_code == 0
    assert [(c.libvirt_tool_prefix, c.libvirt_copy_bandwidth_mib) for c in seen] == [(None, None)]


def test_the_cli_refuses_a_bad_bandwidth_in_one_line(
    agent_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[AgentConfig] = []
    monkeypatch.setattr("bollard.agent.process.run_agent", seen.append)
    result = CliRunner().invoke(agent_app, _argv(tmp_path, "--libvirt-copy-bandwidth-mib", "0"))
    assert result.exit_code != 0
    assert "--libvirt-copy-bandwidth-mib" in result.output and "Traceback" not in result.output
    assert seen == []


def test_help_lists_the_options(agent_app: typer.Typer) -> None:
    shown = CliRunner().invoke(agent_app, ["agent", "--help"], env={"COLUMNS": "200"}).output
    assert "--libvirt-tool-prefix" in shown and "--libvirt-copy-bandwidth-mib" in shown
