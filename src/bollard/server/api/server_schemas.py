"""Bodies of /api/v1/servers and of the `servers` counts in /api/v1/status: the management
servers sharing the cluster's database (domain/servers.py), which of them leads, and how
many agents each holds."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["leader", "member", "-"]
Shown = Literal["up", "stopped", "gone", "expired"]  # a ServerState, or "expired"

STATE = (
    "up: running, its membership lease renewed; stopped: it stopped cleanly; gone: its lease "
    "ran out and a peer took it for dead; expired: its row still says up but its lease ran "
    "out (it is taken for dead; a peer marks it gone)."
)
ROLE = (
    "leader: it holds the leader lease (cluster-wide duties run there); member: up, not the "
    "leader; `-`: not up (stopped, gone or expired)."
)


class ServerOut(BaseModel):
    id: str = Field(description="The server's id: a new one at every start of the process.")
    name: str = Field(description="Its name (by default `host:port`).")
    url: str = Field(description="The address agents and clients reach it at.")
    version: str = Field(description="The Bollard version it runs.")
    schema_revision: str = Field(
        description="The newest database schema revision its release knows: during a rolling "
        "upgrade, the servers of the older release show the older one."
    )
    protocols: list[int] = Field(description="The agent protocol versions it speaks.")
    state: Shown = Field(description=STATE)
    started_at: datetime
    renewed_at: datetime = Field(description="When it last renewed its membership lease.")
    expires_at: datetime = Field(description="When its membership lease runs out.")
    stopped_at: datetime | None
    role: Role = Field(description=ROLE)
    agents: int = Field(description="Connected agents whose session is on this server.")
    this: bool = Field(description="True for the server that answered this request.")


class ServerList(BaseModel):
    items: list[ServerOut] = Field(
        description="Servers that are up (by start time), then those that stopped or died "
        "in the last hour (the last heard of first)."
    )
    leader: str | None = Field(
        description="The id of the server holding the leader lease (null: none holds it now)."
    )


class ServerCounts(BaseModel):
    """The `servers` part of /api/v1/status."""

    total: int = Field(description="Servers listed by `GET /servers` (recently stopped too).")
    up: int = Field(description="Servers up with a live membership lease.")
    leader: str | None = Field(description="The leader's name (null: no leader now).")
