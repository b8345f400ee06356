"""The sim partition flag: stored on the host record, shown by `bollard sim list`, obeyed by
the agent (no connection while it is set, a reconnect once it is lifted, nothing stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bollard.agent.config import AgentConfig
from bollard.agent.process import run_agent_async
from bollard.cli.sim_cmd import sim_app
from bollard.domain.states import PowerState
from bollard.sim import Fabric, SimVm
from bollard.sim.models import SimHostRecord
from bollard.sim.partition import PartitionFlag, heal_host, is_partitioned, partition_host
from bollard.sim.power import power_off_host, power_on_host

TOKEN = "partition-test-token"
VM = "22222222-2222-4222-8222-222222222222"
Msg = dict[str, Any]


def make_host(tmp_path: Path, node: str = "node-1") -> Fabric:
    fabric = Fabric(tmp_path / "fabric")
    fabric.host(node).ensure_host(8, 4096)
    return fabric


# the flag in the fabric


def test_a_host_is_not_partitioned_by_default_nor_when_its_record_predates_the_flag(
    tmp_path: Path,
) -> None:
    fabric = make_host(tmp_path)
    host = fabric.host("node-1")
    assert host.record().partitioned is False  # type: ignore[union-attr]
    assert not is_partitioned(host)
    old = json.loads(host.host_file.read_text())
    del old["partitioned"]
    assert SimHostRecord.model_validate(old).partitioned is False
    assert not is_partitioned(fabric.host("never-created"))


def test_partition_and_heal_set_and_clear_the_flag_idempotently(tmp_path: Path) -> None:
    fabric = make_host(tmp_path)
    host = fabric.host("node-1")
    first = partition_host(fabric, "node-1")
    assert first.changed and first.record.partitioned
    assert is_partitioned(host)
    again = partition_host(fabric, "node-1")
    assert not again.changed and again.record.partitioned
    healed = heal_host(fabric, "node-1")
    assert healed.changed and not healed.record.partitioned
    assert not is_partitioned(host)
    assert not heal_host(fabric, "node-1").changed


def test_partition_of_an_unknown_host_is_a_lookup_error(tmp_path: Path) -> None:
    fabric = make_host(tmp_path)
    with pytest.raises(LookupError):
        partition_host(fabric, "nope")
    with pytest.raises(LookupError):
        heal_host(fabric, "nope")


def test_a_partition_stops_nothing_and_outlives_power_and_agent_changes(tmp_path: Path) -> None:
    fabric = make_host(tmp_path)
    host = fabric.host("node-1")
    host.put_vm(SimVm(uuid=VM, name="web", vcpus=1, memory_mb=128, power=PowerState.RUNNING))
    boot = host.record().boot_id  # type: ignore[union-attr]
    partition_host(fabric, "node-1")
    rec = host.record()
    assert rec is not None and rec.power == "on" and rec.boot_id == boot
    assert host.get_vm(VM).power == PowerState.RUNNING  # type: ignore[union-attr]
    host.ensure_host(16, 8192)  # an agent (re)starting records its capacity
    host.set_load(0.5)
    assert is_partitioned(host)
    power_off_host(fabric, "node-1")
    assert is_partitioned(host)
    assert host.get_vm(VM).power == PowerState.STOPPED  # type: ignore[union-attr]
    power_on_host(fabric, "node-1")
    assert is_partitioned(host)  # a partition is the network's, not the host's
    heal_host(fabric, "node-1")
    assert host.record().power == "on"  # type: ignore[union-attr]


def test_partition_flag_reads_the_record(tmp_path: Path) -> None:
    fabric = make_host(tmp_path)
    flag = PartitionFlag(tmp_path / "fabric", "node-1")
    assert flag.read() is False
    partition_host(fabric, "node-1")
    assert flag.read() is True
    assert asyncio.run(flag.check()) is True
    heal_host(fabric, "node-1")
    assert asyncio.run(flag.check()) is False
    assert PartitionFlag(tmp_path / "missing", "node-1").read() is False


# the CLI


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sim_app, name="sim")
    return app


def test_cli_partition_heal_and_list(app: typer.Typer, tmp_path: Path) -> None:
    make_host(tmp_path)
    Fabric(tmp_path / "fabric").host("node-2").ensure_host(4, 2048)
    fab = ["--fabric-dir", str(tmp_path / "fabric")]
    runner = CliRunner()

    def hosts() -> dict[str, Any]:
        result = runner.invoke(app, ["sim", "list", *fab, "-o", "json"])
        assert result.exit_code == 0, result.output
        return {h["node"]: h["partitioned"] for h in json.loads(result.stdout)["hosts"]}

    assert hosts() == {"node-1": False, "node-2": False}
    result = runner.invoke(app, ["sim", "partition", "node-1", *fab])
    assert result.exit_code == 0, result.output
    assert "node-1 partitioned from the server" in result.output
    assert hosts() == {"node-1": True, "node-2": False}
    table = runner.invoke(app, ["sim", "list", *fab])
    assert "on (partitioned)" in table.output
    again = runner.invoke(app, ["sim", "partition", "node-1", *fab])
    assert again.exit_code == 0 and "already partitioned" in again.output
    result = runner.invoke(app, ["sim", "heal", "node-1", *fab])
    assert result.exit_code == 0 and "healed" in result.output, result.output
    assert hosts() == {"node-1": False, "node-2": False}
    again = runner.invoke(app, ["sim", "heal", "node-1", *fab])
    assert again.exit_code == 0 and "was not partitioned" in again.output


def test_cli_refuses_an_unknown_host(app: typer.Typer, tmp_path: Path) -> None:
    make_host(tmp_path)
    for verb in ("partition", "heal"):
        result = CliRunner().invoke(
            app, ["sim", verb, "ghost", "--fabric-dir", str(tmp_path / "fabric")]
        )
        assert result.exit_code != 0
        assert "no sim host 'ghost'" in result.output


# the agent obeys the flag


class TinyServer:
    """Welcomes agents and records connection attempts and what they send."""

    def __init__(self) -> None:
        self.attempts = 0
        self.conns: list[ServerConnection] = []
        self.inbox: asyncio.Queue[tuple[int, Msg]] = asyncio.Queue()
        self.port = 0

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.attempts += 1
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        index = len(self.conns) - 1
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "hello":
                    welcome = {"type": "welcome", "heartbeat_interval": 30.0, "server_time": 0.0}
                    await ws.send(json.dumps(welcome))
                await self.inbox.put((index, msg))

    async def expect(self, type_: str, timeout: float = 5.0) -> tuple[int, Msg]:
        async with asyncio.timeout(timeout):
            while True:
                conn, msg = await self.inbox.get()
                if msg.get("type") == type_:
                    return conn, msg

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TinyServer]:
        async with serve(
            self.handler, "127.0.0.1", 0, process_request=self.process_request
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self


class CountingReads:
    """Counts the agent's reads of the flag that found it set (a signal that it looked)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.partitioned_reads = 0
        self._lock = threading.Lock()
        original = PartitionFlag.read

        def read(flag: PartitionFlag) -> bool:
            value = original(flag)
            if value:
                with self._lock:
                    self.partitioned_reads += 1
            return value

        monkeypatch.setattr(PartitionFlag, "read", read)

    async def at_least(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.partitioned_reads < n:
                await asyncio.sleep(0.02)  # polling a counter, with a deadline


def config(tmp_path: Path, port: int) -> AgentConfig:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return AgentConfig(
        server_url=f"http://127.0.0.1:{port}",
        node="node-1",
        token_file=token_file,
        state_dir=tmp_path / "state",
        fabric_dir=tmp_path / "fabric",
        sim_latency=0.01,
        vcpus=8,
        memory_mb=4096,
        backoff_initial=0.05,
        backoff_max=0.2,
    )


@contextlib.asynccontextmanager
async def running_agent(cfg: AgentConfig) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent_async(cfg, stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await coro

    return asyncio.run(bounded())


def test_agent_drops_its_connection_while_partitioned_and_reconnects_once_healed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fabric = make_host(tmp_path)
    host = fabric.host("node-1")
    host.put_vm(SimVm(uuid=VM, name="web", vcpus=1, memory_mb=128, power=PowerState.RUNNING))
    reads = CountingReads(monkeypatch)

    async def go() -> None:
        async with TinyServer().running() as srv, running_agent(config(tmp_path, srv.port)) as ag:
            conn, hello = await srv.expect("hello")
            assert conn == 0 and hello["node"] == "node-1"
            await srv.expect("heartbeat")
            await asyncio.to_thread(partition_host, fabric, "node-1")
            # Heartbeats are 30 s apart: the agent notices the flag well before the next one.
            async with asyncio.timeout(5):
                await srv.conns[0].wait_closed()
            attempts = srv.attempts
            await reads.at_least(reads.partitioned_reads + 6)
            assert srv.attempts == attempts == 1, "the agent dialled while partitioned"
            assert not ag.done()
            vm = await asyncio.to_thread(host.get_vm, VM)
            assert vm is not None and vm.power == PowerState.RUNNING
            rec = await asyncio.to_thread(host.record)
            assert rec is not None and rec.power == "on"

            await asyncio.to_thread(heal_host, fabric, "node-1")
            conn, hello = await srv.expect("hello")
            assert conn == 1 and hello["boot_id"] == rec.boot_id
            _, beat = await srv.expect("heartbeat")
            assert [v["power"] for v in beat["vms"]] == ["running"]

    run(go())


def test_agent_started_partitioned_does_not_dial_until_healed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fabric = make_host(tmp_path)
    partition_host(fabric, "node-1")
    reads = CountingReads(monkeypatch)

    async def go() -> None:
        async with TinyServer().running() as srv, running_agent(config(tmp_path, srv.port)):
            await reads.at_least(4)
            assert srv.attempts == 0
            await asyncio.to_thread(heal_host, fabric, "node-1")
            conn, _ = await srv.expect("hello")
            assert conn == 0

    run(go())
