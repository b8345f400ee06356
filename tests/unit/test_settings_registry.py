from __future__ import annotations

import pytest

from bollard.domain.errors import InvalidInput, NotFound
from bollard.domain.settings import REGISTRY, Setting, lookup


def test_issue_defaults() -> None:
    assert {k: s.default for k, s in REGISTRY.items()} == {
        "reconcile.commands.enabled": True,
        "reconcile.commands.interval": 10.0,
        "reconcile.commands.max.attempts": 30,
        "reconcile.commands.workers": 16,
        "scheduler.selector": "mem",
        "scheduler.vcpu_allocation_ratio": 1.0,
        "scheduler.cross_cell_weight_multiplier": 1_000_000.0,
        "policy.vm_resize_cross_cell": "nobody",
        "policy.vm_migrate_cross_cell": "nobody",
        "migration.timeout": 600.0,
        "health.dead_after": 3,
        "health.startup_grace": 10.0,
        "fencing.enabled": True,
        "fencing.timeout": 30.0,
        "cluster.maintenance": False,
        # issue 21: idle nodes are not fenced; a host that reads off is fenced at once; one
        # restart and one relocation (Proxmox's defaults); freeze on reboot, failover on
        # power-off.
        "fencing.idle_nodes": False,
        "fencing.fast": True,
        "ha.max_restart": 1,
        "ha.max_relocate": 1,
        "ha.shutdown_policy": "conditional",
        "ha.failback_interval": 10.0,
        # issue 6: orphans and stale VMs are only reported unless the operator opts in;
        # pending tasks and power state are fixed automatically.
        "reconcile.auto.stale": "report",
        "reconcile.auto.orphan": "report",
        "reconcile.auto.power": "fix",
        "reconcile.auto.spec": "report",
        "reconcile.auto.pending": "fix",
        "reconcile.auto.lost": "report",
        "reconcile.auto.resize": "fix",
        "reconcile.state.interval": 5.0,
        "reconcile.restart_budget": 3,
        "reconcile.restart_window": 3600.0,
        # issue 18: a volume whose file is gone is reported; leftovers of copies are removed,
        # other stray files reported; stuck states and sizes follow the hosts.
        "reconcile.auto.volume-missing": "report",
        "reconcile.auto.volume-orphan": "partial",
        "reconcile.auto.volume-stuck": "fix",
        "reconcile.auto.volume-size": "fix",
        "reconcile.storage.interval": 30.0,
        # issue 22: SR-IOV holders against the hosts' users are reported; fixes on request.
        "reconcile.auto.vf-unrecorded": "report",
        "reconcile.auto.vf-conflict": "report",
        "reconcile.auto.vf-mismatch": "report",
        "reconcile.auto.vf-leaked": "report",
        # issue 19: a resize moves the VM unless allowed to stay; nothing confirms by itself.
        "resize.allow_same_node": False,
        "resize.confirm_window": 0.0,
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
        ("reconcile.commands.enabled", "maybe", "maybe is not allowed; give true or false"),
        ("reconcile.commands.enabled", 2, "2 is not allowed; give true or false"),
        ("reconcile.commands.interval", "soon", "give a number from 0.1 to 3600"),
        ("reconcile.commands.interval", "0", r"0 is not allowed; give a number from 0\.1 to 3600"),
        ("reconcile.commands.max.attempts", "2.5", "give a whole number from 1 to 10000"),
        ("reconcile.commands.max.attempts", True, "True is not allowed"),
        ("reconcile.commands.workers", "0", "give a whole number from 1 to 1024"),
        ("scheduler.selector", "random", "give one of mem, memprov"),
        ("scheduler.selector", 1, "1 is not allowed; give one of mem"),
        ("reconcile.restart_budget", "-1", "-1 is not allowed; give a whole number from 0 to 1000"),
    ],
)
def test_bad_values_are_refused(key: str, raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        lookup(key).parse(raw)
    assert refused.value.message.startswith(f"{key}: ")
    assert "\n" not in refused.value.message


NOT_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", float("nan"), float("inf")]


@pytest.mark.parametrize("key", [k for k, s in REGISTRY.items() if s.type in (int, float)])
@pytest.mark.parametrize("raw", NOT_FINITE)
def test_no_number_setting_takes_nan_or_infinity(key: str, raw: object) -> None:
    with pytest.raises(InvalidInput, match=f"^{key}: .* is not allowed; give a .*number from "):
        lookup(key).parse(raw)


def test_every_number_setting_has_a_finite_range_holding_its_default() -> None:
    for setting in REGISTRY.values():
        if setting.type in (int, float):
            assert setting.minimum is not None and setting.maximum is not None, setting.key
            assert setting.minimum <= setting.default <= setting.maximum, setting.key
            low, high = setting.allowed.split(" from ")[1].split(" to ")
            assert (float(low), float(high)) == (setting.minimum, setting.maximum)


def test_a_number_setting_without_a_range_cannot_be_defined() -> None:
    with pytest.raises(ValueError, match="needs its range"):
        Setting("x.y", float, 1.0, "no range")


def test_negative_values_pass_where_the_range_allows_them() -> None:
    lenient = Setting("x.offset", float, 0.0, "may be negative", minimum=-10, maximum=10)
    assert lenient.parse("-1") == -1.0
    assert lenient.parse(-2.5) == -2.5


@pytest.mark.parametrize("raw", ["nan", "inf", "0", "banana", "-5"])
def test_a_bad_stored_value_reads_as_the_default(raw: str) -> None:
    setting = lookup("migration.timeout")
    value, problem = setting.stored(raw)
    assert value == 600.0
    assert problem is not None and problem.startswith("migration.timeout: ")


def test_a_good_stored_value_reads_as_itself() -> None:
    assert lookup("migration.timeout").stored("12.5") == (12.5, None)
    assert lookup("migration.timeout").stored(None) == (600.0, None)


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(NotFound, match=r"reconcile\.commands\.interval"):
        lookup("no.such.key")


def test_dump_round_trips() -> None:
    for setting in REGISTRY.values():
        assert setting.parse(setting.dump(setting.default)) == setting.default
