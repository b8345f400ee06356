"""The pieces of the three-server chaos harness that can be tried without a cluster: the
database proxy's cuts (against a loopback echo server), the invariants on tasks and events,
and the failover measure. Quick; they make sure each check can fail."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.chaos.dbproxy import DbProxy
from tests.chaos.invariants_servers import (
    ServersSnapshot,
    check_failovers,
    check_leader_tokens,
    check_one_fence_per_death,
    check_one_recovery_at_a_time,
    check_servers_and_agents,
)
from tests.chaos.leader_watch import Failover, Seen, failovers
from tests.chaos.servers_cluster import _via, _with_option
from tests.chaos.servers_nemesis import LeaderLoss

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback server that echoes what it gets, one thread per connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[DbProxy]:
    p = DbProxy("127.0.0.1", echo_port)
    p.start()
    yield p
    p.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def test_proxy_forwards(proxy: DbProxy) -> None:
    with _connect(proxy.port) as sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"
    assert proxy.connections == 1


def test_blackhole_holds_the_bytes_until_the_cut_heals(proxy: DbProxy) -> None:
    with _connect(proxy.port) as sock:
        proxy.cut("blackhole")
        sock.sendall(b"late")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(16) == b"late"
    assert proxy.mode is None and proxy.healed_at > 0


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed or reset the connection (within 5 s)."""
    sock.settimeout(5)
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_reset_aborts_connections_and_refuses_new_ones(proxy: DbProxy) -> None:
    with _connect(proxy.port) as sock:
        sock.sendall(b"a")
        assert sock.recv(16) == b"a"
        proxy.cut("reset")
        assert _closed_by_peer(sock)
    with _connect(proxy.port) as sock:
        assert _closed_by_peer(sock)
    proxy.heal()
    with _connect(proxy.port) as sock:
        sock.sendall(b"c")
        assert sock.recv(16) == b"c"


def test_server_argv_gets_the_proxy_and_the_lease() -> None:
    argv = ["bollard", "server", "--db", "postgresql://postgres@127.0.0.1:5432/x", "--name", "a"]
    changed = _with_option(argv, "--db", _via(argv[3], 6000))
    changed = _with_option(changed, "--lease-ttl", "5")
    assert changed == [
        "bollard", "server", "--db", "postgresql://postgres@127.0.0.1:6000/x", "--name", "a",
        "--lease-ttl", "5",
    ]  # fmt: skip


def _task(kind: str, start: float, end: float | None, **more: Any) -> dict[str, Any]:
    return {
        "id": f"{kind}-{start}",
        "type": kind,
        "state": "succeeded" if end is not None else "running",
        "server": "s1",
        "node": more.get("node"),
        "vm": more.get("vm"),
        "vm_uuid": more.get("vm_uuid"),
        "created_at": (T0 + timedelta(seconds=start)).isoformat(),
        "finished_at": None if end is None else (T0 + timedelta(seconds=end)).isoformat(),
    }


def _event(eid: int, kind: str, **more: Any) -> dict[str, Any]:
    return {"id": eid, "at": T0.isoformat(), "kind": kind, "node": more.get("node"),
            "data": more.get("data", {})}  # fmt: skip


def _snap(tasks: list[dict[str, Any]], events: list[dict[str, Any]]) -> ServersSnapshot:
    return ServersSnapshot(tasks=tasks, events=events, servers={}, nodes=[])


NOW = T0 + timedelta(seconds=100)


def test_fences_one_per_death() -> None:
    deaths = [_event(1, "node.dead", node="n1"), _event(5, "node.dead", node="n1")]
    fine = [_task("fence", 0, 3, node="n1"), _task("fence", 10, 12, node="n1")]
    assert not check_one_fence_per_death(_snap(fine, deaths), NOW).offenders
    overlapping = [_task("fence", 0, 3, node="n1"), _task("fence", 2, 4, node="n1")]
    assert check_one_fence_per_death(_snap(overlapping, deaths), NOW).offenders
    three = [*fine, _task("fence", 20, 21, node="n1")]
    found = check_one_fence_per_death(_snap(three, deaths), NOW).offenders
    assert found and "3 fence task(s) for 2 death(s)" in found[0]


def test_recoveries_one_at_a_time() -> None:
    one = {"vm": "v", "vm_uuid": "u1"}
    fine = [_task("ha_restart", 0, 3, **one), _task("ha_relocate", 3, 5, **one)]
    assert not check_one_recovery_at_a_time(_snap(fine, []), NOW).offenders
    twice = [_task("ha_restart", 0, None, **one), _task("ha_restart", 50, 52, **one)]
    assert check_one_recovery_at_a_time(_snap(twice, []), NOW).vm_uuids == {"u1"}


def test_leader_tokens_grow() -> None:
    events = [_event(i, "cluster.leader", data={"server": f"s{i}", "token": t})
              for i, t in enumerate((1, 2, 4))]  # fmt: skip
    assert not check_leader_tokens(_snap([], events)).offenders
    events.append(_event(9, "cluster.leader", data={"server": "s9", "token": 4}))
    assert check_leader_tokens(_snap([], events)).offenders


def test_servers_and_agents() -> None:
    def server(sid: str, state: str, agents: int) -> dict[str, Any]:
        return {"id": sid, "name": sid, "state": state, "agents": agents}

    nodes = [{"name": "n1", "connected": True}, {"name": "n2", "connected": True}]
    good = ServersSnapshot(
        [], [], {"leader": "a", "items": [server("a", "up", 2), server("b", "up", 0)]}, nodes
    )
    assert not check_servers_and_agents(good, 2).offenders
    nodes[1]["connected"] = False
    bad = ServersSnapshot(
        [], [], {"leader": "z", "items": [server("a", "up", 1), server("b", "gone", 1)]}, nodes
    )
    found = check_servers_and_agents(bad, 2).offenders
    assert len(found) == 5, found


def test_failover_measure_and_bound() -> None:
    seen = [Seen(10.0, "old", "server1"), Seen(14.0, None, None), Seen(16.5, "new", "s2")]
    loss = LeaderLoss(11.0, "old", "server1", "kill")
    [failover] = failovers(seen, [loss])
    assert failover.seconds == pytest.approx(5.5) and failover.successor == "s2"
    assert not check_failovers([failover], lease_ttl=5.0, t0=0.0).offenders
    assert check_failovers([failover], lease_ttl=2.0, t0=0.0).offenders
    never = Failover(LeaderLoss(20.0, "new", "s2", "cut"), None, None)
    assert "never" in check_failovers([never], lease_ttl=5.0, t0=0.0).offenders[0]
