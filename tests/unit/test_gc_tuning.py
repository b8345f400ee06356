"""The server's garbage-collector settings and pause metric (server/gc_tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bollard.server.clock import SystemClock
from bollard.server.gc_tuning import (
    MIDDLE_THRESHOLD,
    OLD_THRESHOLD,
    YOUNG_THRESHOLD,
    GcPauses,
    tune,
)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in:\n{text}")


def test_tune_sets_the_thresholds_and_freezes_what_exists(restored_gc: None) -> None:
    assert gc.get_freeze_count() == 0
    tune()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    assert gc.get_freeze_count() > 1000  # at least the modules' objects


def test_every_collection_is_counted_by_generation() -> None:
    pauses = GcPauses(SystemClock())
    registry = CollectorRegistry()
    registry.register(pauses)
    pauses.install()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.uninstall()
    gc.collect(2)  # not counted: uninstalled
    text = generate_latest(registry).decode()
    name = "bollard_gc_pause_seconds_bucket"
    assert _sample(text, name, generation="2", le="+Inf") == 2
    # Automatic young collections may add to generation 0, never take away.
    assert _sample(text, name, generation="0", le="+Inf") >= 1
    assert _sample(text, "bollard_gc_pause_seconds_sum", generation="2") > 0
    # Buckets are cumulative: no bucket holds more than the next one up.
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and 'generation="2"' in line
    ]
    assert counts == sorted(counts) and counts[-1] == 2
