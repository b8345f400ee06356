"""The server's garbage collector: settings for a process with a large, long-lived heap, and
the pauses it makes, measured.

CPython's cyclic collector walks every tracked object of the generations it collects, and
nothing else runs meanwhile. At 2,500 agent sessions the server holds about half a million
such objects (each session's WebSocket, its tasks and their coroutines), and a full
collection took 450-600 ms: that pause was the heartbeats' p99 at 2,500 hosts (fix #11 in
docs/performance.md). Full collections come once enough objects have survived the young
ones; at 500 heartbeats a second the objects of heartbeats in flight survived them all the
time, and a full collection came every few seconds. So:

- young collections run every `YOUNG_THRESHOLD` allocations instead of every 700: the
  objects of a heartbeat or a request are freed by reference counting before a collection
  sees them, so few are promoted and full collections become rare;
- `freeze()` at start moves what exists once the server is assembled (modules, the app,
  its routes) out of the collector's sight for good: it lives as long as the process.

`GcPauses` measures every collection (``bollard_gc_pause_seconds`` by generation, on
``/metrics``). Its callback takes no lock: a collection can start anywhere, also inside a
metric's own lock, so it only adds to plain counters that a collector reads at scrape time.
"""

from __future__ import annotations

import bisect
import gc
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from bollard.server.clock import Clock

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
MIDDLE_THRESHOLD = 20  # young collections between middle ones (default 10)
OLD_THRESHOLD = 10  # middle collections between full ones (default 10; see gc docs)

PAUSE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def tune() -> None:
    """Apply the thresholds and freeze what exists now (call once the server is built)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


class GcPauses(Collector):
    """Every collection's duration by generation, as a Prometheus histogram."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started = 0.0
        # Per generation: the count in each bucket (the last one: above every bound), sum.
        self._counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock.monotonic()
            return
        took = self._clock.monotonic() - self._started
        generation = int(info["generation"])
        self._counts[generation][bisect.bisect_left(PAUSE_BUCKETS, took)] += 1
        self._sums[generation] += took

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "bollard_gc_pause_seconds",
            "Garbage collections of the server process (nothing else runs meanwhile).",
            labels=["generation"],
        )
        for generation in range(3):
            counts, running = list(self._counts[generation]), 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*PAUSE_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
