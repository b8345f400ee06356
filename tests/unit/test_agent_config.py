"""Agent configuration helpers, heartbeat generations and log redaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bollard.agent.config import AgentConfig, AgentConfigError, make_driver, read_token, ws_url
from bollard.agent.logs import NodeFilter, RedactingFormatter, node_var
from bollard.agent.seq import SeqCounter


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/api/v1/agent/ws"),
        ("https://bollard.example:443/", "wss://bollard.example:443/api/v1/agent/ws"),
        ("http://h:1/prefix", "ws://h:1/prefix/api/v1/agent/ws"),
    ],
)
def test_ws_url(url: str, expected: str) -> None:
    assert ws_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://h:1", "127.0.0.1:8080", "http://"])
def test_ws_url_rejects_garbage(url: str) -> None:
    with pytest.raises(AgentConfigError):
        ws_url(url)


def test_read_token(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text("  abc  \n")
    assert read_token(f) == "abc"
    f.write_text("\n")
    with pytest.raises(AgentConfigError, match="empty"):
        read_token(f)
    with pytest.raises(AgentConfigError, match="does not exist"):
        read_token(tmp_path / "missing")


def test_make_driver_checks_driver_and_fabric(tmp_path: Path) -> None:
    base = AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s", fabric_dir=tmp_path)
    assert make_driver(base).name == "sim"
    with pytest.raises(AgentConfigError, match="unknown driver"):
        make_driver(AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s", driver="kvm"))
    with pytest.raises(AgentConfigError, match="fabric"):
        make_driver(AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s"))
    with pytest.raises(AgentConfigError, match="invalid node"):
        make_driver(
            AgentConfig("http://h:1", "../x", tmp_path / "t", tmp_path / "s", fabric_dir=tmp_path)
        )


def test_make_driver_passes_the_migration_rate(tmp_path: Path) -> None:
    from dataclasses import replace

    from bollard.agent.drivers.sim import SimDriver

    base = AgentConfig("http://h:1", "n", tmp_path / "t", tmp_path / "s", fabric_dir=tmp_path)
    driver = make_driver(replace(base, sim_migration_rate=64.0, sim_latency=0.5))
    assert isinstance(driver, SimDriver)
    assert driver.migration_duration(4096) == 64.0 and driver.migration_duration(1) == 0.5
    default = make_driver(base)
    assert isinstance(default, SimDriver) and default.migration_rate == 2048.0
    with pytest.raises(AgentConfigError, match="migration rate"):
        make_driver(replace(base, sim_migration_rate=0))


def test_seq_generations_grow_and_corruption_is_refused(tmp_path: Path) -> None:
    a = SeqCounter.load(tmp_path)
    first = [a.next(), a.next()]
    b = SeqCounter.load(tmp_path)
    assert b.generation == a.generation + 1
    assert b.next() > first[-1]
    (tmp_path / "seq").write_text("garbage")
    with pytest.raises(AgentConfigError, match="corrupt"):
        SeqCounter.load(tmp_path)


def test_log_lines_carry_the_node_and_hide_bearer_tokens() -> None:
    record = logging.LogRecord(
        "x", logging.DEBUG, __file__, 1, "> Authorization: Bearer %s", ("tok123",), None
    )
    token = node_var.set("node-7")
    try:
        NodeFilter().filter(record)
    finally:
        node_var.reset(token)
    line = RedactingFormatter("[%(node)s] %(message)s").format(record)
    assert line == "[node-7] > Authorization: Bearer ***"
