"""What the cells benchmark measures (bench/cells.py): CPU and RSS of its processes,
sampled every second, the machine's busy cores, and request latencies."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    ServerProcess,
    histogram,
    histogram_count,
    histogram_quantile,
    percentile,
    process_cpu_seconds,
    process_rss_mb,
    scrape,
    stats,
)
from cells_world import VMS_PER_NODE, ApiProcess, Cell


class Sampler:
    """CPU and RSS of processes, sampled every second in a thread of its own."""

    INTERVAL = 1.0

    def __init__(self, procs: dict[str, ServerProcess], fleets: dict[str, int]) -> None:
        self.procs, self.fleets = procs, fleets
        self.samples: list[tuple[float, dict[str, tuple[float, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _take(self) -> None:
        taken: dict[str, tuple[float, float]] = {}
        for name, proc in self.procs.items():
            rss = proc.rss_mb() + (0.0 if isinstance(proc, ApiProcess) else proc.children_rss_mb())
            taken[name] = (proc.cpu_seconds(), rss)
        for name, pid in self.fleets.items():
            taken[name] = (process_cpu_seconds(pid), process_rss_mb(pid))
        self.samples.append((time.monotonic(), taken))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.INTERVAL)  # the sampling interval

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def result(self) -> dict[str, dict[str, Any]]:
        first, last = self.samples[0], self.samples[-1]
        wall = last[0] - first[0]
        found: dict[str, dict[str, Any]] = {}
        for name in [*self.procs, *self.fleets]:
            steps = [
                (b[1][name][0] - a[1][name][0]) / (b[0] - a[0])
                for a, b in zip(self.samples, self.samples[1:], strict=False)
                if b[0] > a[0]
            ]
            found[name] = {
                "cpu_cores": round((last[1][name][0] - first[1][name][0]) / wall, 3),
                "cpu_cores_peak_1s": round(max(steps, default=0.0), 3),
                "rss_mb_max": max(s[1][name][1] for s in self.samples),
                "rss_mb_start_end": [first[1][name][1], last[1][name][1]],
            }
        return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def watch(procs: dict[str, ServerProcess], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # the measurement window; the processes are watched
        for proc in procs.values():
            proc.alive()
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def fleet_pids(cells_: list[Cell]) -> dict[str, int]:
    return {f"fleet{c.name[4:]}": c.fleet.proc.pid for c in cells_ if c.fleet is not None}


def steady(cells_: list[Cell], procs: dict[str, ServerProcess], window: float) -> dict[str, Any]:
    servers = [c.server for c in cells_ if c.server is not None]
    before = [histogram(scrape(s), "bollard_heartbeat_seconds") for s in servers]
    busy0, load0 = machine_busy(), os.getloadavg()
    with Sampler(procs, fleet_pids(cells_)) as sampler:
        watch(procs, window)
    busy1 = machine_busy()
    after = [histogram(scrape(s), "bollard_heartbeat_seconds") for s in servers]
    found: dict[str, Any] = {"window_seconds": window, "processes": sampler.result()}
    for cell, b, a in zip(cells_, before, after, strict=True):
        p50, p99 = histogram_quantile(b, a, 0.5), histogram_quantile(b, a, 0.99)
        found["processes"][cell.name] |= {
            "heartbeats_per_second": round(histogram_count(b, a) / window, 1),
            "heartbeat_p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "heartbeat_p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }
    cpus = os.cpu_count() or 1
    share = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
    found["machine_busy_cores"] = round(share * cpus, 2)
    found["load_average_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    return found


def latencies(values: list[float]) -> dict[str, float]:
    return stats(values, 1000, 2) | {"p99": percentile(values, 0.99, 1000)}


def walk(client: httpx.Client, path: str, requests: int) -> tuple[list[float], dict[str, int]]:
    """``requests`` pages of ``path`` (limit 100), from the start again at the end."""
    times, seen = [], {"pages": 0, "pages_with_unreachable": 0, "total": 0}
    cursor = None
    for _ in range(requests):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        page = client.get(path, params=params).raise_for_status().json()
        times.append(time.perf_counter() - started)
        seen["pages"] += 1
        seen["pages_with_unreachable"] += bool(page.get("unreachable"))
        seen["total"] = page["total"]
        cursor = page.get("next_cursor")
    return times, seen


def shows(client: httpx.Client, names: list[str]) -> list[float]:
    times = []
    for name in names:
        started = time.perf_counter()
        client.get(f"/vms/{name}").raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def api_load(
    api: ApiProcess, cells_: list[Cell], procs: dict[str, ServerProcess], requests: int
) -> dict[str, Any]:
    rng = random.Random(len(cells_) * cells_[0].hosts)
    names = [
        f"c{rng.randint(1, len(cells_))}-n{rng.randint(1, cells_[0].hosts):04d}"
        f"-vm{rng.randint(1, VMS_PER_NODE):03d}"
        for _ in range(requests)
    ]
    busy0 = machine_busy()
    with Sampler(procs, fleet_pids(cells_)) as sampler:
        started = time.monotonic()
        list_times, list_seen = walk(api.client, "/vms", requests)
        show_times = shows(api.client, names)
        node_times, node_seen = walk(api.client, "/nodes", requests)
        wall = time.monotonic() - started
    busy1 = machine_busy()
    share = (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
    first = cells_[0].server
    assert first is not None
    own = [n for n in names if n.startswith(f"{cells_[0].prefix}-")] or [
        f"{cells_[0].prefix}-n0001-vm001"
    ]
    direct_list, _ = walk(first.client, "/vms", requests)
    direct_show = shows(first.client, [own[i % len(own)] for i in range(requests)])
    return {
        "requests": requests,
        "seconds": round(wall, 1),
        "list_page_ms": latencies(list_times) | list_seen,
        "show_ms": latencies(show_times),
        "nodes_page_ms": latencies(node_times) | node_seen,
        "processes_meanwhile": sampler.result(),
        "machine_busy_cores_meanwhile": round(share * (os.cpu_count() or 1), 2),
        "direct_to_cell1": {
            "list_page_ms": latencies(direct_list),
            "show_ms": latencies(direct_show),
        },
    }
