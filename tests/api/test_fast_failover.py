"""Fast failover (issue 21): when an agent's session ends, its node's power is read at once; a
host that reads off is dead, fenced (power off, confirmed off) and its HA VMs recovered
without waiting for `health.dead_after`. A host that reads on, `fencing.fast` off, or a frozen
node (a clean reboot announced) follows the usual path. `QuickFence.fence_if_off` polls the
power until it reads off. Here `health.dead_after` is huge whenever the usual path must not be
what acts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bollard.domain.states import NodeHealth
from bollard.server.health import quick_fence as quick_fence_module
from bollard.server.health.quick_fence import DROPPED
from bollard.sim.power import power_off_host
from bollard.store import nodes
from tests.api.test_api_migrate import make_vm, running_on
from tests.api.test_api_vms import Cluster
from tests.api.test_ha_maintenance import events_of, node_of, sim_power
from tests.support.cluster import ServerThread, wait_until

NEVER = 1000  # health.dead_after (its maximum: 500 s at 0.5 s heartbeats): never, here


def _setup(cluster: Cluster, dead_after: int = NEVER, **settings: Any) -> httpx.Client:
    c = cluster[0].client
    for key, value in {"health.startup_grace": 0, "health.dead_after": dead_after,
                       **settings}.items():  # fmt: skip
        assert c.put(f"/settings/{key}", json={"value": value}).status_code == 200
    return c


def _dead_events(c: httpx.Client, node: str) -> list[dict[str, Any]]:
    return [e for e in events_of(c, node=node) if e["kind"] == "node.dead"]


def _recovered(cluster: Cluster, name: str) -> dict[str, Any] | None:
    vm: dict[str, Any] = cluster[0].client.get(f"/vms/{name}").json()
    if vm["node"] == "node1" and vm["task_id"] is None and vm["status"] == "ACTIVE":
        return vm
    return None


def test_a_host_that_reads_off_is_fenced_and_its_vms_recovered_at_once(cluster: Cluster) -> None:
    c = _setup(cluster)
    fabric = sim_power(cluster, "node2")
    web = make_vm(cluster, "web", node="node2")
    quiet = make_vm(cluster, "quiet", node="node2", ha="none")
    agents = cluster[1]

    power_off_host(fabric, "node2")
    off_at = time.monotonic()
    agents.pop(1).stop()
    vm = wait_until(lambda: _recovered(cluster, "web"), "web to run on node1")
    took = time.monotonic() - off_at
    assert took < 10, took  # the dead wait alone would be for ever here (dead_after huge)
    assert vm["epoch"] == 2
    assert running_on(cluster, web["uuid"]) == ["node1"]
    assert node_of(c, "node2")["health"] == "fenced"
    dead = _dead_events(c, "node2")
    assert len(dead) == 1 and DROPPED in dead[0]["message"], dead
    assert dead[0]["data"]["fast"] is True
    kinds = [e["kind"] for e in events_of(c, node="node2")]  # oldest first
    since = kinds[len(kinds) - kinds[::-1].index("node.up") :]  # since it was last up
    assert since.index("node.suspect") < since.index("node.dead") < since.index("node.fenced")
    assert c.get("/vms/quiet").json()["vm_state"] == "stopped"  # not HA: off with its node
    assert running_on(cluster, quiet["uuid"]) == []


def test_a_host_that_still_reads_on_waits_for_the_dead_threshold(cluster: Cluster) -> None:
    c = _setup(cluster)
    sim_power(cluster, "node2")
    make_vm(cluster, "web", node="node2")
    cluster[1].pop(1).stop()  # the agent dies; its host (and web) keep running
    # (Suspect by the fast path's look, "its agent's session ended", or by the health
    # monitor's tick, "heartbeats missed": whichever comes first.)
    wait_until(lambda: node_of(c, "node2")["health"] == "suspect", "node2 suspect")
    _setup(cluster, dead_after=3)  # now the usual path declares it dead, and it is fenced
    wait_until(lambda: _recovered(cluster, "web"), "web to run on node1")
    dead = _dead_events(c, "node2")
    assert len(dead) == 1 and "heartbeats missed" in dead[0]["message"], dead


def test_without_fencing_fast_a_host_off_waits_for_the_dead_threshold(cluster: Cluster) -> None:
    c = _setup(cluster, **{"fencing.fast": False})
    fabric = sim_power(cluster, "node2")
    make_vm(cluster, "web", node="node2")
    power_off_host(fabric, "node2")
    cluster[1].pop(1).stop()
    wait_until(lambda: node_of(c, "node2")["health"] == "suspect", "node2 suspect")
    _setup(cluster, dead_after=3)
    wait_until(lambda: _recovered(cluster, "web"), "web to run on node1")
    dead = _dead_events(c, "node2")
    assert len(dead) == 1 and "heartbeats missed" in dead[0]["message"], dead


def test_a_frozen_node_is_neither_fast_failed_nor_fenced(cluster: Cluster) -> None:
    server, agents = cluster
    c = _setup(cluster)
    fabric = sim_power(cluster, "node2")
    make_vm(cluster, "web", node="node2")
    with server.runtime.db.write() as conn:  # its agent announced a clean reboot
        nodes.record_shutdown(conn, "node2", "reboot", server.runtime.clock.now())
    power_off_host(fabric, "node2")
    agents.pop(1).stop()
    wait_until(lambda: node_of(c, "node2")["health"] == "suspect", "node2 suspect")
    _setup(cluster, dead_after=3)  # ha.shutdown_policy conditional: a reboot freezes
    skipped = wait_until(
        lambda: [e for e in events_of(c, node="node2") if e["kind"] == "node.fence_skipped"],
        "the fence of node2 to be skipped",
    )
    assert "frozen" in skipped[0]["message"], skipped
    assert node_of(c, "node2")["health"] == "dead"
    assert "heartbeats missed" in _dead_events(c, "node2")[0]["message"]
    assert c.get("/vms/web").json()["node"] == "node2"  # waits for its node

    with server.runtime.db.write() as conn:  # no longer frozen: fenced on the next pass
        nodes.record_shutdown(conn, "node2", None, server.runtime.clock.now())
    wait_until(lambda: _recovered(cluster, "web"), "web to run on node1")
    assert node_of(c, "node2")["health"] == "fenced"


def _on_server_loop(server: ServerThread, coro: Any) -> Any:
    loop = server.runtime._loops[0].get_loop()  # the loop the server's background tasks run on
    return asyncio.run_coroutine_threadsafe(coro, loop)  # a concurrent.futures.Future


def test_fence_if_off_polls_until_the_host_reads_off(cluster: Cluster) -> None:
    server, agents = cluster
    c = _setup(cluster, **{"fencing.fast": False})
    fabric = sim_power(cluster, "node2")
    make_vm(cluster, "web", node="node2")
    agents.pop(1).stop()
    wait_until(lambda: node_of(c, "node2")["health"] == "suspect", "node2 suspect")
    quick = server.runtime.quick_fence

    still_on = _on_server_loop(server, quick.fence_if_off("node2", why="test", wait_off=0.6))
    assert still_on.result(30) is False
    assert node_of(c, "node2")["health"] == "suspect"

    waiting = _on_server_loop(
        server, quick.fence_if_off("node2", why="its host shut down (test)", wait_off=20)
    )
    power_off_host(fabric, "node2")
    assert waiting.result(30) is True
    wait_until(lambda: _recovered(cluster, "web"), "web to run on node1")
    dead = _dead_events(c, "node2")
    assert len(dead) == 1 and "its host shut down (test)" in dead[0]["message"], dead
    assert node_of(c, "node2")["health"] == "fenced"


def test_a_health_change_under_the_compare_and_swap_does_not_lose_the_death(
    cluster: Cluster, monkeypatch: Any
) -> None:
    """The health monitor moves the node (up -> suspect) between the fast path's read and its
    compare-and-swap to dead (seen in CI: the host read off, yet the node was left for the
    usual dead wait): the fast path reads again and declares it dead all the same. Here the
    first compare-and-swap to dead is made to lose, as it does when the row changed."""
    server, agents = cluster
    c = _setup(cluster, **{"fencing.fast": False})
    fabric = sim_power(cluster, "node2")
    make_vm(cluster, "web", node="node2")
    agents.pop(1).stop()
    wait_until(lambda: not node_of(c, "node2")["connected"], "node2's session to end")
    real = quick_fence_module.nodes.set_health
    lost: list[str] = []

    def first_loses(conn: Any, node: str, new: Any, now: Any, *, expect: Any) -> bool:
        if new is NodeHealth.DEAD and not lost:
            lost.append(node)
            return False
        return bool(real(conn, node, new, now, expect=expect))

    monkeypatch.setattr(quick_fence_module.nodes, "set_health", first_loses)
    power_off_host(fabric, "node2")
    quick = server.runtime.quick_fence
    declared = _on_server_loop(server, quick.fence_if_off("node2", why="race (test)", wait_off=20))
    assert declared.result(30) is True
    assert lost == ["node2"]
    dead = _dead_events(c, "node2")
    assert len(dead) == 1 and "race (test)" in dead[0]["message"], dead
