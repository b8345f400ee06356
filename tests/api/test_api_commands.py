"""Commands and settings through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bollard.domain.commands import CommandState
from bollard.server.assembly import prepare
from bollard.server.config import ServerConfig
from bollard.sim.fabric import Fabric
from bollard.sim.models import FaultMode
from bollard.store import commands, nodes
from tests.api.test_api_vms import Cluster, _wait
from tests.support.cluster import AgentThread, ServerThread, wait_until


def test_every_command_is_recorded_with_its_history(cluster: Cluster) -> None:
    c = cluster[0].client
    _wait(c, c.post("/vms", json={"name": "v1", "vcpus": 1, "memory_mb": 256, "start": True}))
    vm = c.get("/vms/v1").json()
    listed = c.get("/commands", params={"vm": "v1"}).json()
    assert [x["type"] for x in listed["items"]] == ["define", "start"]
    assert all(x["state"] == "COMPLETED" for x in listed["items"])
    assert all(x["agent_state"] == "COMPLETED" for x in listed["items"])
    assert all(x["vm_uuid"] == vm["uuid"] and x["node"] == vm["node"] for x in listed["items"])
    shown = c.get(f"/commands/{listed['items'][1]['id']}").json()
    assert [(h["from_state"], h["to_state"]) for h in shown["history"]] == [
        (None, "CREATED"),
        ("CREATED", "SENT"),
        ("SENT", "COMPLETED"),
    ]
    assert shown["answer"]["ok"] is True
    assert shown["answer"]["result"]["vm"]["power"] == "running"
    assert shown["epoch"] == vm["epoch"]
    by_state = c.get("/commands", params={"state": "completed,failed"}).json()
    assert by_state["total"] == 2
    assert c.get("/commands", params={"state": "BOGUS"}).status_code == 422
    assert c.get("/commands/nope").status_code == 404


def test_settings_are_typed_and_shared(server: ServerThread) -> None:
    c = server.client
    listed = {s["key"]: s for s in c.get("/settings").json()}
    assert listed["reconcile.commands.interval"]["value"] == 10.0
    assert listed["reconcile.commands.workers"]["default"] == 16
    changed = c.put("/settings/reconcile.commands.interval", json={"value": "2.5"})
    assert changed.status_code == 200 and changed.json()["value"] == 2.5
    assert c.get("/settings/reconcile.commands.interval").json()["value"] == 2.5
    assert server.runtime.settings.get("reconcile.commands.interval") == 2.5
    bad = c.put("/settings/reconcile.commands.workers", json={"value": "many"})
    assert bad.status_code == 422 and "reconcile.commands.workers" in bad.json()["error"]["message"]
    assert c.get("/settings/no.such").status_code == 404
    assert c.put("/settings/no.such", json={"value": 1}).status_code == 404


def test_restart_interrupts_commands_that_were_in_flight(tmp_path: Path, db_url: str) -> None:
    config = ServerConfig(data_dir=tmp_path / "d", db_url=db_url)
    rt = prepare(config)
    now = datetime.now(UTC)
    with rt.db.write() as conn:
        nodes.create(conn, "n1", "hash", now)
        for cid, state in [("c-created", None), ("c-sent", CommandState.SENT), ("c-done", None)]:
            commands.create(
                conn,
                id=cid,
                node="n1",
                type="start",
                args={},
                vm_uuid=None,
                epoch=1,
                task_id=None,
                deadline=now + timedelta(seconds=60),
                now=now,
            )
            if state is not None:
                assert commands.transition(conn, cid, state, now)
        assert commands.transition(conn, "c-done", CommandState.FAILED, now)
    rt.db.dispose()

    rt = prepare(config)
    with rt.db.read() as conn:
        states = {cid: commands.get(conn, cid).state for cid in ("c-created", "c-sent", "c-done")}
        history = commands.get(conn, "c-sent", with_history=True).history
    rt.db.dispose()
    assert states == {"c-created": "INTERRUPTED", "c-sent": "INTERRUPTED", "c-done": "FAILED"}
    assert (history[-1].from_state, history[-1].to_state) == ("SENT", "INTERRUPTED")
    assert history[-1].note is not None and "restarted" in history[-1].note


def test_refused_transitions_change_nothing(tmp_path: Path, db_url: str) -> None:
    rt = prepare(ServerConfig(data_dir=tmp_path / "d", db_url=db_url))
    now = datetime.now(UTC)
    with rt.db.write() as conn:
        nodes.create(conn, "n1", "hash", now)
        commands.create(
            conn,
            id="c1",
            node="n1",
            type="stop",
            args={},
            vm_uuid=None,
            epoch=1,
            task_id=None,
            deadline=now,
            now=now,
        )
        assert not commands.transition(conn, "c1", CommandState.COMPLETED, now)
        assert not commands.transition(conn, "c1", CommandState.RECONCILED, now)
        assert commands.get(conn, "c1").state == "CREATED"
        assert len(commands.get(conn, "c1", with_history=True).history) == 1
    rt.db.dispose()


def test_losing_one_node_does_not_interrupt_commands_to_another(cluster: Cluster) -> None:
    server, agents = cluster
    c = server.client
    _wait(c, c.post("/vms", json={"name": "n2vm", "vcpus": 1, "memory_mb": 256, "node": "node2"}))
    fabric = Fabric(agents[1].config.fabric_dir or "")
    fabric.host("node2").faults.set("start", FaultMode.DELAY, seconds=3.0)
    started = c.post("/vms/n2vm/start")
    wait_until(
        lambda: any(
            x["state"] == "SENT" for x in c.get("/commands", params={"vm": "n2vm"}).json()["items"]
        ),
        "the start to be sent",
    )
    agents[0].stop()
    agents.pop(0)
    task = _wait(c, started)
    assert task["state"] == "succeeded"
    start = [
        x for x in c.get("/commands", params={"vm": "n2vm"}).json()["items"] if x["type"] == "start"
    ]
    assert [x["state"] for x in start] == ["COMPLETED"]


def test_restart_retries_a_reconciliation_that_was_under_way(tmp_path: Path, db_url: str) -> None:
    config = ServerConfig(data_dir=tmp_path / "d", db_url=db_url)
    rt = prepare(config)
    now = datetime.now(UTC)
    with rt.db.write() as conn:
        nodes.create(conn, "n1", "hash", now)
        commands.create(
            conn, id="c-rec", node="n1", type="start", args={}, vm_uuid=None, epoch=1,
            task_id=None, deadline=now, now=now,
        )  # fmt: skip
        for state in (CommandState.SENT, CommandState.INTERRUPTED, CommandState.RECONCILING):
            assert commands.transition(conn, "c-rec", state, now)
    rt.db.dispose()
    rt = prepare(config)
    with rt.db.read() as conn:
        record = commands.get(conn, "c-rec", with_history=True)
    rt.db.dispose()
    assert record.state == "RECONCILE_RETRY"
    assert record.history[-1].note == "the server restarted while reconciling it"


def test_a_command_sent_over_an_earlier_session_is_settled_with_the_next(
    cluster: Cluster,
) -> None:
    """A command left SENT by an earlier session of the node (here written so directly, as
    one a server that died had sent) is INTERRUPTED when the node's agent connects again,
    and the command reconciler settles it with the new session (the agent never got it:
    it fails, and can never run later)."""
    server, agents = cluster
    now = datetime.now(UTC)
    with server.runtime.db.write() as conn:
        deadline = now + timedelta(seconds=600)
        commands.create(conn, id="c-old", node="node1", type="start", args={}, vm_uuid=None,
                        epoch=1, task_id=None, deadline=deadline, now=now)  # fmt: skip
        assert commands.transition(conn, "c-old", CommandState.SENT, now)
    agent = agents.pop(0)
    agent.stop()
    agents.insert(
        0, AgentThread(server, "node1", agent.config.state_dir.parent, config=agent.config)
    )

    def settled() -> str | None:
        with server.runtime.db.read() as conn:
            state = commands.get(conn, "c-old").state
        return state if state not in ("SENT", "INTERRUPTED", "RECONCILING") else None

    wait_until(settled, "the old command to be settled")
    with server.runtime.db.read() as conn:
        history = commands.get(conn, "c-old", with_history=True).history
    moves = [(h.from_state, h.to_state) for h in history]
    assert ("SENT", "INTERRUPTED") in moves, moves
    interrupted = next(h for h in history if h.to_state == "INTERRUPTED")
    assert interrupted.note is not None and "connected again" in interrupted.note
