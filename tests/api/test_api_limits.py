"""Request limits, the access log and the file modes of the data dir."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.cluster import ServerThread

MIB = 1024 * 1024


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw_request(port: int, head: str, timeout: float = 10.0) -> bytes:
    """Send only a request's head (no body) and read what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in data:
                break
        return b"".join(chunks)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(
    server: ServerThread,
) -> None:
    # The body is never sent: a server that waited for it would time out instead of answering.
    answer = _raw_request(
        server.config.port,
        "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {2 * MIB}\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the limit is 1 MiB" in answer


def test_a_bad_content_length_is_refused(server: ServerThread) -> None:
    answer = _raw_request(
        server.config.port,
        "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Length: -5\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]


def test_a_chunked_body_over_the_limit_is_refused(server: ServerThread) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"name": "big", "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    r = server.client.post("/vms", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["message"] == "request body too large: the limit is 1 MiB"


def test_a_body_under_the_limit_is_read(server: ServerThread) -> None:
    pad = "x" * (MIB - 200)
    r = server.client.post("/vms", json={"name": "under", "vcpus": 1, "pad": pad})
    assert r.status_code == 422, r.text  # read and validated (no memory_mb), not refused


def test_the_access_log_names_each_request(tmp_path: Path) -> None:
    srv = ServerThread(tmp_path / "server", "sqlite:///" + str(tmp_path / "b.db"))
    try:
        assert srv.client.get("/nodes").status_code == 200
        bad = httpx.get(
            srv.url + "/api/v1/vms", headers={"Authorization": "Bearer not-a-token"}, timeout=10
        )
        assert bad.status_code == 401
        assert srv.client.get("/vms/nope?x=secret-query").status_code == 404
    finally:
        srv.stop()  # flushes the log
    log_file = tmp_path / "server" / "access.log"
    lines = log_file.read_text().splitlines()
    assert any(" GET /api/v1/nodes 200 " in line for line in lines), lines
    assert any(" GET /api/v1/vms 401 actor=- " in line for line in lines), lines
    assert any(" GET /api/v1/vms/nope 404 " in line for line in lines), lines
    text = log_file.read_text()
    assert srv.token not in text and "not-a-token" not in text and "secret-query" not in text
    assert all(line.split()[-2].endswith("ms") for line in lines)
    assert _mode(log_file) == 0o600


def test_data_dir_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db_file = data / "bollard.db"
    srv = ServerThread(data, "sqlite:///" + str(db_file))
    try:
        assert srv.client.get("/status").status_code == 200
        assert _mode(data) == 0o700
        assert _mode(db_file) == 0o600
        for extra in (data / "bollard.db-wal", data / "bollard.db-shm"):
            if extra.exists():
                assert _mode(extra) == 0o600, extra
        assert _mode(data / "admin.token") == 0o600
    finally:
        srv.stop()
    assert _mode(data / "access.log") == 0o600
