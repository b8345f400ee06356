"""Several servers on one database: each `bollard server` process's row (its membership
lease), the named leases with a fencing token (the leader's), and the messages servers
leave each other in the database."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ServerState(StrEnum):
    UP = "up"  # running, renewing its row
    STOPPED = "stopped"  # left cleanly
    GONE = "gone"  # its row expired and a peer found it so: taken for dead


class ServerRecord(BaseModel):
    """A server process, under an id of its own for each start. `expires_at` is its
    membership lease, renewed every third of its time to live; `stopped_at` is when it left
    or was found gone."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str  # default hostname:port
    url: str  # the address agents and clients use
    version: str
    protocols: list[int]  # the agent protocol versions it speaks
    schema_revision: str
    pid: int
    started_at: datetime
    renewed_at: datetime
    expires_at: datetime
    stopped_at: datetime | None
    state: ServerState


class Lease(BaseModel):
    """A named lease. `token` is its fencing token: it grows each time the lease is taken
    anew (another holder, or the lease had expired) and stays the same while renewed."""

    model_config = ConfigDict(frozen=True)

    name: str
    holder: str
    token: int
    expires_at: datetime
    acquired_at: datetime | None  # when its holder took it (None: taken by `acquire`)


class RelayMessage(BaseModel):
    """A message from one server to another, kept in the database until the addressee takes
    it."""

    model_config = ConfigDict(frozen=True)

    id: int
    to_server: str
    from_server: str
    node: str
    kind: str
    body: str
    created_at: datetime
