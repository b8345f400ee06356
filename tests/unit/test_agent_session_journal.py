"""The real agent's journal, over a real WebSocket to a small in-test server: heartbeat sync
and acks, redelivery, queries and tombstones, stale epochs, cancel, injected faults, a crash
of a real agent process and its restart, and the cancel hooks."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bollard.agent.executor import CRASH_EXIT_CODE
from bollard.domain.states import PowerState
from bollard.sim import Fabric, FaultMode, SimVm
from tests.unit.test_agent_session import (
    VM,
    FakeServer,
    Msg,
    agent,
    answer_to,
    command,
    make_config,
    run,
)


def journal_of(beat: Msg) -> dict[str, Msg]:
    return {e["command_id"]: e for e in beat["journal"]}


def carries(cid: str, state: str | None = None) -> Any:
    def match(beat: Msg) -> bool:
        entry = journal_of(beat).get(cid)
        return entry is not None and (state is None or entry["state"] == state)

    return match


def host_with_vm(tmp_path: Path, power: PowerState = PowerState.STOPPED, epoch: int = 4) -> Any:
    host = Fabric(tmp_path / "fabric").host("node-1")
    host.ensure_host(8, 4096)
    host.put_vm(SimVm(uuid=VM, name="web", vcpus=1, memory_mb=128, power=power, epoch=epoch))
    return host


async def collect_until(srv: FakeServer, type_: str, where: Any, timeout: float = 5.0) -> list[Msg]:
    """Every message up to and including the first of ``type_`` matching ``where``."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            _, msg = await srv.inbox.get()
            seen.append(msg)
            if msg.get("type") == type_ and where(msg):
                return seen


def test_heartbeats_carry_journal_entries_until_acked(tmp_path: Path) -> None:
    host_with_vm(tmp_path)

    async def go() -> None:
        config = make_config(tmp_path, 0)
        async with (
            FakeServer(heartbeat_interval=0.05).running() as srv,
            agent(make_config(tmp_path, srv.port)),
        ):
            _, hello = await srv.expect("hello")
            assert (hello["journal_entries"], hello["corrupt_entries"]) == (0, 0)
            _, beat = await srv.expect("heartbeat")
            assert beat["journal"] == []
            await srv.send(command("c1", "start"))
            _, answer = await srv.expect("answer", answer_to("c1"))
            # Sent again and again until acknowledged.
            for _ in range(3):
                _, beat = await srv.expect("heartbeat", carries("c1", "COMPLETED"))
            entry = journal_of(beat)["c1"]
            assert (entry["ok"], entry["result"], entry["command"]) == (
                True,
                answer["result"],
                "start",
            )
            await srv.send({"type": "ack", "entries": {"c1": "RECEIVED"}})  # stale state
            await srv.expect("heartbeat", carries("c1"))
            await srv.send({"type": "ack", "entries": {"c1": "COMPLETED", "zz": "FAILED"}})
            await srv.expect("heartbeat", lambda b: not b["journal"])
            journal_dir = config.state_dir / "journal"
            assert not (journal_dir / "c1.json").exists()  # pruned...
            assert "c1" in (journal_dir / "finished.jsonl").read_text()  # ...to a record
            # A query still finds it, and a redelivery is still not executed.
            await srv.send({"type": "query", "query_id": "q", "command_id": "c1"})
            _, result = await srv.expect("query_result")
            assert result["entry"]["state"] == "COMPLETED" and result["vm"]["uuid"] == VM
            await srv.send(command("c1", "start"))
            _, again = await srv.expect("answer", answer_to("c1"))
            assert again == answer
        (config.state_dir / "journal" / "junk.json").write_text("{torn")
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            _, hello = await srv.expect("hello")
            assert (hello["journal_entries"], hello["corrupt_entries"]) == (0, 1)
        host = Fabric(tmp_path / "fabric").host("node-1")
        assert [op.command_id for op in host.executed()] == ["c1"]

    run(go())


def test_a_command_delivered_twice_runs_once_and_is_answered_twice(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path)

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            await srv.send(command("c1", "start"))
            await srv.send(command("c1", "start"))  # while it runs
            _, first = await srv.expect("answer", answer_to("c1"))
            await srv.send(command("c1", "start"))  # after it ran
            await srv.send(command("c2", "stop"))
            seen = await collect_until(srv, "answer", answer_to("c2"))
            answers = [m for m in seen if m.get("type") == "answer" and m["command_id"] == "c1"]
            assert answers == [first]
            assert first["ok"] is True

    run(go())
    assert [(op.command_id, op.command) for op in host.executed()] == [
        ("c1", "start"),
        ("c2", "stop"),
    ]


def test_dropped_answer_is_delivered_by_the_heartbeat(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path)
    host.faults.set("start", FaultMode.DROP_ANSWER)

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            await srv.send(command("c1", "start"))
            seen = await collect_until(srv, "heartbeat", carries("c1", "COMPLETED"))
            assert not [m for m in seen if m.get("type") == "answer"]
            entry = journal_of(seen[-1])["c1"]
            assert entry["ok"] is True and entry["result"]["vm"]["power"] == "running"
            assert [v["power"] for v in seen[-1]["vms"]] == ["running"]
            assert host.faults.all() == []
            await srv.send(command("c2", "stop"))  # the fault fired once only
            _, stopped = await srv.expect("answer", answer_to("c2"))
            assert stopped["ok"] is True

    run(go())


