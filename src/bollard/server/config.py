"""Server configuration."""

from __future__ import annotations

import socket
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
    # Request bodies over this many bytes are refused (413) before they are read.
    max_body_bytes: int = 1024 * 1024
    # The API access log (rotated at 10 MiB, 5 kept); None: <data_dir>/access.log.
    access_log: Path | None = None
    # TLS: with a certificate and key the API and the agent gateway are served over
    # HTTPS/WSS; with a client CA too, every client (agents, CLI) must present a
    # certificate signed by it. None: plain HTTP (a warning is logged).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Where noVNC is (its core/rfb.js), served at /ui/novnc for the console's graphical
    # console; None: BOLLARD_NOVNC_DIR, <prefix>/share/bollard/novnc, /usr/share/novnc.
    novnc_dir: Path | None = None
    # This server among the servers of its database (table `servers`): its name, unique
    # among them (None: this host's name and the port), and the address agents and clients
    # use to reach it (None: the scheme, listen address and port; this host's name when it
    # listens on every address).
    name: str | None = None
    advertise_url: str | None = None
    # Seconds a server's membership (and the leader's lease) lives without a renewal; each
    # is renewed every third of it.
    lease_ttl: float = 15.0

    def server_name(self) -> str:
        return self.name or f"{socket.gethostname()}:{self.port}"

    def public_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        scheme = "https" if self.tls_cert is not None else "http"
        host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"
