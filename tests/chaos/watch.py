"""The continuous invariant: no VM runs on two hosts, at any moment of a chaos run.

A thread reads the whole fabric under its lock (one consistent snapshot) every few
milliseconds for as long as the run lasts and records every VM it sees running on more
than one host, with when it saw it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bollard.sim.fabric import Fabric


class TwoHostWatch:
    def __init__(self, fabric_dir: Path, every: float = 0.02) -> None:
        self.fabric_dir = fabric_dir
        self.every = every
        self.reads = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="two-host-watch", daemon=True)
        self._start = 0.0

    def start(self) -> None:
        self._start = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        fabric = Fabric(self.fabric_dir)
        while not self._stop.wait(self.every):
            if not fabric.hosts_dir.exists():
                continue
            running: dict[str, list[str]] = {}
            for node, vms in fabric.snapshot().items():
                for vm in vms:
                    if vm.power == "running":
                        running.setdefault(f"{vm.name} ({vm.uuid})", []).append(node)
            self.reads += 1
            at = time.monotonic() - self._start
            self.violations += [
                f"{at:7.2f}s {name} running on {', '.join(sorted(hosts))}"
                for name, hosts in running.items()
                if len(hosts) > 1
            ]
