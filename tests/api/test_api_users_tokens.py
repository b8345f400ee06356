"""Users and API tokens against a real server (SQLite and PostgreSQL): creation, limits on
roles, refusal of expired, revoked and unknown tokens at once, no secret ever shown twice,
and the `bollard user` and `bollard token` commands end to end."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from bollard.cli.main import app as cli
from bollard.cli.token_cmd import parse_duration
from bollard.server.auth import hash_token
from bollard.store.tables import api_tokens
from tests.api.test_api_roles import add_user, as_token
from tests.support.cluster import ServerThread

MIB = 1024 * 1024


def set_token(server: ServerThread, token_id: str, **values: object) -> None:
    with server.runtime.db.write() as conn:
        conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(**values))


def test_users_are_created_listed_shown_and_deleted(server: ServerThread) -> None:
    c = server.client
    listed = c.get("/users").json()
    assert [(u["name"], u["role"], u["builtin"]) for u in listed["items"]] == [
        ("admin", "admin", True)
    ]
    made = c.post("/users", json={"name": "alice", "role": "operator"})
    assert made.status_code == 201 and made.json()["created_by"] == "admin"
    assert c.post("/users", json={"name": "alice", "role": "reader"}).status_code == 409
    assert c.post("/users", json={"name": "a/b", "role": "reader"}).status_code == 422
    assert c.post("/users", json={"name": "bob", "role": "root"}).status_code == 422
    system = c.post("/users", json={"name": "system", "role": "reader"})
    assert system.status_code == 422 and "reserved" in system.json()["error"]["message"]
    assert c.get("/users/alice").json()["role"] == "operator"
    assert c.get("/users/nobody").status_code == 404
    builtin = c.delete("/users/admin")
    assert builtin.status_code == 409 and "built in" in builtin.json()["error"]["message"]

    _, token = add_user(server, "carol", "reader")
    with as_token(server, token) as carol:
        assert carol.get("/vms").status_code == 200
        gone = c.delete("/users/carol")
        assert gone.json() == {"name": "carol", "tokens_deleted": 1}
        refused = carol.get("/vms")  # its tokens went with it, refused at once
        assert refused.status_code == 401
        assert "unknown token" in refused.json()["error"]["message"]
    kinds = [e["kind"] for e in c.get("/events").json()["items"]]
    assert kinds.count("user.created") == 2 and kinds.count("user.deleted") == 1
    assert "token.created" in kinds


def test_a_token_is_shown_once_and_only_its_hash_is_stored(server: ServerThread) -> None:
    add_user(server, "dave", "operator")
    made = server.client.post("/tokens", json={"user": "dave", "description": "ci"}).json()
    secret = made["token"]
    with server.runtime.db.read() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash).where(api_tokens.c.id == made["id"]))
        assert stored.scalar() == hash_token(secret)
    listing = server.client.get("/tokens", params={"user": "dave"}).text
    events = server.client.get("/events", params={"limit": 1000}).text
    for text in (listing, events):
        assert secret not in text and hash_token(secret) not in text
    assert made["id"] in listing and '"state":"active"' in listing.replace(" ", "")


def test_a_tokens_role_never_exceeds_its_users_nor_the_callers(server: ServerThread) -> None:
    add_user(server, "erin", "operator")
    too_much = server.client.post("/tokens", json={"user": "erin", "role": "admin"})
    assert too_much.status_code == 422
    assert "may not exceed its user's" in too_much.json()["error"]["message"]
    narrow = server.client.post("/tokens", json={"user": "erin", "role": "reader"}).json()
    assert narrow["role"] == "reader"
    with as_token(server, narrow["token"]) as erin:
        refused = erin.post("/vms", json={"name": "v", "vcpus": 1, "memory_mb": 64})
        assert refused.status_code == 403
        assert "has role reader" in refused.json()["error"]["message"]
    # An admin acting through an operator-limited token cannot mint an admin token.
    add_user(server, "frank", "admin")
    limited = server.client.post("/tokens", json={"user": "frank", "role": "operator"}).json()
    with as_token(server, limited["token"]) as frank:
        escalate = frank.post("/tokens", json={})
        assert escalate.status_code == 403, escalate.text
        assert frank.post("/tokens", json={"role": "operator"}).status_code == 201
        assert frank.post("/users", json={"name": "x", "role": "admin"}).status_code == 403


def test_expired_and_revoked_tokens_are_refused_at_once(server: ServerThread) -> None:
    token_id, token = add_user(server, "gina", "reader")
    with as_token(server, token) as gina:
        assert gina.get("/status").status_code == 200
        now = server.runtime.clock.now()
        set_token(server, token_id, expires_at=now - timedelta(seconds=1))
        expired = gina.get("/status")
        assert expired.status_code == 401
        message = expired.json()["error"]["message"]
        assert message.startswith(f"token {token_id} of user 'gina' expired at ")
        assert (
            server.client.get("/tokens", params={"user": "gina"}).json()["items"][0]["state"]
            == "expired"
        )
        set_token(server, token_id, expires_at=now + timedelta(days=1))
        assert gina.get("/status").status_code == 200
        assert server.client.post(f"/tokens/{token_id}/revoke").json()["state"] == "revoked"
        revoked = gina.get("/status")
        assert revoked.status_code == 401
        assert "was revoked at" in revoked.json()["error"]["message"]
    events = server.client.get("/events", params={"actor": "admin"}).json()["items"]
    assert [e["kind"] for e in events].count("token.revoked") == 1
    again = server.client.post(f"/tokens/{token_id}/revoke")  # changes nothing more
    assert again.status_code == 200
    events = server.client.get("/events", params={"actor": "admin"}).json()["items"]
    assert [e["kind"] for e in events].count("token.revoked") == 1


def test_an_expiry_is_given_in_seconds_from_now(server: ServerThread) -> None:
    add_user(server, "hank", "reader")
    before = server.runtime.clock.now()
    made = server.client.post("/tokens", json={"user": "hank", "expires_in": 3600}).json()
    delta = datetime.fromisoformat(made["expires_at"]) - before
    assert timedelta(minutes=59) < delta <= timedelta(hours=1, seconds=5)
    assert server.client.post("/tokens", json={"expires_in": 0}).status_code == 422


def test_last_use_is_written_at_most_once_a_minute(server: ServerThread) -> None:
    token_id, token = add_user(server, "ivan", "reader")

    def last_used() -> object:
        with server.runtime.db.read() as conn:
            query = select(api_tokens.c.last_used_at).where(api_tokens.c.id == token_id)
            return conn.execute(query).scalar()

    assert last_used() is None
    with as_token(server, token) as ivan:
        assert ivan.get("/status").status_code == 200
        first = last_used()
        assert first is not None
        for _ in range(5):
            assert ivan.get("/status").status_code == 200
        assert last_used() == first  # not a write per request
        set_token(server, token_id, last_used_at=server.runtime.clock.now() - timedelta(minutes=2))
        assert ivan.get("/status").status_code == 200
        assert last_used() != first


def _raw(port: int, head: str, timeout: float = 10.0) -> bytes:
    """Send a request's head only (its body never comes) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("auth", ["", "Authorization: Bearer not-a-token\r\n"])
