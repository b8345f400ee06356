"""Removing nodes and rotating their agent tokens, against a real server and real agents (and
raw WebSocket sessions): when deletion is refused, what `--force` does, and that a deleted
node's or a rotated-out token is refused by the gateway from then on."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from sqlalchemy import insert
from typer.testing import CliRunner, Result
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bollard.cli.main import app as cli
from bollard.domain.ids import new_id, new_uuid
from bollard.domain.protocol import AGENT_PATH, Capacity, Hello
from bollard.domain.states import TaskStatus
from bollard.store import tasks
from bollard.store.tables import host_vms
from tests.support.cluster import AgentThread, ServerThread, wait_until

DEADLINE = 10.0


async def open_session(server: ServerThread, node: str, token: str) -> ClientConnection | str:
    """An agent's session as the gateway sees it: the open connection once welcomed, else
    why it was refused."""
    url = server.url.replace("http", "ws", 1) + AGENT_PATH
    try:
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    except InvalidStatus as exc:
        return f"refused at the upgrade (HTTP {exc.response.status_code})"
    hello = Hello(
        node=node, incarnation=new_uuid(), boot_id="boot-1", driver="sim",
        capacity=Capacity(vcpus=2, memory_mb=2048),
    )  # fmt: skip
    try:
        await ws.send(hello.model_dump_json())
        reply = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    except ConnectionClosed as exc:  # before its error message could be read
        code = exc.rcvd.code if exc.rcvd else None
        return "refused: unauthorized (4401)" if code == 4401 else f"closed ({code})"
    if reply.get("type") == "welcome":
        return ws
    await ws.close()
    return f"refused: {reply.get('code')}"


async def refused(server: ServerThread, node: str, token: str) -> str:
    outcome = await open_session(server, node, token)
    assert isinstance(outcome, str), "the session was welcomed"
    return outcome


def events_of(server: ServerThread, node: str, kind: str) -> list[dict[str, object]]:
    items = server.client.get("/events", params={"node": node, "limit": 1000}).json()["items"]
    return [e for e in items if e["kind"] == kind]


def test_a_node_that_owns_vms_is_not_deleted_even_forced(
    cluster: tuple[ServerThread, list[AgentThread]],
) -> None:
    server, _ = cluster
    body = {"name": "keep1", "vcpus": 1, "memory_mb": 64, "node": "node1"}
    task = server.client.post("/vms", json=body).json()["task"]["id"]
    assert server.client.get(f"/tasks/{task}/wait", params={"timeout": 20}).json()["state"] == (
        "succeeded"
    )
    for force in ("false", "true"):
        answer = server.client.delete("/nodes/node1", params={"force": force})
        assert answer.status_code == 409, answer.text
        assert "still owns VMs keep1" in answer.json()["error"]["message"]
    assert server.client.get("/nodes/node1").status_code == 200
    assert "node1" in server.runtime.gateway.sessions


def test_a_connected_node_needs_force_and_its_agent_cannot_come_back(
    cluster: tuple[ServerThread, list[AgentThread]], tmp_path: Path
) -> None:
    server, _ = cluster
    token = (tmp_path / "node2.token").read_text().strip()
    plain = server.client.delete("/nodes/node2")
    assert plain.status_code == 409
    assert "its agent is connected" in plain.json()["error"]["message"]
    assert "--force" in plain.json()["error"]["message"]

    forced = server.client.delete("/nodes/node2", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert forced.json()["forced"] is True and forced.json()["session_closed"] is True
    assert server.client.get("/nodes/node2").status_code == 404
    wait_until(lambda: "node2" not in server.runtime.gateway.sessions, "node2's session to end")
    # Its agent (still running, redialing) and anyone with its token are refused.
    outcome = asyncio.run(refused(server, "node2", token))
    assert "unauthorized" in outcome, outcome
    assert "node2" not in server.runtime.gateway.sessions
    [event] = events_of(server, "node2", "node.deleted")
    assert event["actor"] == "admin" and "forced" in str(event["message"])
    # The other node is untouched.
    assert server.client.get("/nodes/node1").json()["connected"] is True


def test_leftovers_on_the_host_and_unfinished_tasks(server: ServerThread) -> None:
    assert server.client.post("/nodes", json={"name": "spare"}).status_code == 201
    now = server.runtime.clock.now()
    with server.runtime.db.write() as conn:
        conn.execute(
            insert(host_vms).values(
                node="spare", uuid=new_uuid(), name="stray", power="running", vcpus=1,
                memory_mb=64, epoch=1, seq=1, changed_at=now,
            )
        )  # fmt: skip
        task = tasks.create(
            conn, id=new_id(), type="flush", vm_uuid=None, vm_name=None, node="spare",
            params={"during": "flushing"}, now=now,
        )  # fmt: skip
    busy = server.client.delete("/nodes/spare", params={"force": "true"})
    assert busy.status_code == 409
    assert f"unfinished tasks {task.id} (flush)" in busy.json()["error"]["message"]
    with server.runtime.db.write() as conn:
        tasks.set_state(conn, task.id, TaskStatus.SUCCEEDED, now)

    leftovers = server.client.delete("/nodes/spare")
    assert leftovers.status_code == 409
    assert "its host still reports VMs stray" in leftovers.json()["error"]["message"]
    forced = server.client.delete("/nodes/spare", params={"force": "true"}).json()
    assert forced["forgotten_vms"] == ["stray"] and forced["session_closed"] is False
    assert server.client.get("/nodes/spare").status_code == 404
    # The name is free again: a new node of that name starts clean.
    assert server.client.post("/nodes", json={"name": "spare"}).status_code == 201


def test_a_rotated_token_old_refused_new_accepted(server: ServerThread) -> None:
    old = server.client.post("/nodes", json={"name": "rot"}).json()["token"]

    async def scenario() -> None:
        session = await open_session(server, "rot", old)
        assert not isinstance(session, str), session
        kept = await asyncio.to_thread(server.client.post, "/nodes/rot/token")
        assert kept.status_code == 200, kept.text
        assert kept.json()["session"] == "kept"
        new = kept.json()["token"]
        assert new != old
        assert "rot" in server.runtime.gateway.sessions  # the connected session stays
        assert "unauthorized" in await refused(server, "rot", old)
        replacement = await open_session(server, "rot", new)  # supersedes the first
        assert not isinstance(replacement, str), replacement
        closed = await asyncio.to_thread(
            server.client.post, "/nodes/rot/token", params={"disconnect": "true"}
        )
        assert closed.json()["session"] == "closed"
        await asyncio.wait_for(replacement.wait_closed(), DEADLINE)
        assert replacement.close_code == 4401
        assert "unauthorized" in await refused(server, "rot", new)
        newest = await open_session(server, "rot", closed.json()["token"])
        assert not isinstance(newest, str), newest
        await newest.close()
        await session.close()

    asyncio.run(scenario())
    rotations = events_of(server, "rot", "node.token_rotated")
    assert [e["data"]["session"] for e in rotations] == ["kept", "closed"]  # type: ignore[index]
    assert {e["actor"] for e in rotations} == {"admin"}
    assert old not in json.dumps(rotations)


def test_a_rotated_agent_reconnects_with_its_new_token(
    server: ServerThread, tmp_path: Path
) -> None:
    agent = AgentThread(server, "n1", tmp_path)
    try:
        wait_until(lambda: server.client.get("/nodes/n1").json()["connected"], "n1 to connect")
        rotated = server.client.post("/nodes/n1/token", params={"disconnect": "true"}).json()
        agent.stop()
        wait_until(lambda: "n1" not in server.runtime.gateway.sessions, "n1's session to end")
        agent.config.token_file.write_text(rotated["token"])
        agent = AgentThread(server, "n1", tmp_path, config=agent.config)
        wait_until(lambda: server.client.get("/nodes/n1").json()["connected"], "n1 to return")
    finally:
        agent.stop()


def run(server: ServerThread, tmp_path: Path, *args: str) -> Result:
    env = {
        "BOLLARD_URL": server.url,
        "BOLLARD_TOKEN": server.token,
        "BOLLARD_CONFIG_DIR": str(tmp_path / "cli-config"),
    }
    return CliRunner().invoke(cli, list(args), env=env)


def test_the_node_delete_and_token_rotate_commands(server: ServerThread, tmp_path: Path) -> None:
    assert server.client.post("/nodes", json={"name": "c1"}).status_code == 201
    token_file = tmp_path / "c1.token"
    rotate = ("node", "token", "rotate", "c1")
    rotated = run(server, tmp_path, *rotate, "--token-file", str(token_file))
    assert rotated.exit_code == 0, rotated.output
    assert "old one is refused" in rotated.stdout and "not connected here" in rotated.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    new = token_file.read_text().strip()
    assert new and new not in rotated.stdout
    shown = json.loads(run(server, tmp_path, *rotate, "-o", "json").stdout)
    assert shown["node"] == "c1" and shown["token"] and shown["session"] == "none"

    deleted = run(server, tmp_path, "node", "delete", "c1")
    assert deleted.exit_code == 0, deleted.output
    assert "Node c1 deleted" in deleted.stdout
    missing = run(server, tmp_path, "node", "delete", "c1")
    assert missing.exit_code != 0 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
