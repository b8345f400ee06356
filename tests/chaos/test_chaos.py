"""Chaos: random VM operations on 3 sim nodes while a seeded nemesis SIGKILLs agents and the
server; once the faults stop and the cluster settles, every command is terminal, every VM's
record agrees with the fabric, no command ran twice and no VM is on two hosts.

The seed is printed at the start and in every failure. Replay a run with
``BOLLARD_CHAOS_SEED=<seed>`` (it fixes the operations and the nemesis's schedule; the exact
interleaving still depends on timing). The short run is part of `make test`; the long one is
`make chaos` (``BOLLARD_CHAOS_OPS``, default 200). The workload includes migrations
(``BOLLARD_CHAOS_MIGRATE=0`` leaves them out), and a watch thread checks throughout the run that
no VM runs on two hosts. Opt-in: ``BOLLARD_CHAOS_FENCE=1`` keeps the default health settings,
so agents down for 3 heartbeats get their hosts fenced (and HA VMs restarted elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosConfig, run_chaos

SHORT_OPS = 40
LONG_OPS = int(os.environ.get("BOLLARD_CHAOS_OPS", "200"))
# Migrations are part of the workload (BOLLARD_CHAOS_MIGRATE=0 leaves them out).
MIGRATE = os.environ.get("BOLLARD_CHAOS_MIGRATE", "1") not in ("", "0")
# Opt-in: default health settings, so agents down for 3 heartbeats get their hosts fenced.
FENCE = os.environ.get("BOLLARD_CHAOS_FENCE", "") not in ("", "0")
PYTEST = ".venv/bin/python -m pytest -q -p no:cacheprovider"
_OPT_INS = ("" if MIGRATE else " BOLLARD_CHAOS_MIGRATE=0") + (
    " BOLLARD_CHAOS_FENCE=1" if FENCE else ""
)


def _run(config: ChaosConfig, tmp_path: Path, announce: Callable[..., None]) -> None:
    announce(f"chaos: seed={config.seed} ops={config.ops}; replay: {config.replay}")
    report = run_chaos(config, tmp_path, say=announce)
    announce(report.headline(), keep=True)
    assert report.ok, report.render()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_chaos_short(chaos_seed: int, tmp_path: Path, announce: Callable[..., None]) -> None:
    replay = f"BOLLARD_CHAOS_SEED={chaos_seed}{_OPT_INS} {PYTEST} tests/chaos -k test_chaos_short"
    config = ChaosConfig(
        seed=chaos_seed,
        ops=SHORT_OPS,
        nemesis_for=25.0,  # bounds the run's time when the server is down a lot
        settle_timeout=90.0,
        migrate=MIGRATE,
        fencing=FENCE,
        replay=replay,
    )
    _run(config, tmp_path, announce)


@pytest.mark.chaos
@pytest.mark.e2e
@pytest.mark.timeout(300 + 6 * LONG_OPS)
def test_chaos_long(chaos_seed: int, tmp_path: Path, announce: Callable[..., None]) -> None:
    replay = f"BOLLARD_CHAOS_SEED={chaos_seed} BOLLARD_CHAOS_OPS={LONG_OPS}{_OPT_INS} make chaos"
    config = ChaosConfig(
        seed=chaos_seed,
        ops=LONG_OPS,
        names=8,
        kill_every=(1.5, 3.5),
        migrate=MIGRATE,
        fencing=FENCE,
        replay=replay,
    )
    _run(config, tmp_path, announce)
