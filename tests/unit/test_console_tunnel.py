"""The pieces of the graphical console's tunnel that need no cluster: tickets on a clock of
their own, where the agent connects for a display and what it answers when it cannot, the
protocol's bounds, close reasons, and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel, ValidationError

from bollard.agent.config import AgentConfig
from bollard.agent.drivers.base import HypervisorDriver
from bollard.agent.tunnel import Refused, Tunnels, display_address, tunnel_url
from bollard.domain.errors import DriverNotFound, DriverTemporary
from bollard.domain.protocol import (
    TunnelOpen,
    TunnelRefused,
    agent_message,
    server_message,
)
from bollard.server.api.access_log import REDACTED, RedactSecrets, redact
from bollard.server.clock import Clock
from bollard.server.consoles import ConsoleTickets, close_reason

TUNNEL = "abcdefghijklmnopqrstuvwx"
UUID = "11111111-1111-4111-8111-111111111111"


class FakeClock:
    def __init__(self) -> None:
        self.at = 1000.0

    def monotonic(self) -> float:
        return self.at

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.at)


def test_a_ticket_is_taken_once_and_only_before_it_expires() -> None:
    clock = FakeClock()
    tickets = ConsoleTickets(cast(Clock, clock), ttl=30.0)
    first = tickets.issue(vm="web1", vm_uuid=UUID, node="n1", actor="olga")
    assert first.expires_at == clock.now() + timedelta(seconds=30)
    second = tickets.issue(vm="web1", vm_uuid=UUID, node="n1", actor="olga")
    assert first.value != second.value and len(first.value) >= 40
    assert tickets.take(first.value) == first
    assert tickets.take(first.value) is None  # used
    assert tickets.take("") is None and tickets.take("guess") is None
    clock.at += 30.0
    assert tickets.take(second.value) is None  # expired at 30 s
    third = tickets.issue(vm="web1", vm_uuid=UUID, node="n1", actor="olga")
    clock.at += 29.9
    assert tickets.take(third.value) == third
    for _ in range(5):
        tickets.issue(vm="web1", vm_uuid=UUID, node="n1", actor="olga")
    clock.at += 31.0
    tickets.issue(vm="web1", vm_uuid=UUID, node="n1", actor="olga")
    assert len(tickets) == 1  # the expired ones were pruned


def test_where_the_agent_connects_for_a_display() -> None:
    vnc = {"type": "vnc", "listen": "127.0.0.1", "port": 5901}
    assert display_address(vnc, "n1") == ("127.0.0.1", 5901)
    assert display_address({**vnc, "listen": "0.0.0.0"}, "n1") == ("127.0.0.1", 5901)
    assert display_address({**vnc, "listen": "::"}, "n1") == ("::1", 5901)
    assert display_address({**vnc, "listen": None}, "n1") == ("127.0.0.1", 5901)
    refusals = {
        "the VM has no graphical display now (is it running?)": None,
        "the VM's display on node n1 is spice, not VNC": {**vnc, "type": "spice"},
        "the VM's display has no port yet (is it running?)": {**vnc, "port": -1},
        "the VM's display listens on 'host.example', not an IP address": {
            **vnc,
            "listen": "host.example",
        },
    }
    for reason, display in refusals.items():
        with pytest.raises(Refused) as info:
            display_address(display, "n1")
        assert str(info.value) == reason


def test_the_tunnel_url_is_the_agents_own_with_the_tunnel_path() -> None:
    assert tunnel_url("http://h:8000", TUNNEL) == f"ws://h:8000/api/v1/agent/tunnel/{TUNNEL}"
    assert tunnel_url("https://h/prefix/", TUNNEL) == (
        f"wss://h/prefix/api/v1/agent/tunnel/{TUNNEL}"
    )


class _NoConsole:
    name = "plain"


class _Display:
    name = "displaying"

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    async def console_log(self, uuid: str, lines: int = 100) -> str:
        return ""

    async def display(self, uuid: str) -> dict[str, Any] | None:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        result: dict[str, Any] | None = self.outcome
        return result


def _refusal(driver: object, tmp_path: Path) -> str:
    """What the agent answers a TunnelOpen with, for this driver."""
    sent: list[BaseModel] = []

    async def send(msg: BaseModel) -> bool:
        sent.append(msg)
        return True

    async def main() -> None:
        config = AgentConfig(
            server_url="http://127.0.0.1:9", node="n1", token_file=tmp_path / "t",
            state_dir=tmp_path, connect_timeout=5.0,
        )  # fmt: skip
        tunnels = Tunnels(config, {}, cast(HypervisorDriver, driver), send, None)
        tunnels.open(TunnelOpen(tunnel=TUNNEL, vm_uuid=UUID))
        await asyncio.wait_for(asyncio.gather(*tunnels._tasks.values()), 10)
        assert len(tunnels) == 0

    asyncio.run(main())
    assert len(sent) == 1 and isinstance(sent[0], TunnelRefused), sent
    assert sent[0].tunnel == TUNNEL
    return sent[0].reason


def test_what_the_agent_answers_when_it_cannot_open_a_tunnel(tmp_path: Path) -> None:
    assert _refusal(_NoConsole(), tmp_path) == (
        "the driver of node n1 (plain) has no graphical console"
    )
    assert _refusal(_Display(DriverNotFound("gone")), tmp_path) == "node n1 does not have the VM"
    assert _refusal(_Display(DriverTemporary("libvirt is down")), tmp_path) == (
        "cannot read the VM's display on node n1: libvirt is down"
    )
    assert _refusal(_Display(None), tmp_path) == (
        "the VM has no graphical display now (is it running?)"
    )


def test_tunnel_messages_are_bounded() -> None:
    opened = server_message.validate_json(
        f'{{"type": "tunnel_open", "tunnel": "{TUNNEL}", "vm_uuid": "{UUID}"}}'
    )
    assert isinstance(opened, TunnelOpen) and opened.kind == "vnc"
    refused = agent_message.validate_json(
        f'{{"type": "tunnel_refused", "tunnel": "{TUNNEL}", "reason": "no"}}'
    )
    assert isinstance(refused, TunnelRefused)
    for bad in (
        {"tunnel": "../../etc", "reason": "x"},  # not a path segment of ours
        {"tunnel": "short", "reason": "x"},
        {"tunnel": TUNNEL, "reason": "x" * 201},
        {"tunnel": TUNNEL, "reason": "nul\x00"},
    ):
        with pytest.raises(ValidationError):
            TunnelRefused.model_validate(bad)
    with pytest.raises(ValidationError):
        TunnelOpen.model_validate({"tunnel": TUNNEL, "vm_uuid": UUID, "kind": "spice"})


def test_a_close_reason_is_one_line_of_at_most_123_bytes() -> None:
    assert close_reason("node n1\nis   gone") == "node n1 is gone"
    long = close_reason("é" * 100)
    assert len(long.encode()) <= 123 and long == "é" * 61  # cut at a character's boundary


def test_secret_query_parameters_are_blanked_in_log_lines() -> None:
    assert redact("/console/vnc?ticket=s3cr-et_&x=1") == f"/console/vnc?ticket={REDACTED}&x=1"
    assert redact("/console/vnc?a=1&t%69cket=s3cret") == f"/console/vnc?a=1&t%69cket={REDACTED}"
    assert redact("/vms?name=ticket&tickets=2") == "/vms?name=ticket&tickets=2"
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/console/vnc?ticket=s3cret"), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert "s3cret" not in record.getMessage() and REDACTED in record.getMessage()
