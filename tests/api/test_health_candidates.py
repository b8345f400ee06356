"""The health monitor reads only the nodes whose health may change (nodes.health_candidates):
on real databases, no node the health rule would move is left out, and quiet healthy nodes
are not read."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bollard.domain.states import NodeHealth
from bollard.server.health.monitor import SUSPECT_AFTER, _next_health
from bollard.store import migrate, nodes
from bollard.store.db import Database

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
INTERVAL = 5.0
AGES = [None, 0.0, 1.0, 7.0, 7.6, 12.0, 14.9, 15.0, 40.0]  # seconds since the last heartbeat
# The moves (domain/nodes.py) from a new node's health, suspect, to the others
# that it cannot reach directly.
_PATH_FROM_SUSPECT: dict[NodeHealth, list[NodeHealth]] = {
    NodeHealth.SUSPECT: [],
    NodeHealth.FENCING: [NodeHealth.DEAD, NodeHealth.FENCING],
    NodeHealth.FENCE_FAILED: [NodeHealth.DEAD, NodeHealth.FENCING, NodeHealth.FENCE_FAILED],
}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.mark.parametrize("dead_after", [1, 3])
def test_every_node_the_rule_would_move_is_a_candidate(db: Database, dead_after: int) -> None:
    grid = list(itertools.product(NodeHealth, [True, False], AGES))
    with db.write() as conn:
        for i, (health, connected, age) in enumerate(grid):
            name = f"n{i:03d}"
            nodes.create(conn, name, f"hash-{i}", NOW - timedelta(hours=1))
            if age is not None:
                nodes.register_agent(
                    conn, name, incarnation=f"inc-{i}", boot_id="b", driver="sim",
                    vcpus=4, memory_mb=4096, now=NOW - timedelta(seconds=age),
                )  # fmt: skip
                if not connected:
                    nodes.mark_disconnected(conn, name, f"inc-{i}", NOW)
            for step in _PATH_FROM_SUSPECT.get(health, [health]):
                nodes.set_health(conn, name, step, NOW - timedelta(hours=1))

    silent = min(SUSPECT_AFTER, float(dead_after)) * INTERVAL
    with db.read() as conn:
        every = nodes.list_all(conn)
        candidates = {
            n.name for n in nodes.health_candidates(conn, NOW - timedelta(seconds=silent))
        }
    assert len(every) == len(grid)

    movers = {n.name for n in every if _next_health(n, NOW, INTERVAL, dead_after) is not None}
    assert movers, "the grid must hold nodes that change health"
    assert movers <= candidates, f"left out: {sorted(movers - candidates)}"

    quiet = {
        n.name
        for n in every
        if n.health is NodeHealth.UP and n.connected and n.last_heartbeat is not None
        and (NOW - n.last_heartbeat).total_seconds() < silent
    }  # fmt: skip
    assert quiet and not quiet & candidates  # healthy, connected, beating: not read
    assert all(
        n.health in (NodeHealth.UP, NodeHealth.SUSPECT)
        or (n.health is NodeHealth.DEAD and n.connected)
        for n in every
        if n.name in candidates
    )
    beating_again = {
        n.name for n in every
        if n.health is NodeHealth.DEAD and n.connected and n.last_heartbeat is not None
        and (NOW - n.last_heartbeat).total_seconds() < SUSPECT_AFTER * INTERVAL
    }  # fmt: skip
    assert beating_again and all(
        _next_health(n, NOW, INTERVAL, dead_after) is NodeHealth.UP
        for n in every
        if n.name in beating_again
    )
