"""The host inventory and its order-independent digest (bollard.domain.inventory)."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from bollard.domain.inventory import Delta, Inventory, entry_hash, format_digest
from bollard.domain.protocol import VmReport
from bollard.domain.states import PowerState

HOST_POWERS = [PowerState.RUNNING, PowerState.STOPPED, PowerState.PAUSED, PowerState.CRASHED]


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def report(
    n: int,
    *,
    name: str | None = None,
    power: PowerState = PowerState.RUNNING,
    vcpus: int = 2,
    memory_mb: int = 1024,
    epoch: int = 0,
) -> VmReport:
    return VmReport(
        uuid=uid(n),
        name=name if name is not None else f"vm-{n}",
        power=power,
        vcpus=vcpus,
        memory_mb=memory_mb,
        epoch=epoch,
    )


def random_report(rng: random.Random, n: int) -> VmReport:
    return report(
        n,
        name=rng.choice([f"vm-{n}", f"web-{n}", f"db-{n}"]),
        power=rng.choice(HOST_POWERS),
        vcpus=rng.choice([1, 2, 4, 8]),
        memory_mb=rng.choice([512, 1024, 2048, 4096]),
        epoch=rng.randrange(4),
    )


def hashes(reports: Iterable[VmReport]) -> dict[str, int]:
    return {r.uuid: entry_hash(r) for r in reports}


# digest basics


def test_empty_inventory() -> None:
    inv = Inventory()
    assert inv.digest == "0000000000000000"
    assert len(inv) == 0
    assert inv.entries() == {}
    assert inv.hash_of(uid(1)) is None
    assert uid(1) not in inv


def test_format_digest_is_16_hex_digits() -> None:
    assert format_digest(0) == "0000000000000000"
    assert format_digest(255) == "00000000000000ff"
    assert format_digest((1 << 64) - 1) == "ffffffffffffffff"


def test_entry_hash_is_64_bit_and_deterministic() -> None:
    a = report(1)
    h = entry_hash(a)
    assert 0 <= h < 1 << 64
    assert entry_hash(report(1)) == h  # equal content, other object
    assert entry_hash(report(2)) != h


def test_single_entry_digest_is_its_hash() -> None:
    a = report(1)
    assert Inventory([a]).digest == format_digest(entry_hash(a))


def test_digest_is_sum_of_entry_hashes_mod_2_64() -> None:
    reports = [report(n, vcpus=n % 5 + 1) for n in range(50)]
    expected = sum(entry_hash(r) for r in reports) % (1 << 64)
    assert Inventory(reports).digest == format_digest(expected)


def test_digest_is_order_independent() -> None:
    reports = [report(n, power=HOST_POWERS[n % 4], epoch=n % 3) for n in range(20)]
    digest = Inventory(reports).digest
    rng = random.Random(1)
    for _ in range(20):
        shuffled = reports[:]
        rng.shuffle(shuffled)
        assert Inventory(shuffled).digest == digest
    assert Inventory(reversed(reports)).digest == digest


def test_digest_is_order_independent_when_built_incrementally() -> None:
    reports = [report(n) for n in range(10)]
    forward = Inventory()
    for r in reports:
        forward.apply(Delta(changed=[r]))
    backward = Inventory()
    for r in reversed(reports):
        backward.apply(Delta(changed=[r]))
    assert forward.digest == backward.digest == Inventory(reports).digest


@pytest.mark.parametrize(
    "changes",
    [
        {"power": PowerState.STOPPED},
        {"power": PowerState.PAUSED},
        {"power": PowerState.CRASHED},
        {"vcpus": 3},
        {"memory_mb": 2048},
        {"epoch": 1},
        {"name": "renamed"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_field_change_changes_the_digest(changes: dict[str, object]) -> None:
    base = report(1)
    changed = base.model_copy(update=changes)
    assert changed != base
    assert entry_hash(changed) != entry_hash(base)
    others = [report(n) for n in range(2, 6)]
    assert Inventory([base, *others]).digest != Inventory([changed, *others]).digest


def test_uuid_change_changes_the_digest() -> None:
    assert Inventory([report(1)]).digest != Inventory([report(2, name="vm-1")]).digest


def test_duplicate_uuid_in_constructor_keeps_the_last() -> None:
    first = report(1, power=PowerState.STOPPED)
    last = report(1, power=PowerState.RUNNING)
    inv = Inventory([first, last])
    assert len(inv) == 1
    assert inv.hash_of(uid(1)) == entry_hash(last)
    assert inv.digest == Inventory([last]).digest


def test_container_protocol() -> None:
    a, b = report(1), report(2)
    inv = Inventory([a, b])
    assert len(inv) == 2
    assert uid(1) in inv and uid(2) in inv
    assert uid(3) not in inv
    assert 42 not in inv
    assert inv.hash_of(uid(2)) == entry_hash(b)
    assert sorted(inv.entries()) == [uid(1), uid(2)]


def test_entries_returns_a_copy() -> None:
    inv = Inventory([report(1)])
    listed = inv.entries()
    listed.clear()
    assert len(inv) == 1


# Delta


def test_delta_truthiness() -> None:
    assert not Delta()
    assert Delta(changed=[report(1)])
    assert Delta(gone=[uid(1)])
    assert Delta(changed=[report(1)], gone=[uid(2)])


def test_delta_defaults_are_not_shared() -> None:
    a, b = Delta(), Delta()
    a.changed.append(report(1))
    a.gone.append(uid(1))
    assert b.changed == [] and b.gone == []


# diff


def test_diff_of_identical_is_empty() -> None:
    reports = [report(n) for n in range(5)]
    inv = Inventory(reports)
    delta = inv.diff([report(n) for n in range(5)])
    assert not delta
    assert delta.changed == [] and delta.gone == []


def test_diff_reports_new_changed_and_gone() -> None:
    inv = Inventory([report(1), report(2), report(3)])
    current = [report(1), report(2, power=PowerState.STOPPED), report(4)]
    delta = inv.diff(current)
    assert delta.changed == [report(2, power=PowerState.STOPPED), report(4)]
    assert delta.gone == [uid(3)]


def test_diff_does_not_modify_the_inventory() -> None:
    inv = Inventory([report(1), report(2)])
    digest = inv.digest
    inv.diff([report(3)])
    assert inv.digest == digest
    assert len(inv) == 2


def test_diff_against_empty_current_drops_everything() -> None:
    inv = Inventory([report(1), report(2)])
    delta = inv.diff([])
    assert delta.changed == []
    assert sorted(delta.gone) == [uid(1), uid(2)]


def test_diff_from_empty_inventory_adds_everything() -> None:
    current = [report(1), report(2)]
    delta = Inventory().diff(current)
    assert delta.changed == current
    assert delta.gone == []


def test_diff_accepts_a_generator() -> None:
    inv = Inventory([report(1)])
    delta = inv.diff(report(n) for n in (1, 2))
    assert delta.changed == [report(2)]
    assert delta.gone == []


# apply


def test_diff_apply_round_trip() -> None:
    inv = Inventory([report(1), report(2), report(3, power=PowerState.STOPPED)])
    current = [
        report(1),
        report(3, power=PowerState.RUNNING, epoch=2),
        report(5, vcpus=8),
    ]
    inv.apply(inv.diff(current))
    assert inv.digest == Inventory(current).digest
    assert inv.entries() == hashes(current)
    assert not inv.diff(current)


def test_apply_returns_only_real_changes() -> None:
    inv = Inventory([report(1), report(2)])
    delta = Delta(
        changed=[report(1), report(2, vcpus=4), report(3)],
        gone=[uid(9), uid(1)],
    )
    applied = inv.apply(delta)
    assert applied.changed == [report(2, vcpus=4), report(3)]
    assert applied.gone == [uid(1)]
    assert inv.digest == Inventory([report(2, vcpus=4), report(3)]).digest


def test_apply_is_idempotent() -> None:
    inv = Inventory([report(1), report(2)])
    delta = Delta(changed=[report(2, power=PowerState.PAUSED), report(3)], gone=[uid(1)])
    first = inv.apply(delta)
    assert first
    digest = inv.digest
    second = inv.apply(delta)
    assert not second
    assert second.changed == [] and second.gone == []
    assert inv.digest == digest


def test_apply_gone_of_unknown_uuids_is_ignored() -> None:
    inv = Inventory([report(1)])
    digest = inv.digest
    applied = inv.apply(Delta(gone=[uid(7), uid(8)]))
    assert not applied
    assert inv.digest == digest
    assert len(inv) == 1


def test_apply_empty_delta() -> None:
    inv = Inventory([report(1)])
    digest = inv.digest
    assert not inv.apply(Delta())
    assert inv.digest == digest


def test_apply_to_empty_back_to_zero() -> None:
    inv = Inventory()
    inv.apply(Delta(changed=[report(n) for n in range(10)]))
    assert inv.digest != "0000000000000000"
    inv.apply(Delta(gone=[uid(n) for n in range(10)]))
    assert inv.digest == "0000000000000000"
    assert len(inv) == 0


def test_apply_changed_then_gone_same_uuid() -> None:
    # changed entries are applied before gone ones: the uuid ends up absent
    inv = Inventory([report(1)])
    applied = inv.apply(Delta(changed=[report(2)], gone=[uid(2)]))
    assert uid(2) not in inv
    assert applied.changed == [report(2)]
    assert applied.gone == [uid(2)]
    assert inv.digest == Inventory([report(1)]).digest


def test_apply_replacing_an_entry_subtracts_the_old_hash() -> None:
    old = report(1, power=PowerState.RUNNING)
    new = report(1, power=PowerState.STOPPED)
    inv = Inventory([old])
    inv.apply(Delta(changed=[new]))
    assert inv.digest == format_digest(entry_hash(new))
    assert inv.hash_of(uid(1)) == entry_hash(new)


# replace


def test_replace_returns_what_changed() -> None:
    inv = Inventory([report(1), report(2), report(3)])
    current = [report(1), report(2, epoch=1), report(4)]
    changed = inv.replace(current)
    assert changed.changed == [report(2, epoch=1), report(4)]
    assert changed.gone == [uid(3)]
    assert inv.digest == Inventory(current).digest
    assert len(inv) == 3


def test_replace_with_the_same_reports_changes_nothing() -> None:
    reports = [report(n) for n in range(4)]
    inv = Inventory(reports)
    assert not inv.replace(reversed(reports))
    assert inv.digest == Inventory(reports).digest


def test_replace_with_nothing_empties() -> None:
    inv = Inventory([report(1), report(2)])
    changed = inv.replace([])
    assert sorted(changed.gone) == [uid(1), uid(2)]
    assert inv.digest == "0000000000000000"


def test_replace_accepts_a_generator() -> None:
    inv = Inventory([report(1)])
    changed = inv.replace(report(n) for n in (2, 3))
    assert changed.changed == [report(2), report(3)]
    assert changed.gone == [uid(1)]
    assert inv.digest == Inventory([report(2), report(3)]).digest


# randomized


def _mutate(rng: random.Random, state: dict[str, VmReport], next_id: list[int]) -> None:
    """One random change to the host's VMs: add, remove, or change a field."""
    op = rng.random()
    if op < 0.3 or not state:
        n = next_id[0]
        next_id[0] += 1
        r = random_report(rng, n)
        state[r.uuid] = r
    elif op < 0.5:
        del state[rng.choice(sorted(state))]
    else:
        uuid = rng.choice(sorted(state))
        field = rng.choice(["power", "vcpus", "memory_mb", "epoch", "name"])
        values: dict[str, list[object]] = {
            "power": list(HOST_POWERS),
            "vcpus": [1, 2, 4, 8],
            "memory_mb": [512, 1024, 2048, 4096],
            "epoch": [0, 1, 2, 3, 4],
            "name": ["a", "b", "c"],
        }
        state[uuid] = state[uuid].model_copy(update={field: rng.choice(values[field])})


