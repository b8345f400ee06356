"""Server configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Where the state reconciler's scans run (reconcile/scanners.py).
ScanMode = Literal["auto", "process", "thread"]
SCAN_MODES: tuple[ScanMode, ...] = ("auto", "process", "thread")


@dataclass
class ServerConfig:
    data_dir: Path
    db_url: str
    host: str = "127.0.0.1"
    port: int = 8700
    heartbeat_interval: float = 5.0
    # Default time a command may take before the server gives up waiting (TIMED_OUT).
    command_timeout: float = 60.0
    # Graceful shutdown lasts this long before the VM is forced off.
    shutdown_timeout: float = 60.0
    # Where the `sim` power driver finds the sim fabric (`bollard up` sets it).
    sim_fabric_dir: Path | None = None
    # Where the state reconciler's scans run: auto, process or thread (reconcile/scanners.py).
    reconcile_scan: ScanMode = "auto"
