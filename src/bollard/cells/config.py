"""The API server's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

API_DB_FILE = "bollard-api.db"


@dataclass
class ApiConfig:
    data_dir: Path
    db_url: str
    host: str = "127.0.0.1"
    port: int = 8700
    # Each call to a cell (a routed call, or one cell's part of a gathered list) gets this long.
    cell_deadline: float = 5.0
    # How often the API server checks every cell and learns its nodes and VMs.
    discover_interval: float = 10.0
    # How long a step of a move between cells waits for a cell that does not answer before
    # the move rolls back.
    move_cell_wait: float = 120.0
    max_body_bytes: int = 1024 * 1024
    access_log: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    novnc_dir: Path | None = None


def default_api_db_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / API_DB_FILE).resolve()}"
