"""Migration with the real agent over a real WebSocket: progress messages, Inspect, heartbeat
load, and a real agent process SIGKILLed during a migration and restarted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bollard.domain.states import PowerState
from bollard.sim import Fabric, JobState, SimVm
from tests.unit.test_agent_session import VM, FakeServer, Msg, agent, answer_to, make_config, run
from tests.unit.test_agent_session_journal import carries, journal_of


def two_hosts(tmp_path: Path, memory_mb: int = 1024) -> tuple[Any, Any]:
    fabric = Fabric(tmp_path / "fabric")
    source, target = fabric.host("node-1"), fabric.host("node-2")
    source.ensure_host(8, 8192)
    target.ensure_host(8, 8192)
    vm = SimVm(uuid=VM, name="web", vcpus=2, memory_mb=memory_mb, power=PowerState.RUNNING, epoch=4)
    source.put_vm(vm)
    return source, target


def migrate(cid: str, timeout: float = 30) -> Msg:
    return {
        "type": "command",
        "id": cid,
        "command": "migrate",
        "args": {"target": "node-2", "live": True, "new_epoch": 5},
        "vm_uuid": VM,
        "epoch": 4,
        "timeout": timeout,
    }


def where(tmp_path: Path) -> dict[str, tuple[str, int] | None]:
    out: dict[str, tuple[str, int] | None] = {}
    for node, vms in Fabric(tmp_path / "fabric").snapshot().items():
        vm = next((v for v in vms if v.uuid == VM), None)
        out[node] = None if vm is None else (vm.power.value, vm.epoch)
    return out


def test_migration_progress_inspect_and_load(tmp_path: Path) -> None:
    two_hosts(tmp_path, memory_mb=256)  # 0.5 s at 512 MiB/s

    async def go() -> None:
        async with FakeServer(heartbeat_interval=0.05).running() as srv:
            config = make_config(tmp_path, srv.port, sim_migration_rate=512.0)
            async with agent(config):
                _, beat = await srv.expect("heartbeat")
                assert beat["load"] == 2 / 8
                await srv.send(migrate("m1"))
                _, progress = await srv.expect("progress")
                assert progress["command_id"] == "m1" and "migrate" in progress["message"]
                await srv.send({"type": "inspect", "query_id": "q1", "vm_uuid": VM})
                _, during = await srv.expect("inspect_result")
                assert during["query_id"] == "q1" and during["job_running"] is True
                _, answer = await srv.expect("answer", answer_to("m1"))
                assert answer["ok"] is True and answer["result"]["vm"]["epoch"] == 5
                await srv.send({"type": "inspect", "query_id": "q2", "vm_uuid": VM})
                _, after = await srv.expect("inspect_result")
                assert (after["vm"], after["job_running"]) == (None, False)
                _, beat = await srv.expect("heartbeat", lambda b: b["vms"] == [])
                assert beat["load"] == 0.0
                Fabric(tmp_path / "fabric").host("node-1").set_load(1.5)
                await srv.expect("heartbeat", lambda b: b["load"] == 1.5)
        assert where(tmp_path) == {"node-1": None, "node-2": ("running", 5)}

    run(go())


def test_agent_killed_during_a_migration_aborts_it_on_restart(tmp_path: Path) -> None:
    source, target = two_hosts(tmp_path, memory_mb=4096)  # 64 s at 64 MiB/s

    async def go() -> None:
        async with FakeServer(heartbeat_interval=0.05).running() as srv:
            config = make_config(tmp_path, srv.port)
            argv = ["-m", "bollard", "agent", "--server", config.server_url, "--node", "node-1"]
            argv += ["--token-file", str(config.token_file), "--state-dir", str(config.state_dir)]
            argv += ["--fabric-dir", str(config.fabric_dir), "--sim-latency", "0.01"]
            argv += ["--sim-migration-rate", "64"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *argv, stderr=asyncio.subprocess.PIPE
            )
            try:
                await srv.expect("heartbeat", timeout=15)
                await srv.send(migrate("m1"))
                await srv.expect("progress")  # the job runs
                entry = json.loads((config.state_dir / "journal" / "m1.json").read_text())
                assert entry["state"] == "PROCESSING_IN_BACKEND"
                assert where(tmp_path) == {"node-1": ("running", 4), "node-2": ("paused", 4)}
                proc.send_signal(signal.SIGKILL)
                async with asyncio.timeout(10):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == -signal.SIGKILL
            # The migration goes on without its agent.
            job = source.jobs.get("m1")
            assert job is not None and job.migration is not None
            assert job.state(job.started_at + 1) == JobState.RUNNING

            async with agent(config):
                _, beat = await srv.expect("heartbeat", carries("m1", "FAILED"))
                entry = journal_of(beat)["m1"]
                assert entry["error"]["code"] == "aborted"
                assert entry["note"] == "aborted by cancel hook: agent restarted"
                assert entry["result"]["migration"]["vm_on"] == "node-1"
                await srv.send(migrate("m1"))  # redelivered: answered from the journal
                _, answer = await srv.expect("answer", answer_to("m1"))
                assert answer["ok"] is False and answer["error"]["code"] == "aborted"
                await srv.send({"type": "inspect", "query_id": "q", "vm_uuid": VM})
                _, seen = await srv.expect("inspect_result")
                assert seen["job_running"] is False and seen["vm"]["power"] == "running"
        # The journal and the fabric agree: not moved, no copy left on the target.
        assert where(tmp_path) == {"node-1": ("running", 4), "node-2": None}
        job = source.jobs.get("m1")
        assert job is not None and job.aborted_at is not None
        assert [op.command_id for op in source.executed()] == ["m1"]
        assert target.executed() == []

    run(go())