@pytest.mark.parametrize("length", [100, 64 * MIB])
def test_no_or_a_bad_token_is_refused_before_the_body_is_read(
    server: ServerThread, auth: str, length: int
) -> None:
    # The body is never sent: a server that waited for it would time out instead.
    answer = _raw(
        server.config.port,
        f"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b'"code":"unauthorized"' in answer.replace(b" ", b"")


# -- the CLI, end to end ------------------------------------------------------------------------


def run(server: ServerThread, tmp_path: Path, *args: str, token: str | None = None) -> Result:
    env = {
        "BOLLARD_URL": server.url,
        "BOLLARD_TOKEN": token or server.token,
        "BOLLARD_CONFIG_DIR": str(tmp_path / "cli-config"),
    }
    return CliRunner().invoke(cli, list(args), env=env)


def test_the_user_and_token_commands(server: ServerThread, tmp_path: Path) -> None:
    made = run(server, tmp_path, "user", "create", "jane", "--role", "operator")
    assert made.exit_code == 0, made.output
    assert "jane" in made.stdout and "operator" in made.stdout
    users = json.loads(run(server, tmp_path, "user", "list", "-o", "json").stdout)
    assert [u["name"] for u in users] == ["admin", "jane"]
    shown = json.loads(run(server, tmp_path, "user", "show", "jane", "-o", "json").stdout)
    assert shown["role"] == "operator"

    created = run(server, tmp_path, "token", "create", "--user", "jane", "--expires", "30d",
                  "--description", "laptop")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "shown only now" in created.stdout
    secret = created.stdout.split("hash):\n", 1)[1].split()[0]
    as_jane = run(server, tmp_path, "token", "create", "-o", "json", token=secret)
    assert as_jane.exit_code == 0, as_jane.output
    own = json.loads(as_jane.stdout)
    assert own["user"] == "jane" and own["token"] and own["expires_at"] is None

    listed = json.loads(
        run(server, tmp_path, "token", "list", "--user", "jane", "-o", "json").stdout
    )
    assert len(listed) == 2 and all("token" not in t for t in listed)
    laptop = next(t for t in listed if t["description"] == "laptop")
    assert laptop["expires_at"] is not None and laptop["state"] == "active"
    table = run(server, tmp_path, "token", "list").stdout
    assert laptop["id"] in table and secret not in table

    revoked = run(server, tmp_path, "token", "revoke", laptop["id"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    refused = run(server, tmp_path, "status", token=secret)
    assert refused.exit_code != 0 and "revoked" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    bad = run(server, tmp_path, "token", "create", "--expires", "soon")
    assert bad.exit_code != 0 and "not a duration" in bad.stderr

    deleted = json.loads(run(server, tmp_path, "user", "delete", "jane", "-o", "json").stdout)
    assert deleted == {"name": "jane", "tokens_deleted": 2}


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 43200
    assert parse_duration("1d12h") == 86400 + 43200
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("90m") == 5400 and parse_duration("45s") == 45
    for bad in ("", "30", "d", "1.5d", "-1d", "0s", "11000d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