@pytest.mark.parametrize("seed", range(25))
def test_incremental_digest_matches_fresh_inventory(seed: int) -> None:
    rng = random.Random(seed)
    state: dict[str, VmReport] = {}
    next_id = [0]
    host = Inventory()  # updated with diff/apply, like the agent
    server = Inventory()  # updated with the deltas only, like the server
    for _ in range(200):
        for _ in range(rng.randrange(4)):
            _mutate(rng, state, next_id)
        current = list(state.values())
        rng.shuffle(current)
        delta = host.diff(current)
        applied = host.apply(delta)
        # diff only lists real changes, so applying it changes exactly that
        assert applied.changed == delta.changed
        assert applied.gone == delta.gone
        # randomly resend a delta (idempotent) or lose order within it
        changed, gone = delta.changed[:], delta.gone[:]
        rng.shuffle(changed)
        rng.shuffle(gone)
        server.apply(Delta(changed=changed, gone=gone))
        if rng.random() < 0.2:
            assert not server.apply(Delta(changed=changed, gone=gone))
        fresh = Inventory(current).digest
        assert host.digest == fresh
        assert server.digest == fresh
        assert len(host) == len(server) == len(state)
        if rng.random() < 0.1:
            replaced = Inventory(rng.sample(current, len(current) // 2))
            replaced.replace(current)
            assert replaced.digest == fresh


@pytest.mark.parametrize("seed", range(10))
def test_random_apply_sequences_match_fresh_inventory(seed: int) -> None:
    """Arbitrary deltas (with no-ops, unknown gone uuids, repeats) keep the digest right."""
    rng = random.Random(1000 + seed)
    inv = Inventory()
    model: dict[str, VmReport] = {}
    for _ in range(300):
        changed = [random_report(rng, rng.randrange(30)) for _ in range(rng.randrange(5))]
        gone = [uid(rng.randrange(30)) for _ in range(rng.randrange(4))]
        expected_changed = []
        for r in changed:
            if model.get(r.uuid) != r:
                expected_changed.append(r)
            model[r.uuid] = r
        expected_gone = []
        for u in gone:
            if model.pop(u, None) is not None:
                expected_gone.append(u)
        applied = inv.apply(Delta(changed=changed, gone=gone))
        assert applied.changed == expected_changed
        assert applied.gone == expected_gone
        assert inv.digest == Inventory(model.values()).digest
        assert inv.entries() == hashes(model.values())