def test_query_for_an_unknown_command_refuses_it_later(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path, PowerState.RUNNING)

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            query = {"type": "query", "query_id": "q1", "command_id": "late", "vm_uuid": VM}
            await srv.send(query)
            await srv.send(command("late", "stop"))  # arrives after the reconciler asked
            got: dict[str, Msg] = {}
            async with asyncio.timeout(5):
                while len(got) < 2:  # either may come first
                    _, msg = await srv.inbox.get()
                    if msg["type"] in ("query_result", "answer"):
                        got[msg["type"]] = msg
            result, refused = got["query_result"], got["answer"]
            assert (result["query_id"], result["command_id"], result["entry"]) == (
                "q1",
                "late",
                None,
            )
            assert result["vm"]["power"] == "running"
            assert refused["command_id"] == "late" and refused["ok"] is False
            assert refused["error"]["code"] == "never-received"

    run(go())
    assert host.executed() == []
    vm = host.get_vm(VM)
    assert vm is not None and vm.power == PowerState.RUNNING


def test_stale_epoch_is_refused(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path, epoch=7)

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            await srv.expect("heartbeat")
            await srv.send(command("old", "start"))  # epoch 4 < 7
            _, refused = await srv.expect("answer", answer_to("old"))
            assert refused["error"]["code"] == "stale-epoch"
            _, beat = await srv.expect("heartbeat", carries("old", "FAILED"))
            assert journal_of(beat)["old"]["error"]["code"] == "stale-epoch"

    run(go())
    assert host.executed() == []


def test_cancel_of_a_hung_command(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path)
    host.faults.set("start", FaultMode.HANG)

    async def go() -> None:
        async with (
            FakeServer(heartbeat_interval=0.05).running() as srv,
            agent(make_config(tmp_path, srv.port)),
        ):
            await srv.expect("heartbeat")
            await srv.send(command("c1", "start"))
            await srv.expect("heartbeat", carries("c1", "PROCESSING"))
            await srv.send({"type": "cancel", "command_id": "c1"})
            _, answer = await srv.expect("answer", answer_to("c1"))
            assert answer["ok"] is False and answer["error"]["code"] == "cancelled"
            _, beat = await srv.expect("heartbeat", carries("c1", "FAILED"))
            assert "may have taken effect" in journal_of(beat)["c1"]["note"]
            await srv.send({"type": "cancel", "command_id": "c1"})  # finished: ignored
            await srv.send(command("c2", "start"))  # the agent goes on
            _, started = await srv.expect("answer", answer_to("c2"))
            assert started["ok"] is True

    run(go())


def test_crash_agent_fault_kills_a_real_agent_and_the_restart_reports_it(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path)
    host.faults.set("start", FaultMode.CRASH_AGENT)

    async def go() -> None:
        async with FakeServer().running() as srv:
            config = make_config(tmp_path, srv.port)
            argv = ["-m", "bollard", "agent", "--server", config.server_url, "--node", "node-1"]
            argv += ["--token-file", str(config.token_file), "--state-dir", str(config.state_dir)]
            argv += ["--fabric-dir", str(config.fabric_dir), "--sim-latency", "0.01"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, stderr=asyncio.subprocess.PIPE
            )
            try:
                await srv.expect("heartbeat", timeout=15)
                await srv.send(command("c1", "start"))
                async with asyncio.timeout(10):
                    _, stderr = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
            assert proc.returncode == CRASH_EXIT_CODE, stderr.decode()
            assert "crashing the agent (injected fault)" in stderr.decode()
            entry = json.loads((config.state_dir / "journal" / "c1.json").read_text())
            assert entry["state"] == "PROCESSING"
            vm = host.get_vm(VM)
            assert vm is not None and vm.power == PowerState.STOPPED  # the driver never acted
            assert host.executed() == [] and host.faults.all() == []

            async with agent(config):
                _, hello = await srv.expect("hello")
                assert hello["journal_entries"] == 1
                _, beat = await srv.expect("heartbeat")  # the first one reports it
                interrupted = journal_of(beat)["c1"]
                assert interrupted["state"] == "INTERRUPTED"
                assert "restarted while the command was PROCESSING" in interrupted["note"]
                await srv.send(command("c1", "start"))  # redelivered: not run again
                _, answer = await srv.expect("answer", answer_to("c1"))
                assert answer["ok"] is False and answer["error"]["code"] == "interrupted"
            assert host.executed() == []

    run(go())


def test_cancel_hooks_abort_supervised_jobs_at_start_and_on_disconnect(tmp_path: Path) -> None:
    host = host_with_vm(tmp_path)
    host.jobs.start("before", "migrate", 3600.0)
    host.jobs.start("alone", "copy", 3600.0, supervised=False)

    async def go() -> None:
        async with FakeServer().running() as srv, agent(make_config(tmp_path, srv.port)):
            conn1, _ = await srv.expect("hello")
            before = host.jobs.get("before")
            assert before is not None and before.abort_reason == (
                "aborted by cancel hook: agent restarted"
            )
            await srv.expect("heartbeat")
            host.jobs.start("during", "migrate", 3600.0)
            srv.conns[conn1].transport.abort()
            await srv.expect("hello")  # reconnected: the hook ran in between
            during = host.jobs.get("during")
            assert during is not None
            assert during.abort_reason == "aborted by cancel hook: lost the server connection"
            alone = host.jobs.get("alone")
            assert alone is not None and alone.aborted_at is None

    run(go())
