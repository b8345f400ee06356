"""Chaos with three servers on one PostgreSQL database (issue 23): random VM operations, each
sent to a live server drawn at random, while a seeded nemesis SIGKILLs the leader, servers
holding agents, the owners of running migrations and agents, and cuts servers from the
database (a proxy of the harness's own); then the cluster settles and the invariants are
checked: those of the one-server runs (every command terminal, records agree with the
fabric, no command ran twice, no VM on two hosts, watched throughout), and every task ended,
no node fenced twice for one death, no VM recovered twice at once, every server up with a
leader, every agent connected again, and a new leader within two lease periods of each loss
of the leader.

Each run has a database of its own, created with psycopg and dropped at the end; without
PostgreSQL on 127.0.0.1:5432 (BOLLARD_TEST_PG) the tests are skipped with the reason.

The seed is printed at the start and in every failure; ``BOLLARD_CHAOS_SEED=<seed>`` replays
the operations and the nemesis's schedule (what each strike finds still depends on timing).
The short run is in `make test`'s serial pass (it starts seven processes and keeps both
cores busy; under a minute here); the long one is `make chaos` (``BOLLARD_CHAOS_OPS``, default
200). ``BOLLARD_CHAOS_MIGRATE=0`` and ``BOLLARD_CHAOS_FENCE=1`` work as in test_chaos.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness_servers import ServersChaosConfig, run_chaos_servers
from tests.chaos.test_chaos import _OPT_INS, FENCE, LONG_OPS, MIGRATE, PYTEST, SHORT_OPS
from tests.support.databases import postgres_database, postgres_unavailable

MIGRATION_RATE = 40.0  # MB/s: a 64 MB VM migrates for 1.6 s, long enough to kill its owner


def _run(config: ServersChaosConfig, tmp_path: Path, announce: Callable[..., None]) -> None:
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    announce(f"chaos: seed={config.seed} ops={config.ops} servers={config.servers}; "
             f"replay: {config.replay}")  # fmt: skip
    with postgres_database() as db_url:
        report = run_chaos_servers(config, tmp_path, db_url, say=announce)
    announce(f"{report.headline()} (servers={config.servers})", keep=True)
    assert report.ok, report.render()


# Sized for `make test`'s serial pass: 25-55 s here, of which the settle took 0-6 s in the
# runs measured (before four fixes it could take 60 s and more, or never end: a command
# reconciler resting 4x a pass that had only waited on a cut database, or dead after failing
# to read its interval; waits for commands a peer ended unannounced, or that a dead server
# left unsent, running to their 600 s deadlines). 90 s leaves room for a loaded machine.
# The leader is blackholed too: a cut inside a fenced transaction used to hold the lease row
# (FOR SHARE) until the cut healed (33 s seen, bound 10 s); PostgreSQL now ends such a session
# after half a lease idle (cluster/membership.py, bound_lease_transaction).
# In `make test` (serial pass; skipped without PostgreSQL) since the three product bugs it
# found now and then are fixed: a migrated VM's observed power left stale when its new host's
# report raced the move of its owner; a 500 instead of a 409 when two servers created a VM of
# one name at once; a VM created after its node's last full report, whose define never
# reached the host, kept observed power "unknown" (the fabric: absent). 8 seeds in a row
# passed after the last fix, in 24-45 s each.
@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.timeout(420)
def test_chaos_three_servers_short(
    chaos_seed: int, tmp_path: Path, announce: Callable[..., None]
) -> None:
    replay = (
        f"BOLLARD_CHAOS_SEED={chaos_seed}{_OPT_INS} {PYTEST} tests/chaos -k three_servers_short"
    )
    config = ServersChaosConfig(
        seed=chaos_seed,
        ops=SHORT_OPS,
        nemesis_for=25.0,
        settle_timeout=90.0,
        migrate=MIGRATE,
        migration_rate=MIGRATION_RATE,
        fencing=FENCE,
        replay=replay,
    )
    _run(config, tmp_path, announce)


@pytest.mark.chaos
@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.timeout(420 + 6 * LONG_OPS)
def test_chaos_three_servers_long(
    chaos_seed: int, tmp_path: Path, announce: Callable[..., None]
) -> None:
    replay = (
        f"BOLLARD_CHAOS_SEED={chaos_seed} BOLLARD_CHAOS_OPS={LONG_OPS}{_OPT_INS} "
        f"{PYTEST} -m chaos tests/chaos -k three_servers_long"
    )
    config = ServersChaosConfig(
        seed=chaos_seed,
        ops=LONG_OPS,
        names=8,
        kill_every=(1.5, 3.5),
        migrate=MIGRATE,
        migration_rate=MIGRATION_RATE,
        fencing=FENCE,
        replay=replay,
    )
    _run(config, tmp_path, announce)
