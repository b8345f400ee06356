from __future__ import annotations

import pytest

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.settings import REGISTRY, lookup


def test_issue_defaults() -> None:
    assert {k: s.default for k, s in REGISTRY.items()} == {
        "reconcile.commands.enabled": True,
        "reconcile.commands.interval": 10.0,
        "reconcile.commands.max.attempts": 30,
        "reconcile.commands.workers": 16,
        "scheduler.selector": "mem",
        "scheduler.vcpu_allocation_ratio": 1.0,
        "migration.timeout": 600.0,
        "health.dead_after": 3,
        "health.startup_grace": 10.0,
        "fencing.enabled": True,
        "fencing.timeout": 30.0,
        "cluster.maintenance": False,
        # issue 6: orphans and stale VMs are only reported unless the operator opts in;
        # pending tasks and power state are fixed automatically.
        "reconcile.auto.stale": "report",
        "reconcile.auto.orphan": "report",
        "reconcile.auto.power": "fix",
        "reconcile.auto.spec": "report",
        "reconcile.auto.pending": "fix",
        "reconcile.auto.lost": "report",
        "reconcile.state.interval": 5.0,
        "reconcile.restart_budget": 3,
        "reconcile.restart_window": 3600.0,
    }


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("reconcile.commands.enabled", "false", False),
        ("reconcile.commands.enabled", "ON", True),
        ("reconcile.commands.enabled", True, True),
        ("reconcile.commands.interval", "2.5", 2.5),
        ("reconcile.commands.max.attempts", "7", 7),
        ("reconcile.commands.max.attempts", 7.0, 7),
        ("reconcile.commands.workers", 1, 1),
    ],
)
def test_parse(key: str, raw: object, value: object) -> None:
    parsed = lookup(key).parse(raw)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("reconcile.commands.enabled", "maybe", "not a valid bool"),
        ("reconcile.commands.interval", "soon", "not a valid float"),
        ("reconcile.commands.interval", "0", r"at least 0\.1"),
        ("reconcile.commands.max.attempts", "2.5", "not a valid int"),
        ("reconcile.commands.max.attempts", True, "not a valid int"),
        ("reconcile.commands.workers", "0", "at least 1"),
        ("scheduler.selector", "random", "must be one of mem, memprov"),
    ],
)
def test_bad_values_are_refused(key: str, raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        lookup(key).parse(raw)


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match=r"reconcile\.commands\.interval"):
        lookup("no.such.key")


def test_dump_round_trips() -> None:
    for setting in REGISTRY.values():
        assert setting.parse(setting.dump(setting.default)) == setting.default
